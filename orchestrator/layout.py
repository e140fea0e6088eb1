"""Where a sweep keeps its files, and ``sweep.json``, the record that ties them together.

```
DIR/
  spec.yaml        the spec as run
  sweep.json       spec hash, tracking URI, MLflow experiment and parent run
  mlflow.db        the default MLflow store (SQLite)
  mlartifacts/     its artifacts
  tune/<name>/     Ray Tune's experiment directory (trials, checkpoints, searcher and scheduler state)
  tune/_data/      the token file the trials map (a hard link to the cached one where it can be)
  tracking/        the journal of MLflow writes, replayed after a crash (orchestrator.run_writer)
  results/         trials.parquet, metrics.parquet, plots
  selection/       selection orders, the corpus's 2-D PCA plane, subset pictures
  effsweep.log     the driver's logs and warnings from Ray, Tune, MLflow, Optuna and Python
```
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


class SweepDirError(Exception):
    """A sweep directory that cannot be used as asked."""


@dataclass(frozen=True)
class SweepLayout:
    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def record_file(self) -> Path:
        return self.root / "sweep.json"

    @property
    def tune_dir(self) -> Path:
        return self.root / "tune"

    @property
    def tracking_journal(self) -> Path:
        return self.root / "tracking" / "journal.jsonl"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def selection_dir(self) -> Path:
        return self.root / "selection"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def log_file(self) -> Path:
        return self.root / "effsweep.log"

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


@dataclass(frozen=True)
class SweepRecord:
    """What identifies a sweep and where it logs; saved as ``sweep.json``."""

    name: str
    spec_hash: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    knobs: list[str] = field(default_factory=list)
    storage: str | None = None  # where Tune's experiment lives, when not in the sweep directory

    def save(self, layout: SweepLayout) -> None:
        partial = layout.record_file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(layout.record_file)

    @classmethod
    def load(cls, layout: SweepLayout) -> SweepRecord:
        try:
            raw = json.loads(layout.record_file.read_text())
        except FileNotFoundError:
            raise SweepDirError(f"{layout.root}: not a sweep directory (no sweep.json)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepDirError(f"{layout.record_file}: unreadable ({exc})") from None
        try:
            return cls(**raw)
        except TypeError as exc:
            raise SweepDirError(f"{layout.record_file}: not a sweep record ({exc})") from None

    @classmethod
    def find(cls, layout: SweepLayout) -> SweepRecord | None:
        """The record if the directory already holds a sweep."""
        return cls.load(layout) if layout.record_file.exists() else None
