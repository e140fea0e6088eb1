"""The ``mpl`` scheduler's spec section, and ``train: schedule.mpl_fit`` read into the law it names.

See docs/mpl.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from orchestrator.curves import CurveError
from orchestrator.mpl.fit import read_fit, read_law
from orchestrator.mpl.pruner import DECISION_FRACTIONS, MPLPruner
from orchestrator.spec import SchedulerSection, SpecContext
from orchestrator.spec.errors import show

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


class MPLSettings(SchedulerSection):
    """``scheduler: mpl``: stop the trials the Multi-Power Law predicts will not win (``MPLPruner``)."""

    name: Literal["mpl"] = "mpl"
    hooks: ClassVar[str | None] = "orchestrator.mpl.hooks:PredictionHooks"
    fractions: list[float] = Field(list(DECISION_FRACTIONS), min_length=1, description="decision points")
    margin: float = Field(0.0, ge=0, description="how much worse a trial's optimistic prediction must be")
    z: float = Field(1.64, gt=0, description="prediction interval half-width in standard errors")
    min_completed: int = Field(2, ge=1, description="trials to finish before any is stopped")
    prior: str | None = Field(
        None, description="an earlier sweep's folder or an 'effsweep mpl fit --json' file, to judge from the start"
    )

    @field_validator("fractions")
    @classmethod
    def _inside_the_run(cls, fractions: list[float]) -> list[float]:
        outside = [f for f in fractions if not 0 < f < 1]
        if outside:
            raise ValueError(f"decision points are shares of a trial's budget, in (0, 1); got {outside}")
        return fractions

    def check(self, context: SpecContext, problems: list[str]) -> None:
        """A prior must be a fit with one L0 for all its curves."""
        if self.prior is None:
            return
        try:
            fit = read_fit(Path(self.prior))
        except CurveError as exc:
            problems.append(f"scheduler.prior: {exc}")
            return
        if "L0" not in fit.shared:
            problems.append(f"scheduler.prior: {self.prior} fits L0 per curve; a prior needs one L0 for all")

    def build(self, spec: SweepSpec, sweep_dir: Path) -> MPLPruner:
        return MPLPruner(
            sweep_dir, fractions=tuple(self.fractions), margin=self.margin, z=self.z,
            min_completed=self.min_completed, prior=read_fit(Path(self.prior)) if self.prior else None,
        )  # fmt: skip


def law_values(path: Any) -> dict[str, float]:
    """``schedule.mpl_fit``: the trial keys of the law an ``mpl_optimal`` schedule optimises, read from ``path``.

    Raises ``ValueError`` (a ``CurveError`` from the file) when ``path`` holds no such law.
    """
    if not isinstance(path, str):
        raise ValueError(f"must be the path of an MPL fit file or sweep folder, got {show(path)}")
    return {f"schedule.mpl_law.{k}": v for k, v in read_law(Path(path)).as_dict().items()}
