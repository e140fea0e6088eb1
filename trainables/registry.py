"""Name -> implementation registries, each implementation imported on first use.

A registry maps a name (``cosine``, ``adamw``) to a class or to its
``"module:Class"`` path, so adding one is one module and one registry line,
and a process imports only the implementations it looks up. Modules named in
``EFFSWEEP_PLUGINS`` (comma-separated) are imported before any registry is
read, in every process that reads one (the CLI, Ray's workers), so their
registrations reach the trials. See docs/schedules.md.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

PLUGINS_ENV = "EFFSWEEP_PLUGINS"

T = TypeVar("T")

# Plugin modules imported so far (or being imported: a plugin registers through a registry).
_plugins: set[str] = set()


class Registry(Mapping[str, "str | type[T]"], Generic[T]):
    """The implementations of one ``kind`` (subclasses of ``base``) by name, in registration order.

    Example:
        >>> numbers = Registry("number", int, {"integer": "builtins:int", "flag": "builtins:bool"})
        >>> numbers.load("flag"), list(numbers)
        (<class 'bool'>, ['integer', 'flag'])
    """

    def __init__(self, kind: str, base: type[T], implementations: Mapping[str, str | type[T]]) -> None:
        self.kind = kind
        self.base = base
        self._implementations: dict[str, str | type[T]] = {}
        for name, implementation in implementations.items():
            self.register(name, implementation)

    def register(self, name: str, implementation: str | type[T]) -> None:
        """Add (or replace) ``name``: a subclass of the base, or its ``"module:Class"`` path."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a {self.kind} name must be an identifier (letters, digits, _), got {name!r}")
        if isinstance(implementation, str):
            module, _, attribute = implementation.partition(":")
            if not module or not attribute.isidentifier():
                raise ValueError(f"{self.kind} {name}: an import path must read 'module:Class', got {implementation!r}")
        elif not (isinstance(implementation, type) and issubclass(implementation, self.base)):
            raise TypeError(
                f"{self.kind} {name}: must be a subclass of {self.base.__name__} or its 'module:Class' path, "
                f"got {implementation!r}"
            )
        self._implementations[name] = implementation

    def load(self, name: str) -> type[T]:
        """The class registered as ``name``, imported if need be."""
        if name not in self:
            raise ValueError(self.unknown(name))
        implementation = self._implementations[name]
        if isinstance(implementation, type):
            return implementation
        module, _, attribute = implementation.partition(":")
        loaded = getattr(importlib.import_module(module), attribute)
        if not (isinstance(loaded, type) and issubclass(loaded, self.base)):
            raise TypeError(f"{self.kind} {name}: {implementation} is not a subclass of {self.base.__name__}")
        return loaded

    def unknown(self, name: object) -> str:
        """The message for a name nothing is registered as."""
        return f"unknown {self.kind} {name!r}; known: {', '.join(self)}"

    def __getitem__(self, name: str) -> str | type[T]:
        _import_plugins()
        return self._implementations[name]

    def __iter__(self) -> Iterator[str]:
        _import_plugins()
        return iter(list(self._implementations))

    def __len__(self) -> int:
        _import_plugins()
        return len(self._implementations)


def _import_plugins() -> None:
    for module in os.environ.get(PLUGINS_ENV, "").split(","):
        module = module.strip()
        if module and module not in _plugins:
            _plugins.add(module)
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ImportError(f"{PLUGINS_ENV} names {module!r}, which cannot be imported: {exc}") from exc
