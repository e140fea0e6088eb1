"""Learning-rate schedules: a registry of families, each a model of the settings it reads.

``SCHEDULES`` maps a family's name (``schedule.name``) to its class or its
``"module:Class"`` path, imported the first time a trial uses it; a new family
is one module and one ``register_schedule`` call. See docs/schedules.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from trainables.registry import Registry
from trainables.schedules.base import Schedule

__all__ = ["SCHEDULES", "Schedule", "parse_schedule", "register_schedule", "schedule_class"]

DEFAULT_SCHEDULE = "constant"

SCHEDULES: Registry[Schedule] = Registry(
    "schedule",
    Schedule,
    {
        "constant": "trainables.schedules.constant:ConstantSchedule",
        "cosine": "trainables.schedules.cosine:CosineSchedule",
        "wsd": "trainables.schedules.wsd:WSDSchedule",
        "two_step": "trainables.schedules.two_step:TwoStepSchedule",
        "power": "trainables.schedules.power:PowerSchedule",
        "inverse_power": "trainables.schedules.inverse_power:InversePowerSchedule",
        "one_cycle": "trainables.schedules.one_cycle:OneCycleSchedule",
        "explore_converge": "trainables.schedules.explore_converge:ExploreConvergeSchedule",
        "mpl_optimal": "trainables.schedules.mpl_optimal:MPLOptimalSchedule",
    },
)


def register_schedule(name: str, implementation: str | type[Schedule]) -> None:
    """Add the family ``name``: a ``Schedule`` subclass, or its ``"module:Class"`` path (imported on first use).

    Its ``name`` field must be ``Literal[name]``. Trials in other processes see it when the
    registering module is named in ``EFFSWEEP_PLUGINS`` (``trainables.registry``).
    """
    SCHEDULES.register(name, implementation)


def schedule_class(name: str) -> type[Schedule]:
    """The family registered as ``name``; an unknown name is an error listing the known ones."""
    return SCHEDULES.load(name)


def parse_schedule(settings: Mapping[str, Any] | Schedule) -> Schedule:
    """The family ``settings["name"]`` names (``constant`` without one), validated with the rest of ``settings``.

    A setting the family does not read is an error at that setting: ``not a setting of <family>``.

    Example:
        >>> parse_schedule({"name": "cosine", "min_lr_frac": 0.0}).min_lr_frac
        0.0
    """
    if isinstance(settings, Schedule):
        return settings
    if not isinstance(settings, Mapping):
        raise ValueError(f"must be a mapping of schedule settings, got {settings!r}")
    name = settings.get("name", DEFAULT_SCHEDULE)
    if not isinstance(name, str) or name not in SCHEDULES:
        raise _invalid([("name", name, SCHEDULES.unknown(name))])
    family = schedule_class(name)
    strays = [key for key in settings if key not in family.model_fields]
    if strays:
        raise _invalid([(key, settings[key], f"not a setting of {name}") for key in strays])
    return family.model_validate(settings)


def _invalid(problems: list[tuple[str, Any, str]]) -> ValidationError:
    """A validation error with one value error at each (setting, value, message)."""
    errors = [
        InitErrorDetails(type="value_error", loc=(key,), input=value, ctx={"error": ValueError(message)})
        for key, value, message in problems
    ]
    return ValidationError.from_exception_data("Schedule", errors)
