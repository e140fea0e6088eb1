"""The ready sweep specs shipped in this package, and what each is for. See docs/spec.md."""

from __future__ import annotations

from pathlib import Path


def ready_specs() -> list[Path]:
    """Every ``*.yaml`` spec in this package, by name."""
    return sorted(Path(__file__).parent.glob("*.yaml"))


def description(path: Path) -> str:
    """The spec's leading comment block, as one line."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    return " ".join(w for w in words if w)
