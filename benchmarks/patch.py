"""Patch-level training: throughput, wall-clock cost and loss against token-level training.

1. Throughput (tokens read per second) of training steps in the patch phase at
   K = 2, 4, 8 against the token phase (K = 1): the default ``small`` model,
   batch 16, sequence 128, one thread (as a one-CPU trial runs).
2. Wall-clock cost of a trial with (K = 4, lambda = 2/3) against token-level
   training on the same data (both read the same number of tokens: the patch
   trial gets half the compute budget); theory says 0.5.
3. Final validation loss (nats per token, and bits per byte) of token-level
   training against patch training at equal compute and at equal data.

``--recipe`` picks how a patch step is batched (``patch.tokens_per_step``:
``positions``, batch_size sequences of K*T tokens, or ``equal``, the paper's
batch_size/K of them); ``--tokenizer bpe`` trains on BPE tokens instead of
bytes. The keys are the same for every choice, which the JSON names.

Data: ``../shared/data/alpaca_data.json`` when present, else gensim's
``lee_background`` (a real but small corpus, read for several epochs).

Run: ``.venv/bin/python benchmarks/patch.py [--recipe equal] [--tokenizer bpe] [--smoke]``
(about 7 minutes); the
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from corpora import default_corpus, prepare_default_model_data
from smoke import SMOKE_MODEL, add_smoke_flag

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.data.tokenizer import TokenizerConfig
from trainables.loop import train_lm
from trainables.model import GPT, MODEL_PRESETS
from trainables.patch import PatchBatcher, TrainingLoss
from trainables.step_rules import TrainingBatch, build_step_rule

BATCH = 16
# 70 token-level steps of the tiny model: a (K = 4, lambda = 2/3) trial given half of that compute still has
# the 10 steps in each phase that a trial needs.
SMOKE_DATA_TOKENS = 70 * BATCH * MODEL_PRESETS[SMOKE_MODEL]["seq_len"]


def _settings(model: str, data: SweepData) -> dict[str, Any]:
    shape = {f"model.{k}": v for k, v in MODEL_PRESETS[model].items()}
    return shape | {"model.vocab_size": data.vocab_size, "batch_size": BATCH}


def throughput(data: SweepData, model: str, k: int, recipe: str, steps: int, warmup: int) -> float:
    """Tokens read per second by training steps at patch size ``k`` (1: token-level), as a trial takes them."""
    patch = {"patch.K": k, "patch.lambda": 0.5, "patch.tokens_per_step": recipe} if k > 1 else {}
    cfg = TrialConfig.from_flat({**_settings(model, data), "budget.compute": 1e9, **patch})
    torch.manual_seed(0)
    net = GPT(cfg.model)
    batcher = PatchBatcher(
        data.train.tokens, seq_len=cfg.model.seq_len, patch_size=k, batch_size=BATCH, seed=0, patch_rows=cfg.patch_rows
    )
    rule = build_step_rule(net, cfg, steps=warmup + steps, batches_per_epoch=batcher.batches_per_epoch(k > 1))
    loss = partial(TrainingLoss(net), patch_size=k)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        batch = batcher.token_batch() if k == 1 else batcher.patch_batch()
        rule.step(TrainingBatch(loss, batch), cfg.scaled_peak_lr)
    read = batcher.tokens_per_token_batch if k == 1 else batcher.tokens_per_patch_batch
    return steps * read / (time.perf_counter() - started)


def trial(data: SweepData, model: str, compute: float, patch: dict[str, Any]) -> dict[str, Any]:
    settings = {**_settings(model, data), "budget.compute": compute, "eval_every": 10**9, "peak_lr": 3e-3, **patch}
    reports: list[dict[str, Any]] = []
    started = time.perf_counter()
    train_lm(TrialConfig.from_flat(settings), data, reports.append)
    seconds = time.perf_counter() - started
    last = reports[-1]
    kept = ("final_val_loss", "final_val_bpb", "tokens", "compute")
    return {key: last[key] for key in kept} | {"seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-tokens", type=float, default=2e6, help="tokens read by the token-level run")
    parser.add_argument("--recipe", choices=("positions", "equal"), default="positions", help="patch.tokens_per_step")
    parser.add_argument("--tokenizer", choices=("bytes", "bpe"), default="bytes")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE tokens to learn (with --tokenizer bpe)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    model, data_tokens = (SMOKE_MODEL, SMOKE_DATA_TOKENS) if args.smoke else ("small", args.data_tokens)
    steps, warmup = (2, 1) if args.smoke else (30, 5)
    torch.set_num_threads(1)
    corpus = default_corpus(args.smoke)
    bpe = TokenizerConfig(kind="bpe", vocab_size=args.vocab_size) if args.tokenizer == "bpe" else None
    data = prepare_default_model_data(corpus, MODEL_PRESETS[model]["seq_len"], bpe)
    result: dict[str, Any] = {
        "corpus": Path(corpus).name, "threads": 1, "recipe": args.recipe, "tokenizer": data.tokenizer,
    }  # fmt: skip
    base = throughput(data, model, 1, args.recipe, steps, warmup)
    result["token_tokens_per_s"] = base
    for k in (2, 4, 8):
        rate = throughput(data, model, k, args.recipe, steps, warmup)
        result[f"patch_tokens_per_s_k{k}"] = rate
        result[f"patch_throughput_ratio_k{k}"] = rate / base
        print(f"K={k}: {rate:.0f} tokens/s, {rate / base:.2f}x the token phase ({base:.0f})", file=sys.stderr)
    patch = {"patch.K": 4, "patch.lambda": 2 / 3, "patch.tokens_per_step": args.recipe}
    token = trial(data, model, data_tokens, {})
    same_data = trial(data, model, data_tokens / 2, patch)
    same_compute = trial(data, model, data_tokens, patch)
    for name, run in (("token", token), ("patch_equal_data", same_data), ("patch_equal_compute", same_compute)):
        result[name] = run
        print(f"{name}: {run}", file=sys.stderr)
    result["cost_ratio_k4_l23"] = same_data["seconds"] / token["seconds"]
    result["data_ratio_equal_data"] = same_data["tokens"] / token["tokens"]
    result["val_loss_token"] = token["final_val_loss"]
    result["val_loss_patch_equal_data"] = same_data["final_val_loss"]
    result["val_loss_patch_equal_compute"] = same_compute["final_val_loss"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
