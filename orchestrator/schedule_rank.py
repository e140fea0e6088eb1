"""Ranking a spec's learning-rate schedules by a fitted law's predicted final loss, before any training.

Every schedule the spec's space can draw (its ``peak_lr`` and ``schedule.*``
knobs: each choice, and ``levels`` points across each range) is turned into
the rates its trials would plan, and the law (``orchestrator.laws``) predicts
the loss after the last of them. The other knobs are held at one value each
(a choice's first, a range's middle), except those that decide whether a
schedule knob is searched at all (``when:``), whose every choice is tried.
Step rules that choose their own rates plan none and are left out. See
docs/schedules.md ("Ranking schedules before training").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.curves import LawFit
from orchestrator.spec import SweepSpec, load_spec
from search_spaces.build import Knob, combinations
from trainables.config import TrialConfig


@dataclass(frozen=True)
class RankedSchedule:
    """One candidate: its knob values, the law's final loss for it, and whether its peak lies outside the fit's."""

    point: dict[str, Any]
    predicted_final: float
    beyond_fitted_peaks: bool


def is_schedule_knob(name: str) -> bool:
    return name == "peak_lr" or name.startswith("schedule.")


def rank_schedules(spec: SweepSpec, fit: LawFit, levels: int = 3) -> list[RankedSchedule]:
    """The spec's schedules, lowest predicted final loss first (see the module docstring)."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2 (both ends of each range), got {levels}")
    gating = {name for knob in spec.knobs if is_schedule_knob(knob.name) for name in knob.when}
    peaks = fit.fitted_peak_range()
    fixed = spec.fixed_config()
    ranked = []
    for point in combinations(spec.knobs, lambda knob: _values(knob, levels, knob.name in gating)):
        lrs = TrialConfig.from_flat(fixed | point).planned_lrs()
        if lrs is None:
            continue
        final = float(fit.predict(lrs, np.array([len(lrs)]))[0])
        beyond = peaks is not None and not peaks[0] <= float(lrs.max()) <= peaks[1]
        ranked.append(RankedSchedule(point, final, beyond))
    if not ranked:
        raise ValueError(f"{spec.name}: no schedule to rank: every step rule in the space chooses its own rates")
    return sorted(ranked, key=lambda r: r.predicted_final)


def _values(knob: Knob, levels: int, every_choice: bool) -> Sequence[Any]:
    if knob.kind == "choice":
        return knob.values if is_schedule_knob(knob.name) or every_choice else knob.values[:1]
    if not is_schedule_knob(knob.name):
        middle = math.sqrt(knob.low * knob.high) if knob.kind == "loguniform" else (knob.low + knob.high) / 2
        return [round(middle) if knob.kind == "int" else middle]
    if knob.kind == "int":
        return sorted({round(float(v)) for v in np.linspace(knob.low, knob.high, levels)})
    spaced = np.geomspace if knob.kind == "loguniform" else np.linspace
    return [float(f"{v:.6g}") for v in spaced(knob.low, knob.high, levels)]


def restricted_spec(spec_path: Path, top: Sequence[RankedSchedule]) -> dict[str, Any]:
    """The spec at ``spec_path`` with each schedule knob narrowed to a choice of the values ``top`` uses.

    Its grid over those knobs holds every point of ``top`` (and may hold mixtures of them). A knob's
    ``when`` keeps only the values still chosen; a knob none of ``top`` uses is dropped.
    """
    raw = yaml.safe_load(Path(spec_path).read_text())
    raw["name"] = f"{raw['name']}_top{len(top)}"
    search = raw["search"]
    chosen = {
        name: list(dict.fromkeys(r.point[name] for r in top if name in r.point))
        for name in search
        if is_schedule_knob(name)
    }
    for name, values in chosen.items():
        if not values:
            del search[name]
            continue
        when = {
            on: [v for v in (allowed if isinstance(allowed, list) else [allowed]) if v in chosen.get(on, [v])]
            for on, allowed in search[name].get("when", {}).items()
        }
        search[name] = {"choice": values, **({"when": when} if when else {})}
    return raw


def write_restricted_spec(spec_path: Path, top: Sequence[RankedSchedule], out: Path) -> SweepSpec:
    """Write ``restricted_spec`` to ``out`` and load it back, so what is written is a valid spec."""
    out.write_text(yaml.safe_dump(restricted_spec(spec_path, top), sort_keys=False))
    return load_spec(out)
