"""Patch-level training: the loss, the batches, the phase switch and the compute accounting."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_32
from trainables import loop as loop_module
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import OBJECTIVE, train_lm
from trainables.model import GPT, ModelConfig
from trainables.patch import PatchBatcher, TrainingLoss, patch_loss
from trainables.step_rules import StepRule


def _model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(seq_len=8, n_layer=1, n_head=2, d_model=16))


def test_k1_patch_loss_is_the_token_loss() -> None:
    model = _model()
    window = torch.randint(0, 257, (4, 9))
    patch = patch_loss(model, window, 1)
    patch.backward()
    patch_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    token = model.loss(window[:, :-1], window[:, 1:])
    token.backward()
    # One normaliser and gathered targets against cross_entropy: the same sums in another order.
    torch.testing.assert_close(patch, token, rtol=1e-6, atol=1e-6)
    for a, p in zip(patch_grads, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_k1_patch_batches_are_token_batches_in_the_same_order() -> None:
    stream = np.random.default_rng(0).integers(0, 257, 5000).astype(np.uint16)
    patched = PatchBatcher(stream, seq_len=8, patch_size=1, batch_size=4, seed=3)
    tokens = PatchBatcher(stream, seq_len=8, patch_size=1, batch_size=4, seed=3)
    for _ in range(700):  # past an epoch of 624 windows
        assert torch.equal(patched.patch_batch(), tokens.token_batch())


def test_patch_loss_equals_a_hand_computation() -> None:
    model = _model(1)
    k, positions = 2, 3
    window = torch.tensor([[5, 9, 17, 33, 65, 129, 200, 3]])  # 3 patches of 2 and the patch after
    emb = model.tok_emb.weight
    patches = [(emb[window[0, 2 * i]] + emb[window[0, 2 * i + 1]]) / 2 for i in range(positions)]
    logits = model.logits_from_embeddings(torch.stack(patches)[None])[0].detach()
    by_hand = 0.0
    for i in range(positions):
        log_norm = math.log(sum(math.exp(v) for v in logits[i].tolist()))
        for j in range(k):
            target = int(window[0, 2 * (i + 1) + j])
            by_hand -= float(logits[i, target]) - log_norm
    by_hand /= positions * k
    assert patch_loss(model, window, k).item() == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ValueError, match="a window of 7 tokens is not K\\*T \\+ K tokens for K=2"):
        patch_loss(model, window[:, :7], k)


def test_the_training_loss_module_computes_either_phases_loss_in_its_forward() -> None:
    model = _model()
    training_loss = TrainingLoss(model)
    tokens, patches = torch.randint(0, 257, (4, 9)), torch.randint(0, 257, (4, 3 * 8 + 3))
    assert torch.equal(training_loss(tokens), model.loss(tokens[:, :-1], tokens[:, 1:]))
    assert torch.equal(training_loss(patches, 3), patch_loss(model, patches, 3))
    assert list(training_loss.parameters()) == list(model.parameters())  # a wrapper around it sees them all


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 600), st.integers(1, 6), st.integers(1, 4), st.integers(1, 7), st.integers(0, 50))
def test_both_phases_read_one_shuffled_pass_over_the_data(
    length: int, seq_len: int, k: int, batch: int, switch: int
) -> None:
    stream = np.arange(length, dtype=np.uint16)
    group = seq_len * k
    n_groups = (length - k) // group
    if n_groups < 1:
        with pytest.raises(ValueError, match="fewer than one sample"):
            PatchBatcher(stream, seq_len=seq_len, patch_size=k, batch_size=batch, seed=0)
        return
    batcher = PatchBatcher(stream, seq_len=seq_len, patch_size=k, batch_size=batch, seed=1)
    seen: list[int] = []  # starts of token windows, in the order read
    for _ in range(switch % 4):
        rows = batcher.patch_batch().numpy()
        assert rows.shape == (batch, group + k)
        np.testing.assert_array_equal(np.diff(rows, axis=1), 1)
        seen.extend((rows[:, :1] + np.arange(k) * seq_len).ravel().tolist())
    while len(seen) < 2 * n_groups * k:
        rows = batcher.token_batch().numpy()
        assert rows.shape == (batch, seq_len + 1)
        np.testing.assert_array_equal(np.diff(rows, axis=1), 1)
        seen.extend(rows[:, 0].tolist())
    every_window = sorted(g * group + j * seq_len for g in range(n_groups) for j in range(k))
    assert sorted(seen[: n_groups * k]) == every_window  # one epoch: each window exactly once


def test_phase_split_follows_lambda_at_equal_compute() -> None:
    settings = {**TINY_32, "budget.compute": 400_000, "batch_size": 8, "patch.K": 4, "patch.lambda": 2 / 3}
    cfg = TrialConfig.from_flat({**settings, "schedule.name": "cosine"})
    patch_steps, token_steps = cfg.phase_steps
    patch_tokens = patch_steps * 8 * 32 * 4
    data = patch_tokens + token_steps * 8 * 32
    assert patch_tokens / data == pytest.approx(2 / 3, abs=0.01)
    assert data == pytest.approx(2 * 400_000, rel=0.01)  # the paper's 2x data at K=4, lambda=2/3
    assert (patch_steps + token_steps) * 8 * 32 <= 400_000
    lrs = cfg.planned_lrs()
    assert len(lrs) == patch_steps + token_steps
    # Each phase has its own warmup and decay: the schedule starts again at the switch.
    assert lrs[patch_steps - 1] == pytest.approx(cfg.peak_lr * 0.1) and lrs[patch_steps] < lrs[patch_steps + 5]


def test_phase_switch_keeps_weights_and_resets_optimizer_and_schedule(
    lee32: SweepData, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[torch.optim.Optimizer, list[torch.Tensor]]] = []
    real = loop_module.build_step_rule

    def recording(model: torch.nn.Module, cfg: TrialConfig, **kwargs: int) -> StepRule:
        rule = real(model, cfg, **kwargs)
        built.append((rule.optimizer, [p.detach().clone() for p in model.parameters()]))
        return rule

    monkeypatch.setattr(loop_module, "build_step_rule", recording)
    settings = {
        **TINY_32,
        "budget.compute": 200_000,
        "batch_size": 8,
        "eval_every": 10,
        "patch.K": 4,
        "patch.lambda": 0.5,
    }
    settings["schedule.name"] = "cosine"
    cfg = TrialConfig.from_flat(settings)
    reports: list[dict[str, Any]] = []
    train_lm(cfg, lee32, reports.append)
    patch_steps, token_steps = cfg.phase_steps
    (patch_opt, at_start), (token_opt, at_switch) = built
    # The same parameters carry on: the token phase starts from the trained patch-phase weights.
    assert [id(p) for g in patch_opt.param_groups for p in g["params"]] == [
        id(p) for g in token_opt.param_groups for p in g["params"]
    ]
    assert not all(torch.equal(a, b) for a, b in zip(at_start, at_switch, strict=True))
    # Fresh optimizer state: each optimizer counted only its own phase's steps.
    assert {int(s["step"]) for s in patch_opt.state.values()} == {patch_steps}
    assert {int(s["step"]) for s in token_opt.state.values()} == {token_steps}
    # The switch shows in the reports: the patch phase's last step reports, then token reports follow.
    phases = [(r["phase"], r["patch_phase"]) for r in reports]
    boundary = phases.index(("token", 0.0))
    assert all(p == ("patch", 1.0) for p in phases[:boundary])
    assert reports[boundary - 1]["step"] == patch_steps
    assert reports[boundary - 1]["lr"] == pytest.approx(cfg.planned_lrs()[patch_steps - 1])


def test_compute_accounting_over_a_whole_trial(lee32: SweepData) -> None:
    base = {**TINY_32, "budget.compute": 200_000, "batch_size": 8, "eval_every": 10}
    token_reports: list[dict[str, Any]] = []
    train_lm(TrialConfig.from_flat(base), lee32, token_reports.append)
    patch_reports: list[dict[str, Any]] = []
    cfg = TrialConfig.from_flat({**base, "patch.K": 4, "patch.lambda": 2 / 3})
    train_lm(cfg, lee32, patch_reports.append)
    token_last, patch_last = token_reports[-1], patch_reports[-1]
    assert token_last["tokens"] == token_last["compute"] <= 200_000
    assert 200_000 - 8 * 32 < patch_last["compute"] <= 200_000  # the same compute ...
    assert patch_last["tokens"] == pytest.approx(2 * patch_last["compute"], rel=0.01)  # ... twice the data
    for earlier, later in itertools.pairwise(patch_reports):
        stepped = later["step"] - earlier["step"]
        assert later["compute"] - earlier["compute"] == stepped * 8 * 32
        per_token = 4 if later["phase"] == "patch" else 1
        if earlier["phase"] == later["phase"]:
            assert later["tokens"] - earlier["tokens"] == stepped * 8 * 32 * per_token
    assert OBJECTIVE in patch_last and patch_last["phase"] == "token"
    assert all(math.isfinite(r["val_loss"]) for r in patch_reports)  # token-level val_loss in both phases


@pytest.mark.parametrize("world_size, k", [(2, 1), (3, 4), (4, 2)])
def test_the_memory_mapped_corpus_gives_every_rank_disjoint_rows_that_together_form_the_global_batch(
    lee32: SweepData, world_size: int, k: int
) -> None:
    assert lee32.train.corpus.path is not None  # the sweep's token file, mapped
    every_document = np.arange(lee32.train.n_documents)
    settings = {"seq_len": 32, "patch_size": k, "batch_size": 12, "seed": 7}
    whole = PatchBatcher(lee32.train.spans(every_document), **settings)
    ranks = [
        PatchBatcher(lee32.train.spans(every_document), **settings, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    for step in range(40):
        patched = step < 15
        batch = whole.patch_batch() if patched else whole.token_batch()
        rows = [rank.patch_batch() if patched else rank.token_batch() for rank in ranks]
        for rank, own in enumerate(rows):
            assert len(own) == 12 // world_size
            assert torch.equal(own, batch[rank::world_size])  # the rows a worker kept of the global batch before
        assert torch.equal(torch.stack(rows, dim=1).flatten(0, 1), batch)  # together, the whole batch in order


@pytest.mark.parametrize("recipe", ["equal", "positions"])
def test_a_patch_step_reads_and_is_charged_as_its_recipe_says(recipe: str, lee32: SweepData) -> None:
    k, batch, seq = 4, 16, TINY_32["model.seq_len"]
    settings = {**TINY_32, "batch_size": batch, "budget.compute": 200_000, "eval_every": 5,
                "patch.K": k, "patch.lambda": 2 / 3, "patch.tokens_per_step": recipe}  # fmt: skip
    cfg = TrialConfig.from_flat(settings)
    reports: list[dict] = []
    train_lm(cfg, lee32, reports.append)
    first = reports[0]
    assert first["phase"] == "patch" and first["step"] == 5
    token_step = batch * seq
    if recipe == "equal":  # batch/K sequences of K*T tokens: a token step's tokens at 1/K of its compute
        assert first["tokens"] == 5 * token_step and first["compute"] == 5 * token_step / k
    else:  # batch sequences of K*T tokens: K times the tokens, a token step's compute
        assert first["tokens"] == 5 * k * token_step and first["compute"] == 5 * token_step
    # Two thirds of the data in patches either way; the compute is spent exactly as planned.
    patch_steps, token_steps = cfg.phase_steps
    last_patch = max((r for r in reports if r["phase"] == "patch"), key=lambda r: r["step"])
    assert last_patch["step"] == patch_steps and last_patch["compute"] == cfg.phase_budgets[0]
    data = cfg.budget.compute / (2 / 3 / k + 1 / 3)
    assert last_patch["tokens"] == pytest.approx(2 / 3 * data, rel=0.02)
    assert reports[-1]["step"] == patch_steps + token_steps
    assert reports[-1]["compute"] == cfg.phase_budgets[0] + token_steps * token_step <= cfg.budget.compute


def test_the_equal_recipe_needs_a_batch_that_k_divides() -> None:
    with pytest.raises(ValueError, match="batch_size 6 is not a multiple of K 4"):
        TrialConfig.from_flat({**TINY_32, "batch_size": 6, "budget.compute": 200_000, "patch.K": 4,
                               "patch.lambda": 0.5, "patch.tokens_per_step": "equal"})  # fmt: skip


def test_the_equal_recipe_batches_k_times_fewer_sequences() -> None:
    stream = np.arange(5000, dtype=np.uint16)
    batcher = PatchBatcher(stream, seq_len=8, patch_size=4, batch_size=16, seed=0, patch_rows=4)
    assert batcher.patch_batch().shape == (4, 4 * 8 + 4) and batcher.token_batch().shape == (16, 9)
    assert batcher.tokens_per_patch_batch == batcher.tokens_per_token_batch == 16 * 8
