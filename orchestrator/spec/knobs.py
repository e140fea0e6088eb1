"""The ``train`` and ``search`` sections: fixed trial keys, and knobs with their distributions and ``when:``.

See docs/spec.md.
"""

from __future__ import annotations

import math
import pkgutil
from collections.abc import Mapping
from typing import Any

from orchestrator.spec.errors import show
from orchestrator.spec.train_keys import TRAIN_KEYS
from search_spaces.build import DISTRIBUTIONS, Knob
from trainables.config import SWEEP_LEVEL_SECTIONS, TrialField, flatten
from trainables.schedules import SCHEDULES, schedule_class

# The distributions a knob of each kind of trial field can take.
# The section whose settings depend on which member its ``name`` picks.
_MEMBERED = "schedule"

_COMPATIBLE = {"categorical": ("choice",), "int": ("choice", "int"), "float": ("choice", "uniform", "loguniform")}


def train_values(raw: Any, fields: Mapping[str, TrialField], problems: list[str]) -> dict[str, Any]:
    """The trial keys the ``train`` section fixes, its ``TRAIN_KEYS`` read into the keys they stand for."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"train: must be a mapping of trial settings, got {show(raw)}")
        return {}
    values = {}
    for key, value in flatten(raw).items():
        if key in TRAIN_KEYS:
            try:
                values.update(pkgutil.resolve_name(TRAIN_KEYS[key])(value))
            except ValueError as exc:
                problems.append(f"train.{key}: {exc}")
            continue
        problem = _key_problem(key, fields)
        if problem:
            problems.append(f"train.{key}: {problem}")
        else:
            values[key] = value
    return values


def parse_knobs(raw: Any, fields: Mapping[str, TrialField], fixed: set[str], problems: list[str]) -> list[Knob]:
    """The ``search`` section's knobs, in spec order; ``fixed`` are the keys ``train`` sets."""
    if raw is None:
        problems.append("search: required section is missing (a sweep needs at least one knob)")
        return []
    if not isinstance(raw, Mapping) or not raw:
        problems.append("search: must map knob names to distributions, e.g. peak_lr: {loguniform: [1e-4, 1e-2]}")
        return []
    knobs: list[Knob] = []
    for name, spec in raw.items():
        path = f"search.{name}"
        problem = _key_problem(str(name), fields)
        if problem:
            problems.append(f"{path}: {problem}")
            continue
        if name in fixed:
            problems.append(f"{path}: also fixed under train.{name}; keep one of the two")
            continue
        knob = _knob(str(name), spec, fields[name], {k.name: k for k in knobs}, problems)
        if knob is not None:
            knobs.append(knob)
    return knobs


def _key_problem(key: str, fields: Mapping[str, TrialField]) -> str | None:
    section = key.split(".")[0]
    if section in SWEEP_LEVEL_SECTIONS:
        return f"fixed for the whole sweep; set it under {section}:"
    if key not in fields:
        known = ", ".join(k for k in fields if k.split(".")[0] not in SWEEP_LEVEL_SECTIONS)
        return f"unknown trial setting; known: {known}"
    return None


def _knob(name: str, spec: Any, field: TrialField, earlier: Mapping[str, Knob], problems: list[str]) -> Knob | None:
    path = f"search.{name}"
    if not isinstance(spec, Mapping):
        problems.append(f"{path}: must be a distribution such as {{choice: [...]}} or {{uniform: [low, high]}}")
        return None
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    unknown = [str(k) for k in spec if k not in (*DISTRIBUTIONS, "when", "log")]
    if unknown:
        problems.append(
            f"{path}: unknown key(s) {', '.join(unknown)}; use one of {', '.join(DISTRIBUTIONS)}, when, log"
        )
    if len(kinds) != 1:
        got = ", ".join(kinds) or "none"
        problems.append(f"{path}: give exactly one distribution of {', '.join(DISTRIBUTIONS)} (got {got})")
        return None
    kind = kinds[0]
    before = len(problems)
    if spec.get("log") is not None and (kind != "int" or not isinstance(spec["log"], bool)):
        problems.append(f"{path}.log: only an int knob takes log, as true or false")
    when = _when(path, spec.get("when"), earlier, problems)
    if kind not in _COMPATIBLE[field.kind]:
        options = " or ".join(_COMPATIBLE[field.kind])
        problems.append(f"{path}: takes {_kind_words(field)}; use {options} (got {kind})")
        return None
    if kind == "choice":
        values = _choices(path, spec[kind], field, problems)
        return Knob(name, "choice", values=values, when=when) if len(problems) == before else None
    bounds = _bounds(path, spec[kind], kind, problems)
    if bounds is None or len(problems) != before:
        return None
    return Knob(name, kind, low=bounds[0], high=bounds[1], log=bool(spec.get("log")), when=when)


def _kind_words(field: TrialField) -> str:
    if field.kind == "categorical":
        return "one of " + ", ".join(map(str, field.choices))
    return "integers" if field.kind == "int" else "real numbers"


def _choices(path: str, raw: Any, field: TrialField, problems: list[str]) -> tuple[Any, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{path}.choice: must be a non-empty list of values")
        return ()
    values = []
    for value in raw:
        coerced = _coerce(value, field)
        if coerced is None:
            problems.append(f"{path}.choice: {show(value)} is not {_kind_words(field)}")
        else:
            values.append(coerced)
    if len(set(map(repr, values))) != len(values):
        problems.append(f"{path}.choice: lists a value more than once")
    return tuple(values)


def _coerce(value: Any, field: TrialField) -> Any:
    """``value`` as the field's type, or None when it is not one. YAML reads ``3e-4`` as a string."""
    if field.kind == "categorical":
        return value if value in field.choices else None
    number = _number(value)
    if number is None:
        return None
    if field.kind == "int":
        return int(number) if float(number).is_integer() else None
    return float(number)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _bounds(path: str, raw: Any, kind: str, problems: list[str]) -> tuple[float, float] | None:
    if not isinstance(raw, list) or len(raw) != 2:
        problems.append(f"{path}: must be [low, high]")
        return None
    low, high = (_number(v) for v in raw)
    if low is None or high is None:
        problems.append(f"{path}: low and high must be finite numbers (got {raw})")
        return None
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        problems.append(f"{path}: low and high must be integers (got {raw})")
        return None
    if not low < high:
        problems.append(f"{path}: low must be below high (got {low:g} and {high:g})")
        return None
    if kind == "loguniform" and low <= 0:
        problems.append(f"{path}: low must be above 0 for a log scale (got {low:g})")
        return None
    return float(low), float(high)


def _when(path: str, raw: Any, earlier: Mapping[str, Knob], problems: list[str]) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        problems.append(f"{path}.when: must map earlier knobs to the value(s) that activate this one")
        return {}
    when = {}
    for name, allowed in raw.items():
        where = f"{path}.when.{name}"
        parent = earlier.get(name)
        if parent is None:
            problems.append(f"{where}: must name a choice knob listed earlier under search")
            continue
        if parent.kind != "choice":
            problems.append(f"{where}: can only test a choice knob ({name} is {parent.kind})")
            continue
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        missing = [v for v in values if v not in parent.values]
        if missing:
            problems.append(f"{where}: {', '.join(map(show, missing))} is not among {name}'s choices")
            continue
        when[name] = values
    return when


def member_settings_as_knobs(
    train: Mapping[str, Any], knobs: list[Knob], problems: list[str]
) -> tuple[dict[str, Any], list[Knob]]:
    """``train`` values of one schedule family's settings, where the family is searched: each applies where read.

    With ``schedule.name`` a knob, a fixed ``schedule.step_frac`` becomes a one-value knob active only for the
    families that read it; a setting none of the searched families reads is an error naming them.
    """
    searched = {knob.name: knob for knob in knobs}
    name_knob = searched.get(f"{_MEMBERED}.name")
    if name_knob is None or name_knob.kind != "choice":
        return dict(train), knobs
    families = [name for name in name_knob.values if name in SCHEDULES]
    kept, added = {}, []
    for key, value in train.items():
        section, _, setting = key.partition(".")
        if section != _MEMBERED:
            kept[key] = value
            continue
        readers = tuple(name for name in families if setting.split(".")[0] in schedule_class(name).model_fields)
        if not readers:
            problems.append(f"train.{key}: not a setting of {', '.join(families)}")
        elif len(readers) == len(families):
            kept[key] = value
        else:
            added.append(Knob(key, "choice", (value,), when={name_knob.name: readers}))
    return kept, knobs + added
