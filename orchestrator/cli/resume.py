"""``effsweep resume``: an interrupted sweep continued in its directory, with the spec and storage it recorded."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from orchestrator.cli.options import add_address, add_console_flags
from orchestrator.cli.run import run_and_summarise
from orchestrator.layout import SweepDirError, SweepLayout, SweepRecord


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``resume`` to the ``effsweep`` parser's subcommands."""
    resume = commands.add_parser(
        "resume",
        help="continue an interrupted sweep from its directory",
        description="Reads DIR/spec.yaml and continues the sweep in DIR: finished trials stay finished, "
        "unfinished and errored ones run again (from their last checkpoint where they have one), into the "
        "same MLflow runs.",
    )
    resume.add_argument("dir", type=Path, help="the sweep directory, as effsweep run printed it")
    add_address(resume)
    resume.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the sweep used)")
    add_console_flags(resume)
    resume.set_defaults(command=_resume)


def _resume(args: argparse.Namespace) -> int:
    from orchestrator.spec import load_spec

    layout = SweepLayout(args.dir.resolve())
    record = SweepRecord.find(layout)
    if record is None or not layout.spec_file.is_file():
        raise SweepDirError(
            f"{args.dir}: not a sweep directory (no sweep.json and spec.yaml); start it with effsweep run"
        )
    spec = dataclasses.replace(load_spec(layout.spec_file), output_dir=layout.root, storage=record.storage)
    return run_and_summarise(spec, args, args.tracking_uri or record.tracking_uri)
