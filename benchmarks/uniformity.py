"""Study: uniform against random subsets of Alpaca, as data and as training sets.

1. Uniformity: h_min, mean nearest-neighbour distance and covering radius of
   uniform (greedy max-min) and random subsets of 10, 25 and 50% of the
   training documents (random: mean over three seeds).
2. Training: the default model (``small``) trained at equal compute on the
   uniform and the random subset of the same size (10% and 25%), and on all
   the training data, scored on the same held-out validation windows.

Data: ``../shared/data/alpaca_data.json`` (skipped with a message if absent).
Each Alpaca record is one document (instruction, input, output); 10% of the
documents are held out for validation before any selection.

Run: ``.venv/bin/python benchmarks/uniformity.py [--smoke]`` (about 25 minutes
on 2 cores: two trainings at a time); writes ``docs/img/uniformity.png`` and
prints one JSON object last. ``--smoke`` runs on gensim's small corpus.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from corpora import ALPACA, SMALL_CORPUS
from matplotlib.figure import Figure
from smoke import SMOKE_MODEL, add_smoke_flag, output_path

from trainables.config import MIN_STEPS, TrialConfig
from trainables.data.prepare import SelectionPlan, SweepData, prepare_sweep_data
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS
from trainables.selection.embeddings import EmbeddingConfig
from trainables.selection.orderings import random_order, subset_metrics

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "img" / "uniformity.png"
FRACTIONS = (0.1, 0.25, 0.5)
TRAINED_FRACTIONS = (0.1, 0.25)

_shared: SweepData | None = None  # the data, inherited by the worker processes


def uniformity_table(data: SweepData) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {"uniform": {}, "random": {}}
    n = data.train.n_documents
    for fraction in FRACTIONS:
        table["uniform"][str(fraction)] = subset_metrics(data.embeddings, data.orders["uniform"].prefix(fraction))
        draws = [subset_metrics(data.embeddings, random_order(n, seed).prefix(fraction)) for seed in range(3)]
        table["random"][str(fraction)] = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
        print(f"{fraction:.0%}: uniform {table['uniform'][str(fraction)]}, random {table['random'][str(fraction)]}",
              file=sys.stderr)  # fmt: skip
    return table


def _train(run: tuple[str, float, float, str]) -> dict[str, Any]:
    strategy, fraction, compute, model = run
    torch.set_num_threads(1)
    settings = {f"model.{k}": v for k, v in MODEL_PRESETS[model].items()}
    settings.update({"budget.compute": compute, "batch_size": 16, "eval_every": 100, "peak_lr": 3e-3})
    settings.update({"selection.strategy": strategy, "selection.fraction": fraction})
    reports: list[dict[str, float]] = []
    started = time.perf_counter()
    train_lm(TrialConfig.from_flat(settings), _shared, reports.append)
    return {
        "strategy": strategy,
        "fraction": fraction,
        "final_val_loss": reports[-1]["final_val_loss"],
        "selection_tokens": reports[0]["selection_tokens"],
        "epochs": compute / reports[0]["selection_tokens"],
        "curve": [[r["compute"], r["val_loss"]] for r in reports],
        "seconds": time.perf_counter() - started,
    }


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot()
    colours = {"uniform": "tab:red", "random": "tab:blue", "full": "black"}
    for run in runs:
        curve = np.array(run["curve"])
        style = "-" if run["fraction"] in (1.0, TRAINED_FRACTIONS[0]) else "--"
        label = "full data" if run["strategy"] == "full" else f"{run['strategy']} {run['fraction']:.0%}"
        ax.plot(curve[:, 0], curve[:, 1], style, color=colours[run["strategy"]], label=label)
    ax.set_xlabel("compute (tokens trained)")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("Alpaca: uniform vs random subsets at equal compute")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    global _shared
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=float, default=4e6, help="tokens each training run is given")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        corpus, model = SMALL_CORPUS, SMOKE_MODEL
        compute = MIN_STEPS * 16 * MODEL_PRESETS[model]["seq_len"]
    elif ALPACA.is_file():
        corpus, model, compute = str(ALPACA), "small", args.compute
    else:
        print(f"skipped: {ALPACA} is absent")
        print(json.dumps({"skipped": f"{ALPACA} is absent"}))
        return
    plan = SelectionPlan(("random", "uniform"), max(FRACTIONS), EmbeddingConfig(), seed=0)
    with tempfile.TemporaryDirectory() as cache:
        _shared = prepare_sweep_data(
            corpus, val_fraction=0.1, seed=0, seq_len=MODEL_PRESETS[model]["seq_len"], eval_tokens=32768,
            cache_dir=Path(cache), selection=plan,
        )  # fmt: skip
    result: dict[str, Any] = {"documents": _shared.train.n_documents, "train_tokens": _shared.train_tokens}
    result["uniformity"] = uniformity_table(_shared)
    runs = [(s, f, compute, model) for f in TRAINED_FRACTIONS for s in ("uniform", "random")]
    runs.append(("full", 1.0, compute, model))
    with ProcessPoolExecutor(max_workers=2) as pool:  # fork: workers share the prepared data
        trained = list(pool.map(_train, runs))
    for run in trained:
        print(f"{run['strategy']} {run['fraction']:.0%}: final val loss {run['final_val_loss']:.4f} "
              f"({run['epochs']:.1f} epochs, {run['seconds']:.0f} s)", file=sys.stderr)  # fmt: skip
    with output_path(FIGURE, args.smoke) as figure:
        plot(trained, figure)
    result["training"] = trained
    result["compute"] = compute
    for fraction in TRAINED_FRACTIONS:
        by = {r["strategy"]: r["final_val_loss"] for r in trained if r["fraction"] == fraction}
        result[f"uniform_minus_random_{fraction}"] = by["uniform"] - by["random"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
