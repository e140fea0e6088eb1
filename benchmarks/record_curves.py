"""Record a curve bank: 48 configurations of a sweep space, each run to the end.

A real sweep (a spec's space, random search, no pruning, the ``tiny`` model)
on Alpaca (``../shared/data/alpaca_data.json``); every report of every trial
goes to a Parquet bank with the trial's config, for ``benchmarks/pruning.py``
to replay. Three banks are committed:

- ``curves/bank.parquet``: ``search_spaces/joint.yaml`` (every knob and step
  rule), 1M tokens of compute per trial, a report every 25 steps (about 15
  minutes): ``.venv/bin/python benchmarks/record_curves.py``;
- ``curves/planned.parquet``: ``search_spaces/planned_schedules.yaml`` (AdamW
  on planned schedules, what the Multi-Power Law models), 3M tokens, a
  report every 50 steps, so that 20% of a trial lies past the fresh model's
  transient (about 40 minutes):
  ``.venv/bin/python benchmarks/record_curves.py --spec search_spaces/planned_schedules.yaml
  --out benchmarks/curves/planned.parquet --compute 3000000 --eval-every 50``.
- ``curves/planned_6m.parquet``: the same 48 configurations at 6M tokens, a
  report every 100 steps, so that 5% of a trial lies past the transient
  too (about 50 minutes): the same command with ``--out
  benchmarks/curves/planned_6m.parquet --compute 6000000 --eval-every 100``.

The last line printed is one JSON object. ``--smoke`` records ``SMOKE_TRIALS``
trials of ``SMOKE_COMPUTE`` each, on gensim's small corpus, into a temporary
file unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from corpora import ALPACA, SMALL_CORPUS
from smoke import add_smoke_flag, output_path

from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep

HERE = Path(__file__).resolve().parent
SMOKE_TRIALS = 2
SMOKE_COMPUTE = 200_000  # about the least every extreme of joint.yaml accepts (10 steps a phase) on the tiny model
KEPT = ["step", "tokens", "compute", "val_loss", "train_loss", "lr", "lr_sum", "phase", "patch_phase", "final_val_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=HERE.parent / "search_spaces" / "joint.yaml")
    parser.add_argument("--out", type=Path, help="the bank (default benchmarks/curves/bank.parquet)")
    parser.add_argument("--compute", type=float, default=1_000_000, help="compute per trial")
    parser.add_argument("--eval-every", type=int, default=25, help="steps between reports")
    parser.add_argument("--trials", type=int, default=48)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.compute = SMOKE_TRIALS, SMOKE_COMPUTE
    elif not ALPACA.is_file():
        sys.exit(f"{ALPACA} is absent; the bank in {args.out or HERE / 'curves' / 'bank.parquet'} stays as it is")
    raw = yaml.safe_load(args.spec.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        raw.update(
            name="bank", output_dir=str(Path(tmp) / "bank"), model={"size": "tiny"}, budget={"compute": args.compute},
            searcher={"name": "random", "seed": 7}, scheduler="fifo", trials=args.trials,
        )  # fmt: skip
        raw["train"] = {**raw.get("train", {}), "eval_every": args.eval_every}
        corpus = SMALL_CORPUS if args.smoke else str(ALPACA)
        raw["data"] = {**raw["data"], "corpus": corpus, "eval_tokens": 8192}
        outcome = run_sweep(parse_spec(raw))
        trials = outcome.results.trials.set_index("trial_id")
        metrics = outcome.results.metrics
    configs = {
        tid: json.dumps({k.removeprefix("config."): v for k, v in row.items() if k.startswith("config.") and v == v})
        for tid, row in trials.iterrows()
    }
    bank = metrics[["trial_id", *[c for c in KEPT if c in metrics.columns]]].rename(columns={"trial_id": "trial"})
    bank["config"] = bank["trial"].map(configs)
    statuses = trials["status"].value_counts().to_dict()
    with output_path(HERE / "curves" / "bank.parquet", args.smoke, args.out) as out:
        out.parent.mkdir(parents=True, exist_ok=True)
        bank.to_parquet(out, index=False)
        summary = {"bank": str(out), "trials": bank["trial"].nunique(), "reports": len(bank), "statuses": statuses}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
