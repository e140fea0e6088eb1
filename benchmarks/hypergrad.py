"""Exact hypergradients by reversible SGD with momentum: memory, time and search quality.

The task is the paper's kind (Maclaurin, Duvenaud and Adams, 2015): scikit-learn's
8x8 digits, a tanh MLP with hidden layers (50, 50, 50), 1,000 training images in
batches of 100, T steps of SGD with momentum 0.9, ten blocks of learning rates
and momenta per parameter group. Three figures, each described with its
results in ``docs/benchmarks.md`` ("Hypergradients by exact reversal"):

- **Memory.** Peak RSS growth of one ``hypergradients`` call (reversible)
  and one ``unrolled_hypergradients`` call (autograd through every step) for
  each T in ``--steps``, each in a fresh interpreter (``benchmarks/memory.py``
  reads the peak); an unrolled run is skipped above ``--skip-unrolled-above``
  or when its projected size would not fit in 80% of MemAvailable. Also the
  information buffer's bits per parameter per step against log2(1/momentum).
- **Time.** One meta-iteration against plain float64 training over the same
  steps, best of ``--repeats``, on digits and on the ``tiny`` language model.
- **Search.** The ``hypergrad`` searcher (driven directly, no Ray) against
  Optuna's TPE given the same number of training steps, for each seed in
  ``--tpe-seeds``; ``--plot PATH`` draws the learned learning-rate schedules.

Run: ``.venv/bin/python benchmarks/hypergrad.py [--smoke] [--plot /tmp/hypergrad_lr.png]``
(about 3 minutes on 2 cores, and 12 GiB of memory for the unrolled T=10,000;
``--smoke`` well under one); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from memory import available_mib, peak_rss_mib, reset_peak_rss, status_mib
from smoke import add_smoke_flag

from trainables.hypergrad.fixed_point import FixedPointOverflow
from trainables.hypergrad.flat_parameters import FlatParameters
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.reversal import (
    CONFIG_PREFIX,
    HyperTask,
    block_of,
    hypergradients,
    meta_iteration_report,
    unrolled_hypergradients,
)

MOMENTUM = 0.9
BLOCKS = 10
LM_BLOCKS = 5
LM_BATCH = 8
LM_CORPUS = "gensim:lee_background"
DIVERGED_LOSS = 1e6  # what TPE is told when a plain run's validation loss is not finite
MEMORY_HEADROOM = 0.8  # the share of MemAvailable an unrolled run may be projected to use
METHODS = {"reversible": hypergradients, "unrolled": unrolled_hypergradients}


def digits_task() -> HyperTask:
    """The paper-sized digits task: hidden (50, 50, 50), 1,000 training images, batches of 100."""
    from trainables.hypergrad.tasks import DigitsTask

    return DigitsTask(hidden=(50, 50, 50), train_size=1000, batch_size=100, seed=0)


def constant_hyper(task: HyperTask, *, blocks: int, lr: float, momentum: float = MOMENTUM) -> Hyperparameters:
    return Hyperparameters.initial(blocks=blocks, groups=len(task.groups), lr=lr, momentum=momentum)


def plain_training(task: HyperTask, hyper: Hyperparameters, steps: int) -> float:
    """Plain float64 SGD with momentum, the update ``hypergradients`` makes; the validation loss at the end.

    ``v <- g v - (1 - g)(grad + wd w)``, ``w <- w + lr v``, with the same
    (rounded) momenta, per-block and per-group rates, and initial scale.
    """
    flat = FlatParameters(task.model, task.groups)
    decay = torch.from_numpy(flat.per_element(np.exp(hyper.log_weight_decay)))
    weights = torch.from_numpy(flat.initial * flat.per_element(np.exp(hyper.log_init_scale)))
    velocity = torch.zeros_like(weights)
    lrs, momenta = np.exp(hyper.log_lr), hyper.momenta()
    current = -1
    for step in range(steps):
        block = block_of(step, steps, hyper.blocks)
        if block != current:
            lr, keep = (torch.from_numpy(flat.per_element(v[block])) for v in (lrs, momenta))
            current = block
        weights.requires_grad_(True)
        (grad,) = torch.autograd.grad(task.train_loss(flat.unflatten(weights), step), weights)
        weights = weights.detach()
        grad += decay * weights
        velocity.mul_(keep).sub_((1 - keep) * grad)
        weights.add_(lr * velocity)
    with torch.no_grad():
        return float(task.val_loss(flat.unflatten(weights)))


# --- memory -------------------------------------------------------------------------------------


def memory_child(method: str, steps: int, lr: float) -> dict[str, Any]:
    """In a fresh interpreter: peak RSS growth of one call of ``method`` for ``steps`` steps."""
    torch.set_num_threads(1)
    task = digits_task()
    run = METHODS[method]
    run(task, constant_hyper(task, blocks=BLOCKS, lr=lr), BLOCKS)  # warm-up: one tiny meta-iteration
    hyper = constant_hyper(task, blocks=BLOCKS, lr=lr)
    reset = reset_peak_rss()
    before = status_mib("VmRSS") or peak_rss_mib()
    started = time.perf_counter()
    outcome = run(task, hyper, steps)
    seconds = time.perf_counter() - started
    peak = peak_rss_mib()
    result: dict[str, Any] = {"growth_mib": peak - before, "rss_before_mib": before, "peak_reset": reset}
    result["seconds"] = seconds
    if method == "reversible":
        result.update(buffer_bytes=outcome.buffer_bytes, buffer_bits=outcome.buffer_bits, exact=outcome.exact)
    return result


def measure_memory(method: str, steps: int, lr: float) -> dict[str, Any]:
    """Run ``memory_child`` in a new interpreter (this script with a hidden flag) and read its JSON line."""
    command = [sys.executable, __file__, "--memory-child", method, "--child-steps", str(steps), "--lr", str(lr)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run {method} T={steps} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _unrolled_skip_reason(steps: int, measured: dict[int, dict[str, Any]], skip_above: int | None) -> str | None:
    if skip_above is not None and steps > skip_above:
        return f"--skip-unrolled-above {skip_above}"
    if not measured:
        return None
    largest = max(measured)
    projected = measured[largest]["growth_mib"] * steps / largest
    available = available_mib()
    if projected > MEMORY_HEADROOM * available:
        return f"projected {projected:.0f} MiB > {MEMORY_HEADROOM:.0%} of {available:.0f} MiB available"
    return None


def memory_section(steps_list: Sequence[int], lr: float, skip_above: int | None) -> dict[str, Any]:
    reversible = {t: measure_memory("reversible", t, lr) for t in steps_list}
    unrolled: dict[int, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for steps in steps_list:
        reason = _unrolled_skip_reason(steps, unrolled, skip_above)
        if reason is None:
            unrolled[steps] = measure_memory("unrolled", steps, lr)
        else:
            skipped[str(steps)] = reason
    for steps in steps_list:
        print(f"T={steps}: reversible {reversible[steps]} unrolled {unrolled.get(steps)}", file=sys.stderr)

    def figure(runs: dict[int, dict[str, Any]], key: str) -> dict[str, float | None]:
        return {str(t): (runs[t][key] if t in runs else None) for t in steps_list}

    momentum = float(Hyperparameters.initial(blocks=1, groups=1, lr=lr, momentum=MOMENTUM).momenta()[0, 0])
    result: dict[str, Any] = {
        "memory_steps": list(steps_list),
        "reversible_peak_mib": figure(reversible, "growth_mib"),
        "unrolled_peak_mib": figure(unrolled, "growth_mib"),
        "reversible_memory_s": figure(reversible, "seconds"),
        "unrolled_memory_s": figure(unrolled, "seconds"),
        "unrolled_skipped": skipped,
        "reversal_exact": all(r["exact"] for r in reversible.values()),
        "peak_reset": all(r["peak_reset"] for r in [*reversible.values(), *unrolled.values()]),
        "buffer_bytes": figure(reversible, "buffer_bytes"),
        "buffer_bits_per_param_step": {str(t): r["buffer_bits"] / t for t, r in reversible.items()},
        "log2_inverse_momentum": math.log2(1 / momentum),
    }
    for name, runs in (("memory", reversible), ("unrolled_memory", unrolled)):
        pairs = [(big, small) for big in steps_list for small in steps_list if big == 10 * small]
        for big, small in pairs:
            ratio = runs[big]["growth_mib"] / runs[small]["growth_mib"] if big in runs and small in runs else None
            result[f"{name}_ratio_T{big}_T{small}"] = ratio
    return result


# --- time ---------------------------------------------------------------------------------------


def _best_time(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """The shortest wall time of ``repeats`` calls of ``run()`` and the last call's value."""
    best, value = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - started)
    return best, value


def compare_times(task: HyperTask, hyper: Hyperparameters, steps: int, repeats: int) -> dict[str, float]:
    """A meta-iteration against plain training for the same steps: wall times, the best of ``repeats``."""
    meta_s, outcome = _best_time(repeats, lambda: hypergradients(task, hyper, steps))
    plain_s, plain_loss = _best_time(repeats, lambda: plain_training(task, hyper, steps))
    return {
        "meta_s": meta_s,
        "forward_s": outcome.forward_s,
        "reverse_s": outcome.reverse_s,
        "train_s": plain_s,
        "meta_to_train_time": meta_s / plain_s,
        "val_loss_gap": abs(outcome.val_loss - plain_loss),  # fixed point against float64: should be ~1e-9
    }


def lm_task() -> HyperTask:
    """The ``tiny`` GPT on gensim's ``lee_background``, tokenised and split as a sweep does, batch 8."""
    from corpora import prepare_default_model_data

    from trainables.hypergrad.tasks import LanguageModelTask
    from trainables.model import MODEL_PRESETS, ModelConfig

    cfg = ModelConfig(**MODEL_PRESETS["tiny"])
    data = prepare_default_model_data(LM_CORPUS, seq_len=cfg.seq_len)
    return LanguageModelTask(cfg, data.train.tokens, data.val_windows, batch_size=LM_BATCH, seed=0)


def time_section(steps: int, lm_steps: int, lr: float, repeats: int) -> dict[str, Any]:
    task = digits_task()
    digits = compare_times(task, constant_hyper(task, blocks=BLOCKS, lr=lr), steps, repeats)
    lm = lm_task()
    language = compare_times(lm, constant_hyper(lm, blocks=min(LM_BLOCKS, lm_steps), lr=lr), lm_steps, repeats)
    print(f"time: digits {digits} lm {language}", file=sys.stderr)
    return {
        "time_steps": steps,
        "meta_to_train_time": digits["meta_to_train_time"],
        "time_detail": digits,
        "lm_time_steps": lm_steps,
        "lm_parameters": sum(p.numel() for p in lm.model.parameters()),
        "lm_meta_to_train_time": language["meta_to_train_time"],
        "lm_time_detail": language,
    }


# --- search -------------------------------------------------------------------------------------


def hypergrad_search(
    task: HyperTask, start: Hyperparameters, steps: int, meta_steps: int, meta_lr: float, patience: int, growth: float
) -> dict[str, Any]:
    """Drive the ``hypergrad`` searcher by hand (one chain): every meta-iteration's loss and the best iterate."""
    from orchestrator.hypergrad.searcher import HypergradSearcher

    searcher = HypergradSearcher(start, [{}], meta_steps=meta_steps, meta_lr=meta_lr, patience=patience, growth=growth)
    losses: list[float] = []
    best: tuple[float, Hyperparameters] = (math.inf, start)
    while True:
        trial_id = f"meta-{len(losses)}"
        config = searcher.suggest(trial_id)
        if config is None or config == HypergradSearcher.FINISHED:
            break
        hyper = Hyperparameters.from_dict({name: config[CONFIG_PREFIX + name] for name in Hyperparameters.FIELDS})
        try:
            outcome = hypergradients(task, hyper, steps)
        except FixedPointOverflow:  # as a sweep's trial reports it: diverged, no gradients
            losses.append(math.nan)
            searcher.on_trial_complete(trial_id, {"val_loss": math.nan, "diverged": 1.0})
            continue
        losses.append(outcome.val_loss)
        best = min(best, (outcome.val_loss, hyper), key=lambda pair: pair[0])
        searcher.on_trial_complete(trial_id, meta_iteration_report(outcome))
    (summary,) = searcher.chain_summaries()
    return {"losses": losses, "best_loss": best[0], "best": best[1], "ended": summary["ended"]}


def tpe_search(task: HyperTask, steps: int, trials: int, seed: int) -> float:
    """Optuna TPE over constant learning rate, momentum, weight decay and init scale: the best validation loss."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        hyper = Hyperparameters.initial(
            blocks=1,
            groups=len(task.groups),
            lr=trial.suggest_float("lr", 1e-3, 10.0, log=True),
            momentum=1 - trial.suggest_float("one_minus_momentum", 1e-2, 0.5, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
            init_scale=trial.suggest_float("init_scale", 0.1, 10.0, log=True),
        )
        loss = plain_training(task, hyper, steps)
        return loss if math.isfinite(loss) else DIVERGED_LOSS

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return float(study.best_value)


def plot_lr_schedules(task: HyperTask, hyper: Hyperparameters, steps: int, path: Path) -> None:
    """The learned learning rate per layer against the step: weights in one panel, biases in the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = [step for step in range(steps) if step == 0 or block_of(step, steps, hyper.blocks) != block_of(
        step - 1, steps, hyper.blocks)] + [steps]  # fmt: skip
    rates = np.exp(hyper.log_lr)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for panel, kind in zip(axes, ("weight", "bias"), strict=True):
        for index, name in enumerate(task.groups):
            if name.endswith(f".{kind}"):
                values = [*rates[:, index], rates[-1, index]]
                panel.step(edges, values, where="post", label=name.split(".")[0])
        panel.set(title=f"{'Weights' if kind == 'weight' else 'Biases'}", xlabel="step", ylabel="learning rate")
        panel.legend(fontsize="small")
    figure.suptitle("Learned learning-rate schedules (best hypergrad iterate)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def search_section(args: argparse.Namespace) -> dict[str, Any]:
    task = digits_task()
    steps = args.search_steps
    start = constant_hyper(task, blocks=BLOCKS, lr=args.lr)
    started = time.perf_counter()
    found = hypergrad_search(task, start, steps, args.meta_steps, args.meta_lr, args.patience, args.growth)
    hypergrad_s = time.perf_counter() - started
    training_steps = len(found["losses"]) * steps
    trials = training_steps // steps
    started = time.perf_counter()
    tpe = [tpe_search(task, steps, trials, seed) for seed in args.tpe_seeds]
    tpe_s = (time.perf_counter() - started) / len(tpe)
    print(f"hypergrad val losses: {np.round(found['losses'], 4).tolist()}", file=sys.stderr)
    if args.plot is not None:
        plot_lr_schedules(task, found["best"], steps, args.plot)
    best: Hyperparameters = found["best"]
    return {
        "search_steps_per_run": steps,
        "training_steps_each": training_steps,
        "hypergrad_meta_iterations": len(found["losses"]),
        "hypergrad_chain_ended": found["ended"],
        "hypergrad_start_val_loss": found["losses"][0],
        "hypergrad_best_val_loss": found["best_loss"],
        "hypergrad_search_s": hypergrad_s,
        "tpe_trials": trials,
        "tpe_best_val_loss": float(np.mean(tpe)),
        "tpe_best_val_loss_per_seed": tpe,
        "tpe_search_s": tpe_s,
        "hypergrad_to_tpe_val_loss": found["best_loss"] / float(np.mean(tpe)),
        "groups": list(task.groups),
        "hypergrad_best_lr_schedule": np.round(np.exp(best.log_lr), 4).tolist(),
        "hypergrad_best_momentum_schedule": np.round(best.momenta(), 4).tolist(),
        "lr_plot": str(args.plot) if args.plot is not None else None,
    }


# --- entry point --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000], help="T for the memory figures")
    parser.add_argument("--skip-unrolled-above", type=int, default=None, help="no unrolled run beyond this T")
    parser.add_argument("--lr", type=float, default=0.1, help="the constant learning rate runs start from")
    parser.add_argument("--time-steps", type=int, default=1000)
    parser.add_argument("--lm-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--search-steps", type=int, default=100, help="T of every search run")
    parser.add_argument("--meta-steps", type=int, default=100)
    parser.add_argument("--meta-lr", type=float, default=0.1)
    parser.add_argument("--patience", type=int, default=2, help="the searcher's growing-meta-gradient stop")
    parser.add_argument("--growth", type=float, default=5.0, help="the searcher's growing-meta-gradient stop")
    parser.add_argument("--tpe-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the learned learning-rate schedules")
    parser.add_argument("--memory-child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    return parser


def _smoke(args: argparse.Namespace) -> None:
    # T = 100 and 1,000 give the memory ratio its full-run key; an unrolled T = 1,000 would only add time.
    args.steps, args.skip_unrolled_above, args.time_steps, args.lm_steps, args.repeats = [100, 1000], 100, 200, 5, 1
    args.meta_steps, args.tpe_seeds = 5, [0]


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(1)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.child_steps, args.lr)))
        return
    if args.smoke:
        _smoke(args)
    started = time.perf_counter()
    result: dict[str, Any] = {"smoke": args.smoke, "torch_threads": torch.get_num_threads(), "lr": args.lr}
    result["momentum"] = MOMENTUM
    result.update(memory_section(args.steps, args.lr, args.skip_unrolled_above))
    result.update(time_section(args.time_steps, args.lm_steps, args.lr, args.repeats))
    result.update(search_section(args))
    result["wall_s"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
