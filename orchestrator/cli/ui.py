"""``effsweep ui``: the MLflow UI served for one sweep's tracking store."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.layout import SweepLayout


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``ui`` to the ``effsweep`` parser's subcommands."""
    ui = commands.add_parser("ui", help="serve the MLflow UI for a sweep")
    ui.add_argument("dir", type=Path, help="a sweep directory (effsweep run --output)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, help="default: a free port")
    ui.set_defaults(command=_ui)


def _ui(args: argparse.Namespace) -> int:
    from orchestrator.ui import serve_ui

    return serve_ui(SweepLayout(args.dir), host=args.host, port=args.port)
