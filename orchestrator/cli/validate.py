"""``effsweep validate``: a spec checked without running it, every problem listed (by ``main``, exit code 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.options import spec_from_args


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``validate`` to the ``effsweep`` parser's subcommands."""
    validate = commands.add_parser("validate", help="check a spec and list every problem")
    validate.add_argument("spec", type=Path, help="the sweep spec (YAML) to check")
    validate.set_defaults(command=_validate)


def _validate(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    print(f"{args.spec}: ok ({spec.trials} trials of {', '.join(k.name for k in spec.knobs)})")
    return 0
