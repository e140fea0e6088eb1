"""Selection orders: the fast greedy equals the plain loop, prefixes nest, uniform beats random."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, effsweep
from trainables.config import SelectionConfig
from trainables.data import prepare as data_module
from trainables.data.corpus import gensim_corpus_dir, read_documents, resolve_corpus
from trainables.data.prepare import SelectionPlan, SweepData, cached_uniform_order, prepare_sweep_data
from trainables.selection import orderings
from trainables.selection.embeddings import EmbeddingConfig, document_embeddings, words
from trainables.selection.orderings import (
    SelectionOrder,
    random_order,
    reference_uniform_order,
    subset_metrics,
    uniform_document_order,
    uniform_order,
)


@st.composite
def point_sets(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(2, 300))
    dim = draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    points = rng.normal(size=(n, dim))
    if draw(st.booleans()):
        points = np.round(points)  # coarse grid: many exact ties
    if draw(st.booleans()):
        copies = draw(st.integers(1, n // 2 + 1))
        points[-copies:] = points[:copies]  # exact duplicates
    return points


@settings(max_examples=120, deadline=None)
@given(point_sets(), st.floats(0.01, 1.0), st.integers(1, 64), st.integers(1, 16))
def test_fast_order_equals_the_plain_loop(points: np.ndarray, share: float, batch: int, directions: int) -> None:
    k = max(1, round(share * len(points)))
    fast, fast_dist = uniform_order(points, k, batch=batch, directions=directions)
    plain, plain_dist = reference_uniform_order(points, k)
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(fast_dist, plain_dist)  # bit for bit, infinities included


@settings(max_examples=30, deadline=None)
@given(point_sets(), st.integers(1, 300), st.integers(1, 300))
def test_prefixes_nest(points: np.ndarray, k1: int, k2: int) -> None:
    short, long_ = sorted((min(k1, len(points)), min(k2, len(points))))
    np.testing.assert_array_equal(uniform_order(points, short)[0], uniform_order(points, long_)[0][:short])


@pytest.mark.parametrize("elements", [1, 1 << 40])
def test_the_order_is_the_same_whatever_the_chunks_of_the_bounds_gemm(
    monkeypatch: pytest.MonkeyPatch, elements: int
) -> None:
    """Chunks of 256 rows (12 of them) or one chunk, as on a GPU: the candidates, and so the order, are the same."""
    points = np.random.default_rng(1).normal(size=(3000, 10))
    monkeypatch.setitem(orderings._CHUNK_ELEMENTS, "cpu", elements)
    fast, fast_dist = uniform_order(points, 1500, batch=64, directions=4, device="cpu")
    plain, plain_dist = reference_uniform_order(points, 1500)
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(fast_dist, plain_dist)


def test_every_document_is_picked_once_even_among_duplicates() -> None:
    points = np.tile(np.eye(3), (4, 1))  # three distinct points, four copies each
    order, dist = uniform_order(points, len(points))
    assert sorted(order.tolist()) == list(range(12))
    assert np.all(dist[3:] == 0) and np.all(dist[1:3] > 0)


def test_order_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        uniform_order(np.eye(3), 0)
    with pytest.raises(ValueError, match="batch and directions must be at least 1, got 0 and 4"):
        uniform_order(np.eye(3), 2, batch=0, directions=4)


@pytest.fixture(scope="module")
def lee_embeddings(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    documents = read_documents(resolve_corpus("gensim:lee_background"))
    return document_embeddings(documents, EmbeddingConfig(), tmp_path_factory.mktemp("emb"), "lee-test")


def test_uniform_subsets_are_more_uniform_than_random_ones(lee_embeddings: np.ndarray) -> None:
    uniform = uniform_document_order(lee_embeddings, len(lee_embeddings))
    for seed in range(3):
        randomly = random_order(len(lee_embeddings), seed)
        for fraction in (0.1, 0.25, 0.5):
            u = subset_metrics(lee_embeddings, uniform.prefix(fraction))
            r = subset_metrics(lee_embeddings, randomly.prefix(fraction))
            assert u["h_min"] >= r["h_min"], (fraction, seed, u, r)
            assert u["covering_radius"] <= r["covering_radius"], (fraction, seed, u, r)


def test_greedy_distances_are_the_subset_metrics(lee_embeddings: np.ndarray) -> None:
    order = uniform_document_order(lee_embeddings, 200)
    assert np.all(np.diff(order.distances[1:200]) <= 0)  # each pick is no farther than the one before
    for k in (10, 60, 150):
        metrics = subset_metrics(lee_embeddings, order.documents[:k])
        # h_min of a greedy prefix is the distance of its last pick; the covering radius is the next one's.
        assert metrics["h_min"] == pytest.approx(order.distances[k - 1], abs=1e-5)
        assert metrics["covering_radius"] == pytest.approx(order.distances[k], abs=1e-5)


def test_documents_without_embedding_come_last() -> None:
    embeddings = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    embeddings[[2, 7]] = 0
    order = uniform_document_order(embeddings, 5)
    assert order.ranked == 5 and order.documents[-2:].tolist() == [2, 7]
    assert sorted(order.documents.tolist()) == list(range(10))
    assert np.isnan(order.distances[5:]).all()


def test_order_round_trips_through_parquet(tmp_path: Path, lee_embeddings: np.ndarray) -> None:
    order = uniform_document_order(lee_embeddings, 30)
    order.save(tmp_path / "order.parquet")
    again = SelectionOrder.load(tmp_path / "order.parquet")
    assert again.strategy == "uniform" and again.ranked == 30
    np.testing.assert_array_equal(again.documents, order.documents)
    np.testing.assert_array_equal(again.distances, order.distances)


def test_a_cached_order_is_reused_and_extended_when_too_short(
    tmp_path: Path, lee_embeddings: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "order.parquet"
    first = cached_uniform_order(lee_embeddings, 0.25, path)
    assert first.ranked == 75 and path.is_file()

    def no_recompute(*_: object) -> None:
        raise AssertionError("a long enough cached order must be read, not recomputed")

    monkeypatch.setattr(data_module, "uniform_document_order", no_recompute)
    np.testing.assert_array_equal(cached_uniform_order(lee_embeddings, 0.1, path).documents, first.documents)
    monkeypatch.undo()
    longer = cached_uniform_order(lee_embeddings, 0.5, path)
    assert longer.ranked == 150
    np.testing.assert_array_equal(longer.documents[:75], first.documents[:75])


def test_embeddings_are_deterministic_across_processes(tmp_path: Path) -> None:
    # Python salts string hashes per process; the embeddings must not depend on it.
    script = (
        "import hashlib, pathlib, sys; from trainables.data.corpus import read_documents, resolve_corpus;"
        "from trainables.selection.embeddings import EmbeddingConfig, document_embeddings;"
        "docs = read_documents(resolve_corpus('gensim:lee_background'))[:120];"
        "e = document_embeddings(docs, EmbeddingConfig(epochs=20), pathlib.Path(sys.argv[1]), 'h');"
        "print(hashlib.sha256(e.tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / seed)],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_pretrained_vectors_and_unknown_words(tmp_path: Path) -> None:
    vectors = gensim_corpus_dir() / "EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt"
    cfg = EmbeddingConfig(pretrained=str(vectors))
    embeddings = document_embeddings(["one two three", "zzzz qqqq"], cfg, tmp_path, "pretrained")
    assert embeddings.shape == (2, 300)
    assert math.isclose(float(np.linalg.norm(embeddings[0])), 1.0, rel_tol=1e-5)
    assert not embeddings[1].any()  # no word known: no embedding
    assert words("Hello, World! it's 2024") == ["hello", "world", "it"]


def test_select_command_writes_a_nested_order(tmp_path: Path) -> None:
    out = tmp_path / "order.parquet"
    result = effsweep("select", "gensim:lee_background", "--fraction", "0.4", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "300 documents, 120 ranked by uniform selection" in result.stdout
    table = pd.read_parquet(out)
    assert list(table.columns) == ["document", "rank", "distance"]
    assert sorted(table["document"]) == list(range(300)) and table["rank"].tolist() == list(range(300))
    assert np.isinf(table["distance"][0]) and table["distance"][1:120].is_monotonic_decreasing
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    again = effsweep("select", "gensim:lee_background", "--fraction", "0.4", "--out", str(tmp_path / "again.parquet"))
    assert again.returncode == 0 and hashlib.sha256((tmp_path / "again.parquet").read_bytes()).hexdigest() == digest


def test_select_command_rejects_bad_arguments(tmp_path: Path) -> None:
    result = effsweep("select", "gensim:lee_background", "--fraction", "1.5", "--out", str(tmp_path / "x.parquet"))
    assert result.returncode == 2 and "--fraction must be in (0, 1], got 1.5" in result.stderr
    result = effsweep("select", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.parquet"))
    assert result.returncode == 1 and "missing.txt: no such file" in result.stderr


@pytest.fixture(scope="module")
def lee_selected(tmp_path_factory: pytest.TempPathFactory) -> SweepData:
    """Lee's corpus with both orders prepared far enough for a quarter of the training tokens."""
    plan = SelectionPlan(("random", "uniform"), 0.1, EmbeddingConfig(), seed=0, max_token_fraction=0.25)
    return prepare_sweep_data(
        "gensim:lee_background", val_fraction=0.1, seed=0, seq_len=32, eval_tokens=2048,
        cache_dir=tmp_path_factory.mktemp("cache"), selection=plan,
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["random", "uniform"])
def test_a_fraction_of_tokens_takes_the_shortest_prefix_that_holds_them(lee_selected: SweepData, strategy: str) -> None:
    lengths = lee_selected.train.lengths
    chosen = lee_selected.training_documents(SelectionConfig(strategy=strategy, fraction=0.25, fraction_of="tokens"))
    order = lee_selected.orders[strategy].documents
    assert np.array_equal(chosen, np.sort(order[: len(chosen)]))
    held = lengths[chosen].sum()
    assert held >= 0.25 * lengths.sum() > held - lengths[order[len(chosen) - 1]]


def test_equal_tokens_give_uniform_selection_more_documents_than_random(lee_selected: SweepData) -> None:
    # The order was planned for a tenth of the documents; a quarter of the tokens needed the greedy to go further.
    uniform = lee_selected.orders["uniform"]
    assert uniform.ranked > 0.1 * len(uniform.documents)
    by = {
        s: lee_selected.training_documents(SelectionConfig(strategy=s, fraction=0.25, fraction_of="tokens"))
        for s in ("random", "uniform")
    }
    assert len(by["uniform"]) > len(by["random"])  # the max-min order reaches short, outlying documents first
    with pytest.raises(ValueError, match=r"of the tokens takes \d+ documents of the uniform order, which ranks"):
        lee_selected.training_documents(SelectionConfig(strategy="uniform", fraction=0.9, fraction_of="tokens"))
