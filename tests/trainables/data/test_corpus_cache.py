"""The corpus cache is private to its user: directory 0700, files 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from orchestrator.user_cache import cache_dir
from trainables.data.prepare import cached_uniform_order
from trainables.data.tokenizer import BYTES
from trainables.data.tokens import offsets_path, tokenize_cached

DOCUMENTS = ["The first document.", "A second, longer document.", "Third."]


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The common umask 022, under which files are world-readable unless made otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cache_dir_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFSWEEP_CACHE_DIR", str(tmp_path / "nested" / "cache"))
    path = cache_dir()
    assert path == tmp_path / "nested" / "cache" and path.is_dir()
    assert _mode(path) == 0o700


def test_an_open_cache_dir_is_narrowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "old-cache"
    old.mkdir(mode=0o755)
    assert _mode(old) == 0o755
    monkeypatch.setenv("EFFSWEEP_CACHE_DIR", str(old))
    assert _mode(cache_dir()) == 0o700


def test_the_default_cache_dir_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EFFSWEEP_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "effsweep"
    assert _mode(tmp_path / ".cache" / "effsweep") == 0o700


def test_cached_tokens_are_private_and_read_back(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tokens, _ = tokenize_cached([DOCUMENTS], cache, BYTES)
    path = tokens.path
    assert _mode(cache) == 0o700 and _mode(path) == 0o600 and _mode(offsets_path(path)) == 0o600
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, offsets_path(path).name])  # no partial file
    again, _ = tokenize_cached([DOCUMENTS], cache, BYTES)
    assert again.path == path and np.array_equal(again.tokens, tokens.tokens)


def test_a_token_file_placed_on_the_sweeps_storage_stays_private(tmp_path: Path) -> None:
    tokens, _ = tokenize_cached([DOCUMENTS], tmp_path / "cache", BYTES)
    placed = tokens.placed_in(tmp_path / "storage" / "_data")
    assert placed.path == tmp_path / "storage" / "_data" / tokens.path.name
    assert _mode(placed.path.parent) == 0o700 and _mode(placed.path) == _mode(offsets_path(placed.path)) == 0o600
    np.testing.assert_array_equal(placed.tokens, tokens.tokens)


def test_a_cached_order_is_private(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "order-uniform.parquet"
    order = cached_uniform_order(vectors, 0.5, path)
    assert order.ranked == 10 and _mode(path) == 0o600
