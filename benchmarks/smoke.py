"""``--smoke``, which every benchmark script takes: its whole code path in seconds, for the benchmark tests.

A smoke run shrinks the sizes (the model to ``SMOKE_MODEL``; steps, trials,
documents, repeats), reads gensim's small corpus even where ``../shared`` has
Alpaca, writes nothing into the repository, and prints the full run's JSON
object last, with the same keys. Its figures measure nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SMOKE_MODEL = "tiny"


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a run of seconds at tiny sizes (on gensim's small corpus where text is read) that writes nothing "
        "into the repository: a check that the benchmark runs, not a measurement",
    )


@contextmanager
def output_path(default: Path, smoke: bool, given: Path | None = None) -> Iterator[Path]:
    """Where a benchmark writes: ``given``, else ``default``, except that a smoke run writes into a temporary folder."""
    if given is not None or not smoke:
        yield given or default
        return
    with tempfile.TemporaryDirectory(prefix="effsweep-smoke-") as tmp:
        yield Path(tmp) / default.name
