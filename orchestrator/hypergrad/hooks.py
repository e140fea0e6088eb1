"""What the ``hypergrad`` searcher adds to a sweep: its own trainable and, at the end, its chains' report.

Each trial is one meta-iteration (``trainables.hypergrad.trial``), and the sweep's parent run gets every
chain's losses and meta-gradient norms and the learned schedules (``orchestrator.hypergrad.report``).
See ``docs/hypergrad.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.hypergrad.report import report_chains
from orchestrator.sweep_hooks import SweepEnd, SweepHooks
from trainables.data.prepare import SweepData
from trainables.hypergrad.trial import hypergrad_trial


class HypergradHooks(SweepHooks):
    """Meta-iterations as trials; the chains reported on the parent run."""

    def trial_function(self) -> Callable[[dict[str, Any], SweepData], None]:
        return hypergrad_trial

    def sweep_artifacts(self, end: SweepEnd) -> list[Path]:
        return report_chains(end.results, end.spec.model, end.client, end.record.parent_run_id, end.layout.root)
