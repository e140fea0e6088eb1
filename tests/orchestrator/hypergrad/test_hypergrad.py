"""Exact reversal of SGD with momentum, its hypergradients, and the searcher that steps on them."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher

from orchestrator.hypergrad.report import best_hyperparameters, chain_history
from orchestrator.hypergrad.searcher import HypergradSearcher, adam_step, gradient_growing
from orchestrator.results import read_results
from orchestrator.spec import SpecError, load_spec, parse_spec
from orchestrator.sweep import run_sweep
from tests.conftest import REPO
from trainables.data.prepare import SweepData
from trainables.hypergrad.fixed_point import FixedPointOverflow, ReversibleSGD
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.information_buffer import DENOMINATOR, InformationBuffer, divide_exact, multiply_exact
from trainables.hypergrad.reversal import (
    GRAD_PREFIX,
    hypergradients,
    meta_iteration_report,
    unrolled_hypergradients,
)
from trainables.hypergrad.tasks import DigitsTask, LanguageModelTask
from trainables.model import ModelConfig


@pytest.fixture(scope="module")
def digits() -> DigitsTask:
    return DigitsTask(hidden=(12, 12), train_size=400, batch_size=40, seed=0)


def _varied(task: DigitsTask, blocks: int, seed: int = 1) -> Hyperparameters:
    """Different rates, momenta, decays and scales in every block and group, so no mix-up can cancel out."""
    start = Hyperparameters.initial(blocks=blocks, groups=len(task.groups), lr=0.3, momentum=0.85, weight_decay=1e-3)
    noise = np.random.default_rng(seed).standard_normal(start.vector().size)
    return start.with_vector(start.vector() + 0.3 * noise)


def test_buffer_round_trip_with_mixed_bases() -> None:
    rng = np.random.default_rng(0)
    buffer = InformationBuffer(500)
    exchanged = []
    for _ in range(2000):
        base = rng.integers(2, DENOMINATOR + 1, 500)
        low = rng.integers(0, DENOMINATOR, 500)
        symbols = buffer.exchange(low, base)
        assert (symbols >= 0).all() and (symbols < base).all()
        exchanged.append((low, base, symbols))
    assert buffer.depth.max() > 0  # the stacks were used, not just the heads
    for low, base, symbols in reversed(exchanged):
        np.testing.assert_array_equal(buffer.unexchange(symbols, base), low)
    assert not buffer.depth.any()
    assert float(buffer.bits().max()) == 0.0


@pytest.mark.parametrize("base", [2, 3, 1023, 1024, DENOMINATOR])
def test_buffer_undoes_a_spill_at_the_top_of_the_head_for_any_base(base: int) -> None:
    # The largest head a spill can come back to (freq x 2^32): a float division would round it wrong.
    buffer = InformationBuffer(1)
    buffer.head[:] = 2**47 - 1
    bases = np.array([base])
    symbols = buffer.exchange(np.array([DENOMINATOR - 1]), bases)
    np.testing.assert_array_equal(buffer.unexchange(symbols, bases), [DENOMINATOR - 1])
    assert buffer.head.tolist() == [2**47 - 1] and not buffer.depth.any()


def test_buffer_refuses_bases_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"bases must lie in \[2, 2\^16\], got 1 to 1"):
        InformationBuffer(2).exchange(np.zeros(2, dtype=np.int64), np.array([1, 1]))


def test_weights_leaving_the_fixed_point_range_are_an_error_not_a_wrap() -> None:
    sgd = ReversibleSGD(np.array([4000.0]))
    half = np.array([DENOMINATOR // 2])
    with pytest.raises(FixedPointOverflow, match="a weight left the fixed-point range"):
        for _ in range(5):
            sgd.step(np.array([-3000.0]), np.array([1.0]), half, np.array([0.5]))


def test_a_non_finite_gradient_is_an_error_naming_it() -> None:
    sgd = ReversibleSGD(np.zeros(3))
    half = np.full(3, DENOMINATOR // 2)
    with pytest.raises(FixedPointOverflow, match=r"a gradient term \(1 - momentum\) g left .* or is not finite"):
        sgd.step(np.array([0.0, np.nan, 0.0]), np.full(3, 0.1), half, np.full(3, 0.5))


def test_arrays_of_the_wrong_size_are_refused_before_the_compiled_loops() -> None:
    # The loops do not check bounds: these would write past the buffer's arrays.
    with pytest.raises(ValueError, match=r"remainders must have the buffer's shape \(3,\), got \(6,\)"):
        InformationBuffer(3).exchange(np.zeros(6, dtype=np.int64), np.full(3, 100))
    with pytest.raises(ValueError, match=r"bases must have the buffer's shape \(3,\), got \(2,\)"):
        InformationBuffer(3).exchange(np.zeros(3, dtype=np.int64), np.full(2, 100))
    sgd = ReversibleSGD(np.zeros(4))
    half = np.full(4, DENOMINATOR // 2)
    with pytest.raises(ValueError, match=r"lr must have the weights' shape \(4,\), got \(1,\)"):
        sgd.step(np.ones(4), np.full(1, 0.1), half, np.full(4, 0.5))
    assert sgd.is_initial(np.zeros(4, dtype=np.int64))  # refused before anything changed


def test_a_reverse_pass_given_another_gradient_is_an_error() -> None:
    sgd = ReversibleSGD(np.zeros(3))
    lr, half, forget = np.full(3, 0.1), np.full(3, DENOMINATOR // 2), np.full(3, 0.5)
    sgd.step(np.ones(3), lr, half, forget)
    sgd.unstep_weights(lr)
    with pytest.raises(FixedPointOverflow, match="in the reverse pass, though not in training"):
        sgd.unstep_velocity(np.array([1.0, np.inf, 1.0]), half, forget)


def test_exact_multiplication_is_close_to_the_product_and_undoes() -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(-(2**50), 2**50, 1000)
    numerator = rng.integers(2, DENOMINATOR, 1000)
    buffer = InformationBuffer(1000)
    scaled = multiply_exact(values, numerator, buffer)
    exact = values * (numerator / DENOMINATOR)
    assert float((np.abs(scaled - exact) / numerator).max()) <= 1.0 + 1e-9
    np.testing.assert_array_equal(divide_exact(scaled, numerator, buffer), values)


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_buffer_grows_by_log2_of_one_over_momentum(momentum: float) -> None:
    sgd = ReversibleSGD(np.zeros(2000))
    numerator = np.full(2000, round(momentum * DENOMINATOR))
    rng = np.random.default_rng(3)
    lr = np.full(2000, 0.1)
    bits = []
    for step in range(600):
        sgd.step(rng.standard_normal(2000), lr, numerator, 1 - numerator / DENOMINATOR)
        if step in (99, 599):
            bits.append(float(sgd.buffer.bits().mean()))
    per_step = (bits[1] - bits[0]) / 500
    assert per_step == pytest.approx(math.log2(1 / momentum), rel=0.05)


def test_reversal_recovers_initial_weights_bit_for_bit_after_1000_steps() -> None:
    task = DigitsTask(hidden=(8,), train_size=300, batch_size=20, seed=0)
    hyper = Hyperparameters.initial(blocks=10, groups=len(task.groups), lr=0.2, momentum=0.9)
    outcome = hypergradients(task, hyper, steps=1000)
    assert outcome.exact
    assert outcome.val_loss < 1.0  # it did learn: the chance level is log(10) = 2.3
    assert outcome.buffer_bits == pytest.approx(1000 * math.log2(1 / 0.9), rel=0.05)


def test_hypergradients_agree_with_autograd_through_the_unrolled_steps(digits: DigitsTask) -> None:
    hyper = _varied(digits, blocks=4)
    outcome = hypergradients(digits, hyper, steps=60)
    val_loss, reference = unrolled_hypergradients(digits, hyper, steps=60)
    assert outcome.exact
    assert outcome.val_loss == pytest.approx(val_loss, rel=1e-8)
    for name in Hyperparameters.FIELDS:
        ours, theirs = getattr(outcome.grads, name), getattr(reference, name)
        assert np.abs(theirs).min() > 0, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0, err_msg=name)


def test_hypergradients_agree_with_finite_differences(digits: DigitsTask) -> None:
    hyper = _varied(digits, blocks=3, seed=2)
    outcome = hypergradients(digits, hyper, steps=30)
    vector = hyper.vector()
    sizes = {name: getattr(hyper, name).size for name in Hyperparameters.FIELDS}
    offsets = dict(zip(sizes, np.cumsum([0, *sizes.values()])[:-1], strict=True))
    # One entry of each continuous family, differenced on the same training in plain float64 (smooth,
    # where the fixed-point run carries noise of 1e-11); the momentum moves in steps of 1 / 2^16, below.
    for name, index in (("log_lr", 4), ("log_weight_decay", 1), ("log_init_scale", 2)):
        eps = 1e-5
        shifted = [vector.copy(), vector.copy()]
        shifted[0][offsets[name] + index] += eps
        shifted[1][offsets[name] + index] -= eps
        plus, minus = (unrolled_hypergradients(digits, hyper.with_vector(v), steps=30)[0] for v in shifted)
        assert outcome.grads.vector()[offsets[name] + index] == pytest.approx((plus - minus) / (2 * eps), rel=1e-4)
    # Momentum: one numerator up and down, as a derivative in the momentum itself.
    block, group = 1, 3
    momentum = hyper.momenta()[block, group]
    values = []
    for step in (1, -1):
        moved = Hyperparameters(**{n: getattr(hyper, n).copy() for n in Hyperparameters.FIELDS})
        target = momentum + step / DENOMINATOR
        moved.logit_momentum[block, group] = math.log(target / (1 - target))
        values.append(hypergradients(digits, moved, steps=30).val_loss)
    smooth = 1 / (1 + math.exp(-hyper.logit_momentum[block, group]))
    by_momentum = outcome.grads.logit_momentum[block, group] / (smooth * (1 - smooth))
    assert by_momentum == pytest.approx((values[0] - values[1]) * DENOMINATOR / 2, rel=1e-2)


def test_language_model_reverses_exactly_and_matches_autograd(lee32: SweepData) -> None:
    model = ModelConfig(vocab_size=257, seq_len=32, n_layer=1, n_head=2, d_model=16)
    task = LanguageModelTask(model, lee32.train.tokens, lee32.val_windows[:4], batch_size=4, seed=3)
    hyper = Hyperparameters.initial(blocks=2, groups=len(task.groups), lr=0.05, momentum=0.8)
    outcome = hypergradients(task, hyper, steps=6)
    _, reference = unrolled_hypergradients(task, hyper, steps=6)
    assert outcome.exact and list(task.groups) == ["embeddings", "block0", "final_norm"]
    for name in Hyperparameters.FIELDS:
        np.testing.assert_allclose(getattr(outcome.grads, name), getattr(reference, name), rtol=1e-5, err_msg=name)


def test_any_seed_draws_batches() -> None:
    # The batch of a step is hashed from (seed, step) in 64 bits: a seed past 2^24 must not overflow.
    losses = []
    for seed in (0, 2**63 + 5):
        task = DigitsTask(hidden=(4,), train_size=100, batch_size=10, seed=seed)
        params = dict(task.model.named_parameters())
        losses.append([task.train_loss(params, step).item() for step in (0, 1, 0)])
    for first, second, again in losses:
        assert first != second and first == again  # each step its own batch, the same every time
    assert losses[0] != losses[1]


def test_hyperparameters_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one value per group"):
        Hyperparameters(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="momentum must be in"):
        Hyperparameters.initial(blocks=1, groups=1, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="hyperparameters are missing log_init_scale"):
        Hyperparameters.from_dict({"log_lr": [[0.0]], "logit_momentum": [[0.0]], "log_weight_decay": [0.0]})


def test_divergence_is_a_clear_error(digits: DigitsTask) -> None:
    hyper = Hyperparameters.initial(blocks=1, groups=len(digits.groups), lr=1e4, momentum=0.5)
    with pytest.raises(FixedPointOverflow, match="lower the learning rate"):
        hypergradients(digits, hyper, steps=50)


def test_adam_step_matches_torch_adam() -> None:
    point = np.array([0.5, -1.0, 2.0])
    parameter = torch.tensor(point, requires_grad=True)
    optimizer = torch.optim.Adam([parameter], lr=0.1)
    first = second = np.zeros(3)
    for step, grad in enumerate((np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -4.0])), start=1):
        point, first, second = adam_step(point, grad, first, second, step=step, lr=0.1)
        parameter.grad = torch.tensor(grad)
        optimizer.step()
    np.testing.assert_allclose(point, parameter.detach().numpy(), rtol=1e-7)


def test_gradient_growing_needs_a_held_factor_over_the_smallest_norm() -> None:
    assert not gradient_growing([1.0, 0.5, 0.6, 0.7, 0.8], patience=2, growth=5.0)  # drifting up: not chaos
    assert not gradient_growing([1.0, 0.1, 0.6, 0.3], patience=2, growth=5.0)  # one spike
    assert gradient_growing([1.0, 0.1, 0.6, 0.7], patience=2, growth=5.0)
    assert gradient_growing([0.1, 0.6], patience=1, growth=5.0)
    assert not gradient_growing([0.1, 0.6], patience=2, growth=5.0)  # too few meta-iterations to say


def _result(grad_scale: float, loss: float) -> dict:
    start = Hyperparameters.initial(blocks=2, groups=2, lr=0.1, momentum=0.9)
    return {
        "val_loss": loss,
        "reversal_exact": 1.0,
        **{f"{GRAD_PREFIX}{k}": (np.ones_like(getattr(start, k)) * grad_scale).tolist() for k in start.FIELDS},
    }


def test_searcher_steps_each_chain_and_ends_it_when_the_meta_gradient_grows(tmp_path) -> None:
    start = Hyperparameters.initial(blocks=2, groups=2, lr=0.1, momentum=0.9)
    searcher = HypergradSearcher(start, [{"batch_size": 8}, {"batch_size": 16}], meta_steps=10, meta_lr=0.1)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert (first["batch_size"], second["batch_size"]) == (8, 16)
    assert searcher.suggest("c") is None  # both chains have a trial in flight
    searcher.on_trial_complete("a", _result(1.0, 2.0))
    moved = searcher.suggest("c")
    assert moved["hypergrad.chain"] == 0 and moved["hypergrad.meta_step"] == 1
    # A positive gradient lowers every log rate by Adam's first step, meta_lr.
    np.testing.assert_allclose(np.array(moved["hypergrad.log_lr"]), math.log(0.1) - 0.1, rtol=1e-9)

    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))
    restored = HypergradSearcher(start, [{}], meta_steps=1, meta_lr=1.0)
    restored.restore(str(checkpoint))
    # Trials in flight at the save stay pending: a resumed sweep runs them again under their ids.
    assert restored.suggest("c2") is None
    restored.on_trial_complete("c", _result(2.0, 1.95))
    assert restored.suggest("c3")["hypergrad.meta_step"] == 2

    searcher.on_trial_complete("c", _result(6.0, 1.9))
    searcher.on_trial_complete("d", None)  # unknown trial: ignored
    searcher.on_trial_complete("b", None, error=True)
    third = searcher.suggest("e")
    searcher.on_trial_complete("e", _result(7.0, 1.8))  # twice above 5x the first norm: chaos
    summaries = searcher.chain_summaries()
    assert third["hypergrad.meta_step"] == 2
    assert summaries[0]["ended"] == "meta-gradient growing"
    assert summaries[0]["val_loss"] == [2.0, 1.9, 1.8]
    assert summaries[1]["ended"] == "trial failed"
    assert searcher.suggest("f") == Searcher.FINISHED
    assert pickle.loads(pickle.dumps(searcher)).chain_summaries() == summaries


def test_searcher_ends_a_chain_after_its_meta_steps_and_on_divergence(tmp_path) -> None:
    start = Hyperparameters.initial(blocks=2, groups=2, lr=0.1, momentum=0.9)
    searcher = HypergradSearcher(start, [{}, {}], meta_steps=1, meta_lr=0.1)
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", _result(1.0, 2.0))
    searcher.on_trial_complete("b", _result(1.0, math.nan))
    assert [s["ended"] for s in searcher.chain_summaries()] == ["meta_steps done", "diverged"]

    searcher = HypergradSearcher(start, [{}, {}], meta_steps=5, meta_lr=0.1, record=tmp_path / "chains.json")
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", {**_result(1.0, 2.0), "reversal_exact": 0.0})
    searcher.on_trial_complete("b", {"val_loss": math.nan, "diverged": 1.0})  # overflowed: no gradients
    assert [s["ended"] for s in searcher.chain_summaries()] == ["reversal not exact", "diverged"]
    assert json.loads((tmp_path / "chains.json").read_text()) == searcher.chain_summaries()
    with pytest.raises(ValueError, match="meta_lr must be positive"):
        HypergradSearcher(start, [{}], meta_steps=1, meta_lr=0.0)


def test_meta_iteration_report_carries_the_gradients(digits: DigitsTask) -> None:
    hyper = Hyperparameters.initial(blocks=2, groups=len(digits.groups), lr=0.2, momentum=0.9)
    report = meta_iteration_report(hypergradients(digits, hyper, steps=10))
    assert report["reversal_exact"] == 1.0
    grads = Hyperparameters.from_dict({k: report[f"{GRAD_PREFIX}{k}"] for k in Hyperparameters.FIELDS})
    assert report["meta_grad_norm"] == pytest.approx(float(np.linalg.norm(grads.vector())))


HYPERGRAD_SPEC: dict = {
    "data": {"corpus": "gensim:lee_background", "val_fraction": 0.1, "eval_tokens": 1024},
    "model": {"size": "tiny"},
    "budget": {"compute": 10240},  # 20 steps of 8 x 64 tokens, 10 of 16 x 64
    "search": {"batch_size": {"choice": [8, 16]}},
    "searcher": {"name": "hypergrad", "chains": 2, "meta_steps": 2, "blocks": 4, "init_lr": 0.3, "meta_lr": 0.1},
    "scheduler": "fifo",
}


HYPERGRAD_PROBLEMS = {
    "seed knob": ({"search": {"batch_size": {"choice": [8]}, "seed": {"choice": [0, 1]}}}, "search.seed"),
    "continuous knob": ({"search": {"batch_size": {"int": [8, 16]}}}, "the hypergrad searcher takes only choice"),
    "learned knob": ({"search": {"peak_lr": {"loguniform": [0.01, 0.1]}}}, "search.peak_lr: the hypergrad searcher"),
    "schedule in train": ({"train": {"schedule.name": "cosine"}}, "train.schedule.name: the hypergrad searcher"),
    "pruning": ({"scheduler": "asha"}, "scheduler.name: the hypergrad searcher needs every meta-iteration"),
    "workers": ({"resources": {"workers": 2}}, "resources: the reversible trainer runs on one CPU worker"),
    "blocks": ({"searcher": {"name": "hypergrad", "blocks": 20}}, "searcher.blocks: 20 blocks need"),
    "trials": ({"trials": 3}, "trials: the hypergrad searcher runs at most"),
    "patch": ({"train": {"patch.K": 4, "patch.share": 0.5}}, "train.patch.K: the hypergrad searcher sets"),
    "bf16": ({"train": {"precision": "bf16"}}, "train.precision: the hypergrad searcher sets"),
    "micro-batches": ({"train": {"micro_batch_size": 4}}, "train.micro_batch_size: the hypergrad searcher sets"),
}


@pytest.mark.parametrize("change, expected", HYPERGRAD_PROBLEMS.values(), ids=HYPERGRAD_PROBLEMS.keys())
def test_hypergrad_spec_problems_name_the_field(change: dict, expected: str) -> None:
    raw = {"name": "bad", **HYPERGRAD_SPEC, **change}
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_shipped_hypergrad_spec_is_valid() -> None:
    spec = load_spec(REPO / "search_spaces" / "hypergrad.yaml")
    assert spec.searcher.name == "hypergrad" and spec.trials == spec.searcher.chains * spec.searcher.meta_steps


def test_hypergrad_sweep_on_ray_logs_every_meta_iteration(local_ray: None, tmp_path) -> None:
    raw = {"name": "hyper", "output_dir": str(tmp_path / "hyper"), **HYPERGRAD_SPEC}
    outcome = run_sweep(parse_spec(raw))
    trials = outcome.results.trials
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert sorted(trials["config.batch_size"]) == [8, 8, 16, 16]  # each chain keeps its knob
    history = chain_history(outcome.results)
    assert history[["chain", "meta_step"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    metrics = outcome.results.metrics.set_index("trial_id")
    assert (metrics["reversal_exact"] == 1.0).all()
    # The second meta-iteration of a chain starts one Adam step away from the first.
    first, second = (trials[(trials["config.hypergrad.chain"] == 0) & (trials["config.hypergrad.meta_step"] == k)]
                     for k in (0, 1))  # fmt: skip
    moved = np.abs(
        np.array(second["config.hypergrad.log_lr"].iloc[0]) - np.array(first["config.hypergrad.log_lr"].iloc[0])
    )
    assert np.allclose(moved, 0.1, rtol=1e-4)  # Adam's first step is meta_lr, up to its eps

    client = MlflowClient(outcome.record.tracking_uri)
    parent = outcome.record.parent_run_id
    for chain in (0, 1):
        losses = client.get_metric_history(parent, f"chain{chain}.val_loss")
        expected = history[history["chain"] == chain]
        assert [m.step for m in losses] == [0, 1]
        assert [m.value for m in losses] == pytest.approx(expected["val_loss"].tolist())
        assert len(client.get_metric_history(parent, f"chain{chain}.meta_grad_norm")) == 2
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert "learned_schedules.png" in artifacts
    tags = client.get_run(parent).data.tags
    assert tags["chain0.ended"] == tags["chain1.ended"] == "meta_steps done"
    # The learned values survive the Parquet export.
    exported = best_hyperparameters(read_results(outcome.layout.results_dir))
    np.testing.assert_array_equal(exported.log_lr, best_hyperparameters(outcome.results).log_lr)
    child = client.search_runs(
        [outcome.record.experiment_id], filter_string=f"tags.effsweep.trial_id = '{trials['trial_id'].iloc[0]}'"
    )[0]
    assert child.data.metrics["meta_grad_norm"] > 0 and "hypergrad.log_lr" in child.data.params
    downloaded = client.download_artifacts(child.info.run_id, "reported_vectors.json", str(tmp_path))
    vectors = json.loads(Path(downloaded).read_text())
    assert np.array(vectors["hypergrad.grad.log_lr"]).shape == (4, 4)  # blocks x groups
