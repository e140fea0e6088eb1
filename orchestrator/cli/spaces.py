"""``effsweep spaces``: the ready sweep specs that ship with effsweep, each with its size and description."""

from __future__ import annotations

import argparse
import os

from search_spaces.catalog import description, ready_specs


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``spaces`` to the ``effsweep`` parser's subcommands."""
    spaces = commands.add_parser("spaces", help="list the ready sweep specs that ship with effsweep")
    spaces.set_defaults(command=_spaces)


def _spaces(args: argparse.Namespace) -> int:
    from orchestrator.spec import load_spec

    for path in ready_specs():
        spec = load_spec(path)
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
        print(f"{shown}  ({spec.trials} trials, {len(spec.knobs)} knobs): {description(path)}")
    return 0
