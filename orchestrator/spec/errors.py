"""Spec problems: ``SpecError`` and the helpers that word each problem as one ``path: message`` line.

See docs/spec.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class SpecError(Exception):
    """A spec that cannot run; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def validate(model: type[Model], raw: Any, path: str, problems: list[str]) -> Model | None:
    """``model`` validated from ``raw``, or None with every problem added, named by its path."""
    if not isinstance(raw, Mapping):
        problems.append(f"{path or 'spec'}: must be a mapping, got {show(raw)}")
        return None
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        add_errors(exc, path, problems)
        return None


def required(model: type[Model], raw: Any, path: str, problems: list[str]) -> Model | None:
    """Like ``validate``, for a section the spec must have."""
    if raw is None:
        problems.append(f"{path}: required section is missing")
        return None
    return validate(model, raw, path, problems)


def add_errors(exc: ValidationError, path: str, problems: list[str]) -> None:
    """One line per error of ``exc``, its location below ``path``."""
    for error in exc.errors():
        where = ".".join(str(p) for p in (path, *error["loc"]) if p != "")
        problems.append(f"{where or 'spec'}: {message(error)}")


def message(error: Mapping[str, Any]) -> str:
    """A pydantic error in the spec's words, with the offending value when it is a scalar."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    text = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, (str, int, float, bool)):
        text += f" (got {show(value)})"
    return text


def show(value: Any) -> str:
    """A value as a problem line shows it: strings quoted."""
    return repr(value) if isinstance(value, str) else str(value)
