"""What several commands share: the ``--address`` and console flags, and the spec a command names with its overrides."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


def add_address(command: argparse.ArgumentParser) -> None:
    """The cluster to join (or the local Ray to start), for the commands that run trials."""
    command.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    command.add_argument(
        "--ray-dashboard",
        action="store_true",
        help="start Ray's dashboard with the local Ray (http://127.0.0.1:8265); off by default, as it slows the "
        "start of a sweep; a cluster joined with --address keeps its own",
    )


def add_console_flags(command: argparse.ArgumentParser) -> None:
    """How much a running sweep shows, for the commands that run one."""
    command.add_argument("--quiet", action="store_true", help="no line per trial event, only the summary")
    command.add_argument(
        "--verbose",
        action="store_true",
        help="also a line per trial report, and the logs and warnings of Ray, Tune, MLflow, Optuna and Python, "
        "which otherwise go only to the sweep's effsweep.log",
    )


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The spec ``args.spec`` names, with the ``--output`` and ``--storage`` the command was given, if any."""
    from orchestrator.spec import load_spec

    spec = load_spec(args.spec)
    if getattr(args, "output", None):
        spec = dataclasses.replace(spec, output_dir=args.output)
    if getattr(args, "storage", None):
        spec = dataclasses.replace(spec, storage=args.storage)
    return spec
