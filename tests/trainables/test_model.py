"""The language model: its parameter and FLOPs accounting, and causality."""

from __future__ import annotations

import pytest
import torch

from trainables.model import GPT, MODEL_PRESETS, ModelConfig, count_parameters, flops_per_token, model_flops_utilisation


@pytest.mark.parametrize("size", MODEL_PRESETS)
def test_parameter_count_matches_the_module(size: str) -> None:
    cfg = ModelConfig(**MODEL_PRESETS[size])
    with torch.device("meta"):  # shapes only: the 350M preset would take a while to initialise
        model = GPT(cfg)
    assert count_parameters(cfg, non_embedding=False) == sum(p.numel() for p in model.parameters())
    assert model.tok_emb.weight.shape[0] == cfg.padded_vocab_size


@pytest.mark.parametrize(("size", "millions"), [("25m", 25), ("100m", 100)])
def test_sized_presets_hold_the_parameters_they_are_named_by(size: str, millions: int) -> None:
    cfg = ModelConfig(**MODEL_PRESETS[size])
    assert count_parameters(cfg) == pytest.approx(millions * 1e6, rel=0.02)
    assert cfg.padded_vocab_size % 64 == 0 and cfg.padded_vocab_size >= cfg.vocab_size


@pytest.mark.parametrize(("size", "gpt2_millions"), [("124m", 124.4), ("350m", 354.8)])
def test_gpt2_shaped_presets_hold_gpt2s_parameters_with_its_vocabulary(size: str, gpt2_millions: float) -> None:
    # GPT-2's linear layers carry biases, these do not: within 1% of the published sizes.
    cfg = ModelConfig(**{**MODEL_PRESETS[size], "vocab_size": 50257})
    assert cfg.padded_vocab_size == 50304
    assert count_parameters(cfg, non_embedding=False) == pytest.approx(gpt2_millions * 1e6, rel=0.01)


def test_flops_estimate_follows_the_formula() -> None:
    cfg = ModelConfig(**MODEL_PRESETS["small"])
    expected = 6 * count_parameters(cfg) + 6 * 128 * 257 + 12 * 4 * 128 * 128
    assert flops_per_token(cfg) == expected
    assert model_flops_utilisation(cfg, tokens_per_s=1e6, peak_flops=flops_per_token(cfg) * 2e6) == 0.5
    with pytest.raises(ValueError, match="peak_flops must be positive, got 0"):
        model_flops_utilisation(cfg, 1.0, 0)


def test_outputs_do_not_see_the_future() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(seq_len=16, n_layer=2, n_head=2, d_model=32)).eval()
    idx = torch.randint(0, 257, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 257
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_config_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"d_model \(64\) must be divisible by n_head \(3\)"):
        ModelConfig(d_model=64, n_head=3)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ModelConfig(n_layer=0)
    with pytest.raises(ValueError, match="exceeds seq_len 8"):
        GPT(ModelConfig(seq_len=8, n_layer=1, n_head=1, d_model=8))(torch.zeros(1, 9, dtype=torch.long))
