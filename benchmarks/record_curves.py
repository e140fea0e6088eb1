"""Record the curve bank: 48 configurations of the joint space, each run to the end.

A real sweep (``search_spaces/joint.yaml``'s space, random search, no
pruning, the ``tiny`` model, 1M tokens of compute per trial, a report every
25 steps) on Alpaca (``../shared/data/alpaca_data.json``); every report of
every trial goes to ``benchmarks/curves/bank.parquet`` with the trial's
config, for ``benchmarks/pruning.py`` to replay.

Run: ``.venv/bin/python benchmarks/record_curves.py`` (about 15 minutes).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml

from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep

HERE = Path(__file__).resolve().parent
ALPACA = HERE.parents[1] / "shared" / "data" / "alpaca_data.json"
BANK = HERE / "curves" / "bank.parquet"
KEPT = ["step", "tokens", "compute", "val_loss", "train_loss", "lr", "lr_sum", "phase", "patch_phase", "final_val_loss"]


def main() -> None:
    if not ALPACA.is_file():
        sys.exit(f"{ALPACA} is absent; the bank in {BANK} stays as it is")
    raw = yaml.safe_load((HERE.parent / "search_spaces" / "joint.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        raw.update(
            name="bank", output_dir=str(Path(tmp) / "bank"), model={"size": "tiny"}, budget={"compute": 1_000_000},
            train={"eval_every": 25}, searcher={"name": "random", "seed": 7}, scheduler="fifo", trials=48,
        )  # fmt: skip
        raw["data"] = {**raw["data"], "corpus": str(ALPACA), "eval_tokens": 8192}
        outcome = run_sweep(parse_spec(raw))
        trials = outcome.results.trials.set_index("trial_id")
        metrics = outcome.results.metrics
    configs = {
        tid: json.dumps({k.removeprefix("config."): v for k, v in row.items() if k.startswith("config.") and v == v})
        for tid, row in trials.iterrows()
    }
    bank = metrics[["trial_id", *[c for c in KEPT if c in metrics.columns]]].rename(columns={"trial_id": "trial"})
    bank["config"] = bank["trial"].map(configs)
    BANK.parent.mkdir(parents=True, exist_ok=True)
    bank.to_parquet(BANK, index=False)
    print(f"{BANK}: {bank['trial'].nunique()} trials, {len(bank)} reports; {trials['status'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
