"""Speed on one GPU: the 124M preset in effsweep's own training loop, by precision, and the uniform order.

1. The ``124m`` preset (GPT-2 small's shape, sequence 1024; 86M parameters with the byte-level
   vocabulary padded to 320) trained by ``train_lm`` from a ``TrialConfig``, as a trial trains, batch
   32, five ways, each adding one thing to the one before: ``fp32`` (TF32 off), ``tf32``, ``bf16``
   (autocast), ``bf16_fused`` (fused AdamW) and ``compiled`` (``torch.compile``). Ten warm-up steps,
   then thirty timed ones, read from the loop's own clock (each report's ``tokens_per_s`` covers the
   training since the report before, evaluation left out).
2. The patch phase of a K = 4 trial against token-level training, both as ``bf16_fused``.
3. The uniform order (``uniform_order``) of 1M clustered 100-d vectors (``benchmarks/selection.py``'s
   set) to k = 100k on the GPU, with TF32 turned on in the process as training leaves it, then on
   the CPU to the first 25k picks; the orders nest, so that prefix must be identical.

Keys: ``tokens_per_s``, ``mfu``, ``step_s``, ``peak_memory_gb`` are the ``compiled`` run's (per run
under ``variants``); ``mfu`` is model FLOPs (``flops_per_token``) per second over the peak of
``trainables.throughput`` (bf16 tensor cores for bf16, TF32 for fp32, so for ``fp32`` too), null
where the peak is unknown; ``peak_memory_gb`` is ``torch.cuda.max_memory_allocated``, null on a CPU;
``compile_s`` is the time of the compiled run's warm-up steps beyond as many of its steady steps,
less the same excess of ``bf16_fused``; ``patch_k4_ratio`` is tokens read per second in the patch
phase over ``bf16_fused``'s (ideally 4: a patch step reads K times the tokens for the same work),
``patch_k4_step_ratio`` the ratio of step times; ``selection_gpu_s`` times k = 100k,
``selection_gpu_s_at_cpu_k`` the same run up to the CPU's k, ``selection_passes`` its passes (each
certifies up to 1,024 picks), ``selection_speedup`` the CPU's time over the latter;
``selection_identical`` says the CPU's order and distances equal the GPU's prefix.

Data: gensim's ``head500.noblanks`` (250 stemmed Wikipedia articles, 2.3 MB), present without network.
Run: ``.venv/bin/python benchmarks/gpu.py`` (about 2 minutes on one H200); without CUDA it prints
``{"skipped": "no CUDA"}``. ``--device cpu`` runs it on the CPU, ``--smoke`` at tiny sizes, ``--corpus
PATH`` on a copy of the corpus file where gensim is not installed; ``--only-selection --vectors N
--cpu-k K`` times the uniform order alone, at other sizes. The last line printed is one JSON
object. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from selection import clustered_embeddings
from smoke import SMOKE_MODEL, add_smoke_flag

from trainables import speed
from trainables.config import MIN_STEPS, TrialConfig
from trainables.data.prepare import SweepData, prepare_sweep_data
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS, ModelConfig, count_parameters, flops_per_token
from trainables.selection.orderings import uniform_order
from trainables.throughput import device_name, peak_flops


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each part runs; the keys keep the full run's names at any sizes."""

    preset: str
    batch: int
    warmup: int  # steps before the timed ones; reports come every ``warmup`` steps
    timed: int  # a multiple of ``warmup``
    corpus: str
    vectors: int
    dim: int
    k: int
    cpu_k: int  # picks of the CPU order, compared with the GPU order's prefix


FULL = Sizes("124m", 32, 10, 30, "gensim:head500.noblanks", 1_000_000, 100, 100_000, 25_000)
SMOKE = Sizes(SMOKE_MODEL, 4, 5, 5, "gensim:lee_background", 4_000, 16, 400, 200)

# name: (precision, compile, TF32, fused AdamW); each adds one thing to the one before.
VARIANTS: dict[str, tuple[str, bool, bool, bool]] = {
    "fp32": ("fp32", False, False, False),
    "tf32": ("fp32", False, True, False),
    "bf16": ("bf16", False, True, False),
    "bf16_fused": ("bf16", False, True, True),
    "compiled": ("bf16", True, True, True),
}
PATCH_K = 4


def settings(sizes: Sizes, precision: str, compiled: bool, steps: int) -> dict[str, Any]:
    """A trial's flat settings: the preset, reports every ``warmup`` steps, compute for ``steps`` token steps."""
    seq_len = MODEL_PRESETS[sizes.preset]["seq_len"]
    return {f"model.{k}": v for k, v in MODEL_PRESETS[sizes.preset].items()} | {
        "batch_size": sizes.batch,
        "peak_lr": 6e-4,  # GPT-2 small's: no divergence to spoil the timing
        "precision": precision,
        "compile": compiled,
        "eval_every": sizes.warmup,
        "checkpoint_every": 0,
        "budget.compute": steps * sizes.batch * seq_len,
    }


def run_trial(cfg: TrialConfig, data: SweepData, device: str, tf32: bool, fused: bool) -> dict[str, Any]:
    """Train ``cfg`` with ``train_lm`` under the given TF32 and fused-AdamW switches: its reports and peak memory."""
    reports: list[dict[str, Any]] = []
    tf32_in_force: list[bool] = []

    def report(metrics: dict[str, Any]) -> None:
        reports.append(metrics)
        tf32_in_force.append(torch.backends.cuda.matmul.fp32_precision == "tf32")

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with mock.patch.object(speed, "TF32", tf32), mock.patch.object(speed, "FUSED_ADAMW", fused):
        outcome = train_lm(cfg, data, report, device=device)
    if outcome.status != "completed":
        raise SystemExit(f"the run diverged at step {outcome.steps}: its timing would mean nothing")
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
    return {"reports": reports, "peak_memory_gb": peak, "tf32_in_force": tf32_in_force[0]}


def figures(run: dict[str, Any], cfg: TrialConfig, device: str, phase: str) -> dict[str, Any]:
    """Step time, tokens/s and MFU of ``phase`` (the run's first) after its first report, from the loop's own clock.

    Each report's ``tokens_per_s`` covers the training since the report before, evaluation left out,
    so a window's tokens over its rate is its training time. The first window (``warmup_s``) holds the
    first steps' one-off costs: allocation, kernel selection, compilation.
    """
    reports = [metrics for metrics in run["reports"] if metrics["phase"] == phase]
    first, last = reports[0], reports[-1]
    seconds = sum((b["tokens"] - a["tokens"]) / b["tokens_per_s"] for a, b in itertools.pairwise(reports))
    steps = last["step"] - first["step"]
    peak = peak_flops(device, cfg.precision)
    # Work counts positions trained (``compute``), which a patch step has as many of as a token step.
    work_per_s = flops_per_token(cfg.model) * (last["compute"] - first["compute"]) / seconds
    return {
        "step_s": seconds / steps,
        "tokens_per_s": (last["tokens"] - first["tokens"]) / seconds,
        "mfu": work_per_s / peak if peak else None,
        "peak_memory_gb": run["peak_memory_gb"],
        "timed_steps": steps,
        "warmup_steps": first["step"],
        "warmup_s": first["tokens"] / first["tokens_per_s"],
        "tf32_in_force": run["tf32_in_force"],
        "train_loss": last["train_loss"],
    }


def patch_settings(sizes: Sizes) -> dict[str, Any]:
    """A patch-phase trial: ``warmup + timed`` patch steps at K = 4, then the ``MIN_STEPS`` token steps a trial needs.

    Its share of the data is what gives those steps: patch steps read K times the tokens of a token step.
    """
    patch_steps = sizes.warmup + sizes.timed
    share = patch_steps * PATCH_K / (patch_steps * PATCH_K + MIN_STEPS)
    # Half a step to spare, so that rounding cannot take a step from either phase.
    base = settings(sizes, "bf16", False, patch_steps + MIN_STEPS)
    base["budget.compute"] *= (patch_steps + MIN_STEPS + 0.5) / (patch_steps + MIN_STEPS)
    return base | {"patch.K": PATCH_K, "patch.lambda": share}


def patch_phase(sizes: Sizes, data: SweepData, device: str) -> dict[str, Any]:
    """The patch phase of a K = 4 trial in bf16 with fused AdamW, as ``bf16_fused`` trains tokens."""
    cfg = TrialConfig.from_flat(patch_settings(sizes))
    if cfg.phase_steps[0] != sizes.warmup + sizes.timed:
        raise SystemExit(f"the patch trial has {cfg.phase_steps} steps, not {sizes.warmup + sizes.timed} patch steps")
    result = figures(run_trial(cfg, data, device, tf32=True, fused=True), cfg, device, "patch")
    print(f"patch K={PATCH_K}: {result}", file=sys.stderr)
    return result


def variants(sizes: Sizes, data: SweepData, device: str) -> dict[str, dict[str, Any]]:
    """Every variant, then the patch phase; the compiled run last, so that its kernels touch no other."""
    runs: dict[str, dict[str, Any]] = {}
    for name, (precision, compiled, tf32, fused) in VARIANTS.items():
        if name == "compiled":
            runs["patch_k4"] = patch_phase(sizes, data, device)
        cfg = TrialConfig.from_flat(settings(sizes, precision, compiled, sizes.warmup + sizes.timed))
        runs[name] = figures(run_trial(cfg, data, device, tf32, fused), cfg, device, "token")
        print(f"{name}: {runs[name]}", file=sys.stderr)
    return runs


def training(sizes: Sizes, device: str) -> dict[str, Any]:
    model = ModelConfig(**MODEL_PRESETS[sizes.preset])
    # Trials read the token file in the cache folder, so the folder outlives every run.
    with tempfile.TemporaryDirectory() as cache:
        data = prepare_sweep_data(
            sizes.corpus,
            val_fraction=0.1,
            seed=0,
            seq_len=model.seq_len,
            eval_tokens=2 * model.seq_len,
            cache_dir=Path(cache),
        )
        runs = variants(sizes, data, device)
    best, fp32, token, patch = (runs[name] for name in ("compiled", "fp32", "bf16_fused", "patch_k4"))
    return {
        "preset": sizes.preset,
        "model_params": count_parameters(model, non_embedding=False),
        "model_params_non_embedding": count_parameters(model),
        "flops_per_token": flops_per_token(model),
        "seq_len": model.seq_len,
        "batch_size": sizes.batch,
        "tokens_per_s": best["tokens_per_s"],
        "mfu": best["mfu"],
        "step_s": best["step_s"],
        "peak_memory_gb": best["peak_memory_gb"],
        "speedup_vs_fp32": best["tokens_per_s"] / fp32["tokens_per_s"],
        # The first steps' time beyond as many steady steps, less the same for the run without compilation.
        "compile_s": (best["warmup_s"] - best["warmup_steps"] * best["step_s"])
        - (token["warmup_s"] - token["warmup_steps"] * token["step_s"]),
        "patch_k4_ratio": patch["tokens_per_s"] / token["tokens_per_s"],
        "patch_k4_step_ratio": patch["step_s"] / token["step_s"],
        "variants": runs,
    }


def selection(sizes: Sizes, device: str) -> dict[str, Any]:
    """The uniform order on ``device`` with TF32 on in the process, against the CPU's order to ``cpu_k`` picks."""
    vectors = clustered_embeddings(sizes.vectors, sizes.dim)
    speed.use_tf32_for_training(device)  # as a trial's training leaves the process
    tf32_in_force = torch.backends.cuda.matmul.fp32_precision == "tf32"
    passes: list[tuple[int, float]] = []
    started = time.perf_counter()
    order, distances = uniform_order(
        vectors, sizes.k, device=device, progress=lambda picked, _: passes.append((picked, time.perf_counter()))
    )
    device_s = time.perf_counter() - started
    device_s_at_cpu_k = next(at for picked, at in passes if picked >= sizes.cpu_k) - started
    print(f"uniform order on {device}: {device_s:.1f} s to k={sizes.k}", file=sys.stderr)
    started = time.perf_counter()
    cpu_order, cpu_distances = uniform_order(vectors, sizes.cpu_k, device="cpu")
    cpu_s = time.perf_counter() - started
    identical = np.array_equal(order[: sizes.cpu_k], cpu_order) and np.array_equal(
        distances[: sizes.cpu_k], cpu_distances
    )
    print(f"uniform order on the CPU: {cpu_s:.1f} s to k={sizes.cpu_k}; identical: {identical}", file=sys.stderr)
    return {
        "selection_vectors": sizes.vectors,
        "selection_dim": sizes.dim,
        "selection_k": sizes.k,
        "selection_device": device_name(device),
        "selection_tf32_in_force": tf32_in_force,
        "selection_gpu_s": device_s,
        "selection_gpu_s_at_cpu_k": device_s_at_cpu_k,
        "selection_passes": len(passes),
        "selection_cpu_k": sizes.cpu_k,
        "selection_cpu_s": cpu_s,
        "selection_cpu_threads": torch.get_num_threads(),
        "selection_speedup": cpu_s / device_s_at_cpu_k,
        "selection_identical": bool(identical),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where to train and order")
    parser.add_argument(
        "--corpus",
        help="the text to train on, as a corpus file's path or gensim:<name> (default: the run's own, "
        f"{FULL.corpus} or {SMOKE.corpus} with --smoke); for a machine without gensim, a copy of that file",
    )
    parser.add_argument("--vectors", type=int, help="rows of the set the uniform order runs on (default 1M)")
    parser.add_argument("--cpu-k", type=int, help="picks of the CPU's order (default 25k)")
    parser.add_argument("--only-selection", action="store_true", help="leave out the training runs")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA"}))
        return
    sizes = SMOKE if args.smoke else FULL
    given = {"corpus": args.corpus, "vectors": args.vectors, "cpu_k": args.cpu_k}
    sizes = dataclasses.replace(sizes, **{name: value for name, value in given.items() if value is not None})
    started = time.perf_counter()
    result: dict[str, Any] = {"device": device_name(args.device), "torch": torch.__version__}
    if not args.only_selection:
        result |= training(sizes, args.device)
    result |= selection(sizes, args.device)
    result["wall_s"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
