"""The ``effsweep`` command: the top-level parser, ``--version``, dispatch to a subcommand, and exit codes.

Each command group is a module of this package whose ``add_commands`` adds its subcommands, each with the
handler it runs. Exit codes: 0 success, 1 a run that could not finish (bad corpus, sweep directory conflict,
no trial completed), 2 a spec or usage problem, 141 the reader of the output went away (as a process killed
by SIGPIPE reports it).

A command module imports what its command runs inside the command's handler, so that ``effsweep --help``
and the light commands (``validate``, ``results``, ``jobs``) do not import Ray Tune, PyTorch and MLflow
(about 8 s of CPU on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from orchestrator.cli import cbs, cluster, law, results, resume, run, select, spaces, ui, validate

# In the order ``effsweep --help`` lists their commands.
COMMAND_GROUPS = (run, cluster, resume, cbs, validate, results, select, law, spaces, ui)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _command(args)
        sys.stdout.flush()  # here, so that a closed pipe is noticed while it can still be handled
    except BrokenPipeError:
        # As Python's documentation advises: no more output can be read, and the interpreter's own
        # flush at exit would fail again on the old stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


def _command(args: argparse.Namespace) -> int:
    """Run the chosen command, turning the errors a user can fix into a message and an exit code."""
    try:
        return args.command(args)
    except Exception as exc:
        # Told apart here, not by except clauses: their modules are imported only when an error needs them.
        from orchestrator.curves import CurveError
        from orchestrator.layout import SweepDirError
        from orchestrator.spec import SpecError
        from trainables.data.corpus import CorpusError

        if isinstance(exc, SpecError):
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
        if isinstance(exc, (CorpusError, CurveError, SweepDirError, FileNotFoundError)):
            print(f"effsweep: {exc}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effsweep", description="Joint sweeps of training-efficiency knobs on Ray Tune."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def _version() -> str:
    try:
        return version("effsweep")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"
