"""``effsweep results``: a sweep's trials, best first, as a table with the knobs' importances or as JSON lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.layout import SweepLayout, SweepRecord


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``results`` to the ``effsweep`` parser's subcommands."""
    results = commands.add_parser("results", help="trials of a sweep, best first, and which knobs mattered")
    results.add_argument("dir", type=Path, help="a sweep directory (effsweep run --output)")
    results.add_argument("--top", type=int, help="show only the best N trials")
    results.add_argument("--json", action="store_true", help="one JSON object per trial instead of a table")
    results.set_defaults(command=_results)


def _results(args: argparse.Namespace) -> int:
    from orchestrator.importance import format_importances, read_importances
    from orchestrator.results import format_table, read_results

    layout = SweepLayout(args.dir)
    record = SweepRecord.load(layout)
    results = read_results(layout.results_dir)
    if args.json:
        table = results.trials.head(args.top) if args.top else results.trials
        for row in table.to_dict(orient="records"):
            print(json.dumps(row, default=str))
    else:
        print(format_table(results.trials, record.knobs, args.top))
        importances = read_importances(layout.results_dir)
        if importances is not None:
            print("\n" + format_importances(importances))
    return 0
