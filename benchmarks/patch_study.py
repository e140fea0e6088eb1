"""Study: patch-level training (K = 4, lambda = 2/3) against token-level training, across seeds, in bits per byte.

For each seed, token-level training on D tokens, and patch training at equal
data (the same D tokens: about half the compute) and at equal compute (twice
the data), under both recipes of a patch step (``patch.tokens_per_step``:
``equal``, the paper's, and ``positions``). Every run scores the same
validation windows; the figures are ``final_val_bpb`` (bits per byte, which
compares across tokenizers) and ``final_val_loss`` (nats per token), as a
mean and spread over the seeds.

Data: ``../shared/data/alpaca_data.json`` when present, else gensim's
``lee_background``; ``--tokenizer bpe`` (the default) learns a byte-level BPE
of ``--vocab-size`` tokens from the training split, ``bytes`` reads bytes.

Run: ``.venv/bin/python benchmarks/patch_study.py [--tokenizer bytes] [--smoke]``
(about an hour at the defaults on 2 cores, two trainings at a time); the last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from corpora import default_corpus, prepare_default_model_data
from seeded import model_settings, run_all, share, spread
from smoke import SMOKE_MODEL, add_smoke_flag

from trainables.data.tokenizer import TokenizerConfig
from trainables.model import MODEL_PRESETS

BATCH = 16
PATCH = {"patch.K": 4, "patch.lambda": 2 / 3}
# (name, share of the token-level run's compute, patch settings)
ARMS: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("token", 1.0, {}),
    *(
        (f"patch_{recipe}_{equal}", fraction, {**PATCH, "patch.tokens_per_step": recipe})
        for recipe in ("equal", "positions")
        for equal, fraction in (("equal_data", 0.5), ("equal_compute", 1.0))
    ),
)


def _summary(done: dict[str, Any]) -> dict[str, Any]:
    last = done["last"]
    kept = ("final_val_bpb", "final_val_loss", "tokens", "compute", "step")
    return {key: last[key] for key in kept} | {"seconds": done["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-tokens", type=float, default=6e6, help="tokens read by the token-level runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="small", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--tokenizer", choices=("bytes", "bpe"), default="bpe")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE tokens to learn")
    parser.add_argument("--peak-lr", type=float, default=3e-3)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.model, args.seeds = SMOKE_MODEL, 2
        # The least that gives every patch arm its 10 steps a phase (positions at equal data has the fewest).
        args.data_tokens = 80 * BATCH * MODEL_PRESETS[SMOKE_MODEL]["seq_len"]
    corpus = default_corpus(args.smoke)
    tokenizer = TokenizerConfig(kind="bpe", vocab_size=args.vocab_size) if args.tokenizer == "bpe" else None
    data = prepare_default_model_data(corpus, MODEL_PRESETS[args.model]["seq_len"], tokenizer)
    share(data)
    base = model_settings(args.model, data) | {"batch_size": BATCH, "eval_every": 10**9, "peak_lr": args.peak_lr}
    plan = [(name, seed) for seed in range(args.seeds) for name, _, _ in ARMS]
    arms = {name: (fraction, patch) for name, fraction, patch in ARMS}
    runs = [
        base | arms[name][1] | {"seed": seed, "budget.compute": args.data_tokens * arms[name][0]} for name, seed in plan
    ]
    done = run_all(runs, _summary)
    result: dict[str, Any] = {
        "corpus": Path(corpus).name, "tokenizer": data.tokenizer, "vocab_size": data.vocab_size,
        "model": args.model, "data_tokens": args.data_tokens, "seeds": args.seeds, "batch_size": BATCH,
        "train_tokens": data.train_tokens,
    }  # fmt: skip
    for name, _, _ in ARMS:
        mine = [run for (arm, _), run in zip(plan, done, strict=True) if arm == name]
        result[name] = {
            "final_val_bpb": spread(r["final_val_bpb"] for r in mine),
            "final_val_loss": spread(r["final_val_loss"] for r in mine),
            "tokens": mine[0]["tokens"],
            "compute": mine[0]["compute"],
            "seconds": spread(r["seconds"] for r in mine),
            "runs": mine,
        }
        bpb = result[name]["final_val_bpb"]
        print(f"{name}: {bpb['mean']:.4f} +- {bpb['std']:.4f} bits/byte, {mine[0]['tokens']:.3g} tokens, "
              f"{mine[0]['compute']:.3g} compute", file=sys.stderr)  # fmt: skip
    token = result["token"]["final_val_bpb"]["mean"]
    for name, _, _ in ARMS[1:]:
        result[f"{name}_minus_token_bpb"] = result[name]["final_val_bpb"]["mean"] - token
    print(json.dumps(result))


if __name__ == "__main__":
    main()
