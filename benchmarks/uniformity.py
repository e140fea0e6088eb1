"""Study: uniform against random subsets of Alpaca, as data and as training sets, at equal documents and tokens.

1. Uniformity: h_min, mean nearest-neighbour distance and covering radius of
   uniform (greedy max-min) and random subsets of 10, 25 and 50% of the
   training documents (random: mean over three seeds).
2. Training: the default model (``small``) trained at equal compute on the
   uniform and the random subset of 10, 25 and 50%, counted in documents
   (``selection.fraction_of: documents``) and in tokens (``tokens``: the
   same training cost, which the max-min order, favouring short outlying
   documents, spends on more of them), and on all the training data; each
   under ``--seeds`` seeds (the model, the batch order and the random
   subset's draw), scored on the same held-out validation windows in bits
   per byte (``final_val_bpb``) and nats per token.

Data: ``../shared/data/alpaca_data.json`` (skipped with a message if absent).
Each Alpaca record is one document (instruction, input, output); 10% of the
documents are held out for validation before any selection (and before a
BPE tokenizer is learnt, ``--tokenizer bpe``; bytes by default).

Run: ``.venv/bin/python benchmarks/uniformity.py [--tokenizer bpe] [--seeds 3] [--smoke]``
(about an hour at three seeds on 2 cores: two trainings at a time); writes
``docs/img/uniformity.png`` and prints one JSON object last. ``--smoke``
runs on gensim's small corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from corpora import ALPACA, SMALL_CORPUS
from matplotlib.figure import Figure
from seeded import model_settings, run_all, share, spread
from smoke import SMOKE_MODEL, add_smoke_flag, output_path

from trainables.config import MIN_STEPS
from trainables.data.prepare import SelectionPlan, SweepData, prepare_sweep_data
from trainables.data.tokenizer import TokenizerConfig
from trainables.model import MODEL_PRESETS
from trainables.selection.embeddings import EmbeddingConfig
from trainables.selection.orderings import random_order, subset_metrics

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "img" / "uniformity.png"
FRACTIONS = (0.1, 0.25, 0.5)
MEASURES = ("documents", "tokens")


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


def _summary(done: dict[str, Any]) -> dict[str, Any]:
    first, last = done["first"], done["last"]
    return {
        "final_val_bpb": last["final_val_bpb"],
        "final_val_loss": last["final_val_loss"],
        "selection_documents": first["selection_documents"],
        "selection_tokens": first["selection_tokens"],
        "epochs": last["compute"] / first["selection_tokens"],
        "seconds": done["seconds"],
    }


def _arms() -> list[tuple[str, float, str]]:
    """(strategy, fraction, what the fraction counts) of every training, the full data last."""
    arms = [(s, f, m) for m in MEASURES for f in FRACTIONS for s in ("uniform", "random")]
    return [*arms, ("full", 1.0, "documents")]


def train_arms(data: SweepData, base: dict[str, Any], seeds: int) -> list[dict[str, Any]]:
    """Every arm under every seed; the random arms of seed s read random order s."""
    n = data.train.n_documents
    share({s: dataclasses.replace(data, orders={**data.orders, "random": random_order(n, s)}) for s in range(seeds)})
    plan = [(arm, seed) for seed in range(seeds) for arm in _arms()]
    runs = [
        base | {"seed": seed, "selection.strategy": s, "selection.fraction": f, "selection.fraction_of": m}
        for (s, f, m), seed in plan
    ]
    done = run_all(runs, _summary)
    trained = []
    for strategy, fraction, measure in _arms():
        mine = [run for (arm, _), run in zip(plan, done, strict=True) if arm == (strategy, fraction, measure)]
        trained.append({
            "strategy": strategy, "fraction": fraction, "fraction_of": measure,
            "final_val_bpb": spread(r["final_val_bpb"] for r in mine),
            "final_val_loss": spread(r["final_val_loss"] for r in mine),
            "selection_documents": spread(r["selection_documents"] for r in mine),
            "selection_tokens": spread(r["selection_tokens"] for r in mine),
            "epochs": spread(r["epochs"] for r in mine),
            "runs": mine,
        })  # fmt: skip
    return trained


def plot(trained: list[dict[str, Any]], path: Path) -> None:
    """Final bits per byte of each subset against its size, uniform and random, in documents and in tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot()
    full = next(t for t in trained if t["strategy"] == "full")["final_val_bpb"]
    ax.axhline(full["mean"], color="black", linewidth=1, label="all training data")
    for strategy, colour in (("uniform", "tab:red"), ("random", "tab:blue")):
        for measure, style in (("documents", "--"), ("tokens", "-")):
            arm = [t for t in trained if t["strategy"] == strategy and t["fraction_of"] == measure]
            means = [t["final_val_bpb"]["mean"] for t in arm]
            errors = [t["final_val_bpb"]["std"] for t in arm]
            ax.errorbar([t["fraction"] for t in arm], means, yerr=errors, fmt=style, marker="o", color=colour,
                        capsize=3, label=f"{strategy}, equal {measure}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(FRACTIONS, [f"{f:.0%}" for f in FRACTIONS])
    ax.set_xlabel("subset size (share of the training documents, or of their tokens)")
    ax.set_ylabel("final validation bits per byte (mean, std over seeds)")
    ax.set_title("Alpaca: uniform vs random subsets at equal compute")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=float, default=4e6, help="tokens each training run is given")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tokenizer", choices=("bytes", "bpe"), default="bytes")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE tokens to learn")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        corpus, model, args.seeds = SMALL_CORPUS, SMOKE_MODEL, 1
        compute = MIN_STEPS * 16 * MODEL_PRESETS[model]["seq_len"]
    elif ALPACA.is_file():
        corpus, model, compute = str(ALPACA), "small", args.compute
    else:
        print(f"skipped: {ALPACA} is absent")
        print(json.dumps({"skipped": f"{ALPACA} is absent"}))
        return
    plan = SelectionPlan(("random", "uniform"), max(FRACTIONS), EmbeddingConfig(), seed=0,
                         max_token_fraction=max(FRACTIONS))  # fmt: skip
    tokenizer = TokenizerConfig(kind="bpe", vocab_size=args.vocab_size) if args.tokenizer == "bpe" else None
    with tempfile.TemporaryDirectory() as cache:
        data = prepare_sweep_data(
            corpus, val_fraction=0.1, seed=0, seq_len=MODEL_PRESETS[model]["seq_len"], eval_tokens=32768,
            cache_dir=Path(cache), selection=plan, tokenizer=tokenizer,
        )  # fmt: skip
    result: dict[str, Any] = {
        "documents": data.train.n_documents, "train_tokens": data.train_tokens, "tokenizer": data.tokenizer,
        "seeds": args.seeds, "model": model,
    }  # fmt: skip
    result["uniformity"] = uniformity_table(data)
    base = model_settings(model, data) | {"budget.compute": compute, "batch_size": 16, "eval_every": 100,
                                          "peak_lr": 3e-3}  # fmt: skip
    trained = train_arms(data, base, args.seeds)
    for arm in trained:
        bpb = arm["final_val_bpb"]
        print(f"{arm['strategy']} {arm['fraction']:.0%} of {arm['fraction_of']}: {bpb['mean']:.4f} +- "
              f"{bpb['std']:.4f} bits/byte, {arm['selection_tokens']['mean']:.3g} tokens, "
              f"{arm['epochs']['mean']:.1f} epochs", file=sys.stderr)  # fmt: skip
    with output_path(FIGURE, args.smoke) as figure:
        plot(trained, figure)
    result["training"] = trained
    result["compute"] = compute
    for measure in MEASURES:
        for fraction in FRACTIONS:
            by = {t["strategy"]: t["final_val_bpb"]["mean"] for t in trained
                  if t["fraction"] == fraction and t["fraction_of"] == measure}  # fmt: skip
            suffix = f"{fraction}" if measure == "documents" else f"tokens_{fraction}"
            result[f"uniform_minus_random_{suffix}"] = by["uniform"] - by["random"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
