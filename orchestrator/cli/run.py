"""``effsweep run``: a sweep spec on local Ray or a cluster, followed on the console and summed up at the end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.options import add_address, add_console_flags, spec_from_args
from orchestrator.layout import SweepLayout

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``run`` to the ``effsweep`` parser's subcommands."""
    run = commands.add_parser("run", help="run a sweep spec on local Ray (or a cluster with --address)")
    run.add_argument("spec", type=Path, help="the sweep spec (YAML), or - to read it from standard input")
    add_address(run)
    run.add_argument("--output", type=Path, help="sweep directory (default: the spec's output_dir, else sweeps/NAME)")
    run.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, the spec, or SQLite in the sweep directory)",
    )
    run.add_argument("--storage", help="trials' results and checkpoints: a shared path or s3://BUCKET/PATH")
    add_console_flags(run)
    run.set_defaults(command=_run)


def _run(args: argparse.Namespace) -> int:
    return run_and_summarise(spec_from_args(args), args, args.tracking_uri)


def run_and_summarise(spec: SweepSpec, args: argparse.Namespace, tracking_uri: str | None) -> int:
    """Run the sweep with the console ``args`` ask for, then print its summary; 1 if it did not finish."""
    from orchestrator.cli.console import ProgressBar, sweep_console
    from orchestrator.results import CONFIG_PREFIX
    from orchestrator.sweep import run_sweep
    from trainables.loop import FINAL_BITS_PER_BYTE, OBJECTIVE

    log_file = SweepLayout(spec.output_dir.resolve()).log_file
    with sweep_console(log_file, quiet=args.quiet, verbose=args.verbose):
        outcome = run_sweep(
            spec, address=args.address, tracking_override=tracking_uri, progress=ProgressBar("uniform order"),
            log_to_driver=args.verbose, ray_dashboard=args.ray_dashboard,
        )  # fmt: skip
    root = outcome.layout.root
    counts = outcome.results.counts()
    print()
    print(f"Trials: {len(outcome.results.trials)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    best = outcome.results.best()
    if best is not None:
        bits = best.get(FINAL_BITS_PER_BYTE)
        per_byte = f" ({FINAL_BITS_PER_BYTE} {bits:.4f})" if bits is not None and bits == bits else ""
        print(f"Best trial {best['trial_id']}: {OBJECTIVE} {best[OBJECTIVE]:.4f}{per_byte}")
        print("  " + "  ".join(f"{k}={_value(best.get(CONFIG_PREFIX + k))}" for k in outcome.record.knobs))
    print(f"Results: {root / 'results' / 'trials.parquet'}, {root / 'results' / 'metrics.parquet'}")
    print(f"All trials: effsweep results {root}")
    print(f"MLflow UI:  effsweep ui {root}")
    if outcome.interrupted:
        print(f"The sweep was interrupted; continue it with: effsweep resume {root}", file=sys.stderr)
        return 1
    if best is None:
        print(f"effsweep: no trial reached {OBJECTIVE}", file=sys.stderr)
        return 1
    return 0


def _value(value: object) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
