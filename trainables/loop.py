"""The training loop every launch path shares.

``train_lm`` knows nothing about Ray: it takes a validated ``TrialConfig``,
the sweep's data and a ``report`` callable. A Tune trial passes
``ray.tune.report``; tests and benchmarks pass a list's ``append``.

Every ``eval_every`` steps and at the last step it reports the metrics the
rest of effsweep relies on (``REPORTED_METRICS``), and ``final_val_loss`` and
``final_val_bpb`` with the last report: ``val_loss`` is in nats per token,
``val_bpb`` the same loss in bits per byte of the validation text; ``phase``
says ``patch`` or ``token`` (and ``patch_phase``, 1 or 0, lets the switch
show in a metric history). ``compute`` advances by the
work done (T positions a sample in either phase), ``tokens`` by the data read
(K times the positions in a patch step). The first report also says what the trial trained on
(``selection_documents``, ``selection_tokens`` and, when the sweep has
embeddings, ``selection_h_min``, ``selection_mean_nn``,
``selection_covering_radius``). ``tokens_per_s`` is the data read per second
of training since the last report and, on a GPU whose peak is known
(``trainables.throughput``), ``mfu`` the share of that peak the work used.

The host reads the device only at reports: the training loss is summed on
the device, so a non-finite loss ends the run at the next report, with
``diverged = 1``. The speed settings (``precision``, ``compile``,
``micro_batch_size``) are in ``trainables.speed`` and docs/spec.md.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.model import GPT, ModelConfig, model_flops_utilisation
from trainables.noise_scale import NoiseScale, probe
from trainables.patch import PatchBatcher, TrainingLoss
from trainables.speed import autocast, compiled, on_cuda, to_device, use_tf32_for_training
from trainables.step_rules import StepRule, TrainingBatch, build_step_rule, step_rule_class
from trainables.throughput import peak_flops
from trainables.workers import Workers

ALONE = Workers()

REPORTED_METRICS = (
    "step", "tokens", "compute", "train_loss", "val_loss", "val_bpb", "lr", "lr_sum", "wall_s", "patch_phase",
    "tokens_per_s",
)  # fmt: skip
# Reported values that are labels, not numbers.
REPORTED_LABELS = ("phase",)
OBJECTIVE = "final_val_loss"
# The objective in bits per byte of the validation text, which compares across tokenizers.
FINAL_BITS_PER_BYTE = "final_val_bpb"
DIVERGED = "diverged"

Report = Callable[[dict[str, float | str]], None]
# A report that carries a checkpoint: the metrics and the run's state (see ``train_lm``).
Save = Callable[[dict[str, float | str], dict[str, Any]], None]


@dataclass(frozen=True)
class TrainOutcome:
    """How a run ended: ``completed`` (with ``final_val_loss``) or ``diverged``."""

    status: str
    steps: int
    final_val_loss: float | None


def evaluate(
    model: GPT, windows: torch.Tensor, batch_size: int = 64, workers: Workers = ALONE, precision: str = "fp32"
) -> float:
    """Mean token-level cross-entropy over validation windows of ``seq_len + 1`` tokens (shared by workers)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=windows.device)
    count = 0
    with torch.no_grad():
        for chunk in workers.shard(windows).split(batch_size):
            with autocast(windows.device, precision):
                logits = model(chunk[:, :-1])
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum"
            ).double()
            count += chunk[:, 1:].numel()
    model.train(was_training)
    total, count = workers.sum(torch.stack([total, total.new_tensor(count)])).tolist()
    return total / count


def train_lm(
    cfg: TrialConfig,
    data: SweepData,
    report: Report,
    device: str | torch.device = "cpu",
    workers: Workers = ALONE,
    save: Save | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train a fresh model (or one resumed from a checkpoint) to the trial's compute budget, reporting as it goes.

    A trial with patch training (``patch.K`` > 1) runs two phases: patches
    on the first share of its budget, then tokens. The switch keeps the
    weights and starts a fresh optimizer state and a fresh schedule, as the
    paper does; the phase's last step always reports, so the switch shows.
    Each phase runs until its compute is spent: the planned number of steps
    for rules that follow a schedule, as many as fit for rules whose steps
    cost more (a line search's extra forward passes, vSGD's second gradient).

    With several ``workers`` each trains on its rows of the same global batch
    through ``workers.prepare`` (``trainables.workers``); every worker reports
    the same numbers.

    With ``target_loss`` the run ends at the first token-phase report whose validation
    loss is at or below it: that report carries ``final_val_loss``,
    ``reached_target`` = 1 and ``steps_to_target`` (interpolated linearly in
    the loss between it and the report before). A run that spends its budget
    first ends as usual, with ``reached_target`` = 0.

    With ``save``, every ``checkpoint_every``-th report goes to ``save``
    with the run's whole state instead of to ``report``; ``resume`` (such a
    state) continues the run from there exactly as it would have gone on.
    """
    _check_vocabulary(cfg, data)
    _check_workers(cfg, workers)
    documents = data.training_documents(cfg.selection)
    first_report = {**data.selection_metrics(documents), "workers": float(workers.world_size)}
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model).to(device)
    use_tf32_for_training(device)
    lrs, momenta = cfg.planned_lrs(), cfg.planned_momenta()
    batcher = PatchBatcher(
        data.train.spans(documents), seq_len=cfg.model.seq_len, patch_size=cfg.patch.K, batch_size=cfg.batch_size,
        seed=cfg.seed, patch_rows=cfg.patch_rows, rank=workers.rank, world_size=workers.world_size,
    )  # fmt: skip
    val_windows = torch.from_numpy(data.val_windows.astype(np.int64)).to(device)
    start = time.perf_counter()
    noise = NoiseScale() if cfg.gns else None
    run = _RunState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        batcher.load_state_dict(resume["batcher"])
        _set_rng_states(resume, device)
        run = _RunState(**resume["run"])
        first_report = {}  # it went out before the checkpoint
    # Training steps go through the loss module's forward, which a data-parallel wrapper sees whole.
    # The bare module and model serve the rest: the noise-scale probe's gradients (which must not
    # reach the wrapper's hooks), evaluation, the step rules' parameters and checkpoints (whose keys
    # stay the model's).
    training_loss = TrainingLoss(model)
    trained = workers.prepare(compiled(training_loss, cfg.compile))
    # A data-parallel wrapper averages gradients at every backward unless told to wait (micro-batches).
    no_sync = getattr(trained, "no_sync", contextlib.nullcontext)
    throughput = _Throughput(cfg.model, peak_flops(device, cfg.precision), workers.world_size)
    reports = 0

    def send(metrics: dict[str, float | str], rule: StepRule) -> None:
        # What the trial trained on is constant; it goes with the first report only.
        nonlocal first_report, reports
        reports += 1
        metrics = {**first_report, **metrics}
        first_report = {}
        if save is not None and cfg.checkpoint_every and reports % cfg.checkpoint_every == 0:
            state = {"model": model.state_dict(), "rule": rule.state_dict(), "batcher": batcher.state_dict()}
            save(metrics, {**state, **_rng_states(device), "run": asdict(run)})
        else:
            report(metrics)
        throughput.restart(run)  # evaluation and checkpoints are not training time

    for index, (phase, phase_steps, budget) in enumerate(
        zip(("patch", "token"), cfg.phase_steps, cfg.phase_budgets, strict=True)
    ):
        if phase_steps == 0 or index < run.phase:
            continue
        patched = phase == "patch"
        patch_size = cfg.patch.K if patched else 1
        step_compute = cfg.patch_step_compute if patched else cfg.tokens_per_step
        rule = build_step_rule(model, cfg, steps=phase_steps, batches_per_epoch=batcher.batches_per_epoch(patched))
        if resume is not None and index == run.phase and run.spent > 0:
            rule.load_state_dict(resume["rule"])
        else:
            run.phase, run.spent = index, 0.0
        forward = functools.partial(_forward, trained, patch_size, cfg.precision)
        throughput.restart(run)
        loss_sum, loss_count = torch.zeros((), dtype=torch.float64, device=device), 0
        while _fits(run.spent, rule.min_cost * step_compute, budget):
            run.step += 1
            window = to_device(batcher.patch_batch() if patched else batcher.token_batch(), device)
            step_loss, lr, cost = rule.step(
                TrainingBatch(forward, window, cfg.micro_batch_size, no_sync),
                float(lrs[run.step - 1]) if lrs is not None else cfg.scaled_peak_lr,
                float(momenta[run.step - 1]) if momenta is not None else None,
            )
            # Summed on the device and read at the next report: reading it every step would make the host
            # wait for the device at every step.
            loss_sum += step_loss.double()
            loss_count += 1
            run.spent += cost * step_compute
            run.compute += cost * step_compute
            run.tokens += batcher.tokens_per_patch_batch if patched else batcher.tokens_per_token_batch
            run.lr_sum += lr
            progress = {
                "step": run.step,
                "tokens": run.tokens,
                "compute": run.compute,
                "lr": lr,
                "lr_sum": run.lr_sum,
                "phase": phase,
                "patch_phase": float(patched),
            }
            phase_done = not _fits(run.spent, rule.min_cost * step_compute, budget)
            if run.step % cfg.eval_every and not phase_done:
                continue
            train_loss = workers.mean(loss_sum).item() / loss_count
            progress.update(throughput.measure(run))  # after the read, which waits for the device's work
            loss_sum.zero_()
            loss_count = 0
            if not math.isfinite(train_loss):
                # Every worker reads the same mean, so all end at the same step.
                wall = time.perf_counter() - start
                report({**first_report, **progress, "wall_s": wall, "train_loss": train_loss, "val_loss": math.nan,
                        DIVERGED: 1.0})  # fmt: skip
                return TrainOutcome("diverged", run.step, None)
            if noise is not None:
                measured = probe(model, functools.partial(training_loss, patch_size=patch_size), window, workers)
                if measured is not None:
                    noise.update(*measured)
            rule.eval()
            val_loss = evaluate(model, val_windows, workers=workers, precision=cfg.precision)
            rule.train()
            metrics = {
                **progress,
                "wall_s": time.perf_counter() - start,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_bpb": data.bits_per_byte(val_loss),
            }
            if noise is not None and math.isfinite(noise.value):
                metrics["gns"] = noise.value
            if not math.isfinite(val_loss):
                report({**first_report, **metrics, DIVERGED: 1.0})
                return TrainOutcome("diverged", run.step, None)
            reached = cfg.target_loss is not None and phase == "token" and val_loss <= cfg.target_loss
            if reached:
                metrics["steps_to_target"] = _crossing(run.last_eval, (run.step, val_loss), cfg.target_loss)
            if cfg.target_loss is not None and (reached or (phase_done and phase == "token")):
                metrics["reached_target"] = float(reached)
            run.last_eval = (run.step, val_loss)
            if reached or (phase_done and phase == "token"):
                metrics[OBJECTIVE] = val_loss
                metrics[FINAL_BITS_PER_BYTE] = metrics["val_bpb"]
            send(metrics, rule)
            if reached:
                return TrainOutcome("completed", run.step, val_loss)
    return TrainOutcome("completed", run.step, val_loss)


@dataclass
class _RunState:
    """The counters a checkpoint keeps besides the weights, the rule and the data order."""

    phase: int = 0
    step: int = 0
    tokens: int = 0
    compute: float = 0.0
    lr_sum: float = 0.0
    spent: float = 0.0  # compute spent in the current phase
    last_eval: tuple[int, float] | None = None  # (step, val_loss) of the last report


class _Throughput:
    """Tokens per second and MFU over the training time since the last report (evaluation left out)."""

    def __init__(self, model: ModelConfig, peak_flops: float | None, devices: int) -> None:
        self._model = model
        self._peak = None if peak_flops is None else peak_flops * devices
        self._since = (time.perf_counter(), 0, 0.0)

    def restart(self, run: _RunState) -> None:
        self._since = (time.perf_counter(), run.tokens, run.compute)

    def measure(self, run: _RunState) -> dict[str, float]:
        """``tokens_per_s`` (data read) and, on a device with a known peak, ``mfu`` (work done, all devices)."""
        start, tokens, compute = self._since
        elapsed = max(time.perf_counter() - start, 1e-9)
        metrics = {"tokens_per_s": (run.tokens - tokens) / elapsed}
        if self._peak is not None:
            metrics["mfu"] = model_flops_utilisation(self._model, (run.compute - compute) / elapsed, self._peak)
        return metrics


def _forward(trained: torch.nn.Module, patch_size: int, precision: str, rows: torch.Tensor) -> torch.Tensor:
    """The training loss of ``rows`` through the (wrapped, compiled) loss module, in the trial's precision."""
    with autocast(rows.device, precision):
        return trained(rows, patch_size)


def _crossing(before: tuple[int, float] | None, now: tuple[int, float], target: float) -> float:
    """The step where the validation loss crossed ``target``, linear in the loss between two reports."""
    if before is None or before[1] <= now[1]:
        return float(now[0])
    (s0, l0), (s1, l1) = before, now
    return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)


def _check_vocabulary(cfg: TrialConfig, data: SweepData) -> None:
    if data.vocab_size > cfg.model.vocab_size:
        raise ValueError(
            f"model.vocab_size {cfg.model.vocab_size} is smaller than the {data.vocab_size} tokens of the sweep's "
            f"tokenizer ({data.tokenizer})"
        )


def _check_workers(cfg: TrialConfig, workers: Workers) -> None:
    if not workers.distributed:
        return
    if step_rule_class(cfg.optimizer.name).single_worker_only:
        raise ValueError(
            f"optimizer.name {cfg.optimizer.name} chooses its rate from the loss and runs on one worker only; "
            f"got {workers.world_size} workers"
        )
    if cfg.batch_size % workers.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly among {workers.world_size} workers")
    if cfg.patch.K > 1 and cfg.patch_rows % workers.world_size:
        raise ValueError(
            f"a patch step's {cfg.patch_rows} sequences (patch.tokens_per_step {cfg.patch.tokens_per_step}) must "
            f"divide evenly among {workers.world_size} workers"
        )


def _fits(spent: float, cost: float, budget: float) -> bool:
    """Whether one more step of ``cost`` stays within ``budget`` (exact for whole steps)."""
    return spent + cost <= budget * (1 + 1e-12)


def _rng_states(device: str | torch.device) -> dict[str, torch.Tensor]:
    """The random generators' states a checkpoint keeps: the CPU's, and the training GPU's when there is one."""
    states = {"torch_rng": torch.get_rng_state()}
    if on_cuda(device):
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(resume: dict[str, Any], device: str | torch.device) -> None:
    # A checkpoint loaded onto the training device holds the states there; the generators take CPU tensors.
    torch.set_rng_state(resume["torch_rng"].cpu())
    if "cuda_rng" in resume and on_cuda(device):
        torch.cuda.set_rng_state(resume["cuda_rng"].cpu(), device)
