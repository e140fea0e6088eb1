"""A spec's search space as what the searchers consume: conditional knobs, Optuna's define-by-run space, the grid.

See docs/spec.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")


@dataclass(frozen=True)
class Knob:
    """One searched key of the trial config and the distribution it is drawn from.

    ``values`` holds a ``choice``'s options; ``low``/``high`` bound the other
    kinds (inclusive); ``log`` samples an ``int`` on a log scale. ``when`` maps
    earlier knobs to the values under which this one is active.
    """

    name: str
    kind: Literal["choice", "uniform", "loguniform", "int"]
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, point: Mapping[str, Any]) -> bool:
        """Whether this knob is sampled, given the values drawn so far."""
        return all(point.get(name, _ABSENT) in allowed for name, allowed in self.when.items())

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound this knob: every choice, or both ends of a range."""
        if self.kind == "choice":
            return self.values
        if self.kind == "int":
            return (int(self.low), int(self.high))
        return (self.low, self.high)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")


_ABSENT = object()


class DefineByRunSpace:
    """An Optuna define-by-run space over knobs, conditional knobs included.

    A class rather than a closure, so that Tune can pickle the searcher into
    its experiment checkpoint.

    Example:
        >>> space = DefineByRunSpace([Knob("lr", "loguniform", low=1e-4, high=1e-2)])
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> space(trial)
        >>> 1e-4 <= trial.params["lr"] <= 1e-2
        True
    """

    def __init__(self, knobs: Sequence[Knob]) -> None:
        self.knobs = tuple(knobs)

    def __call__(self, trial: optuna.Trial) -> None:
        point: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.active(point):
                point[knob.name] = knob.suggest(trial)


def combinations(knobs: Sequence[Knob], values_of: Callable[[Knob], Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """Every point whose active knobs each take one of ``values_of(knob)``, in spec order."""

    def extend(index: int, point: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if index == len(knobs):
            yield dict(point)
            return
        knob = knobs[index]
        if not knob.active(point):
            yield from extend(index + 1, point)
            return
        for value in values_of(knob):
            point[knob.name] = value
            yield from extend(index + 1, point)
            del point[knob.name]

    yield from extend(0, {})


def grid_points(knobs: Sequence[Knob]) -> list[dict[str, Any]]:
    """All points of a grid over ``choice`` knobs, inactive conditional knobs left out."""
    return list(combinations(knobs, lambda knob: knob.values))
