"""``effsweep cbs``: the critical batch size, from steps to a target loss at several batch sizes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.cli.options import add_address, spec_from_args


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``cbs`` to the ``effsweep`` parser's subcommands."""
    cbs = commands.add_parser(
        "cbs",
        help="find the critical batch size: steps to a target loss against batch size",
        description="Runs the spec's trial at several batch sizes to a target validation loss, refines around "
        "the knee and fits S(b) = S_min (1 + B_crit / b); prints a table and one JSON object last.",
    )
    cbs.add_argument("spec", type=Path, help="a sweep spec (YAML): its trial is run, its search space ignored")
    cbs.add_argument("--target", type=float, help="target validation loss (default: a pilot run picks it)")
    cbs.add_argument("--sizes", help="comma-separated batch sizes of the first round (default: powers of two)")
    cbs.add_argument("--output", type=Path, help="study directory (default: the spec's output_dir)")
    add_address(cbs)
    cbs.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON object to OUT")
    cbs.add_argument("--write-to", type=Path, metavar="SPEC", help="write the spec with the found batch size")
    cbs.set_defaults(command=_cbs)


def _cbs(args: argparse.Namespace) -> int:
    from orchestrator.cbs.study import UnreachableTarget, run_batch_study, write_batch_size

    spec = spec_from_args(args)
    try:
        sizes = [int(b) for b in args.sizes.split(",")] if args.sizes else None
    except ValueError:
        print(f"effsweep cbs: --sizes must be comma-separated integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    try:
        study = run_batch_study(
            spec, target=args.target, sizes=sizes, address=args.address, ray_dashboard=args.ray_dashboard
        )
    except UnreachableTarget as exc:
        print(f"effsweep cbs: {exc}", file=sys.stderr)
        return 1
    print(f"target validation loss {study.target:.4f}")
    print(f"{'batch':>6} {'reached':>8} {'steps':>9} {'examples':>10} {'gns':>8} {'outpaced':>9} {'fitted':>7}")
    for row in study.points.itertuples():
        print(f"{row.batch_size:>6} {row.reached!s:>8} {row.steps:>9.1f} {row.examples:>10.0f} {row.gns:>8.1f} "
              f"{row.outpaced!s:>9} {row.fitted!s:>7}")  # fmt: skip
    fit = study.fit
    print(f"B_crit {fit.b_crit:.1f} (95% {fit.interval[0]:.1f} to {fit.interval[1]:.1f}), S_min {fit.s_min:.1f}, "
          f"E_min {fit.e_min:.0f}" + (f", b* {study.b_star:.1f}" if study.b_star else ""))  # fmt: skip
    if args.write_to:
        write_batch_size(args.spec, max(1, round(fit.b_crit)), args.write_to)
        print(f"{args.write_to}: batch_size {max(1, round(fit.b_crit))}")
    text = json.dumps(study.to_json())
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0
