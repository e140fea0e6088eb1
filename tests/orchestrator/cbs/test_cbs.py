"""Critical batch size: the noise-scale estimators against analytic values, and the steps-to-target fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator.cbs.fit import fit_critical_batch, most_efficient_batch
from orchestrator.cbs.study import falling_side
from trainables.noise_scale import NoiseScale, unbiased_terms


def _mean_gradient(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Autograd's gradient of the mean squared error 1/2 (x w - y)^2 over a batch."""
    w = w.clone().requires_grad_(True)
    loss = 0.5 * ((x @ w - y) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, w)
    return grad


def test_the_estimators_are_unbiased_on_linear_regression() -> None:
    # x ~ N(0, I_d), y = x w* + noise(sigma): at w, with r = w - w*, the per-example gradient
    # x (x r - noise) has mean G = r and covariance r r^T + (|r|^2 + sigma^2) I (Isserlis), so
    # |G|^2 = |r|^2 and tr(Sigma) = |r|^2 + d (|r|^2 + sigma^2).
    d, sigma, b_small, b_big, draws = 8, 0.5, 4, 32, 4000
    gen = torch.Generator().manual_seed(0)
    w_star = torch.randn(d, generator=gen, dtype=torch.float64)
    w = w_star + 0.3 * torch.randn(d, generator=gen, dtype=torch.float64)
    r2 = float(((w - w_star) ** 2).sum())
    true_g2, true_trace = r2, r2 + d * (r2 + sigma**2)
    estimates, norms = [], []
    for _ in range(draws):
        x = torch.randn(b_big, d, generator=gen, dtype=torch.float64)
        y = x @ w_star + sigma * torch.randn(b_big, generator=gen, dtype=torch.float64)
        big = _mean_gradient(w, x, y)
        smalls = [_mean_gradient(w, x[i : i + b_small], y[i : i + b_small]) for i in range(0, b_big, b_small)]
        small_sq = float(np.mean([float(g @ g) for g in smalls]))  # micro-batches, as on one worker
        norms.append((small_sq, float(big @ big)))
        estimates.append(unbiased_terms(*norms[-1], b_small, b_big))
    g2, trace = np.mean(estimates, axis=0)
    g2_se, trace_se = np.std(estimates, axis=0) / np.sqrt(draws)
    assert abs(g2 - true_g2) < 4 * g2_se and abs(trace - true_trace) < 4 * trace_se
    assert g2 == pytest.approx(true_g2, rel=0.1) and trace == pytest.approx(true_trace, rel=0.05)
    # The moving averages over the same draws land near the true B_simple.
    gns = NoiseScale(decay=0.999)
    for small_sq, big_sq in norms:
        gns.update(small_sq, big_sq, b_small, b_big)
    assert gns.value == pytest.approx(true_trace / true_g2, rel=0.15)


def test_the_estimators_refuse_batch_sizes_out_of_order() -> None:
    with pytest.raises(ValueError, match="need 0 < b_small < b_big, got 8 and 8"):
        unbiased_terms(1.0, 1.0, 8, 8)
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\), got 1.0"):
        NoiseScale(decay=1.0)


def test_the_fit_recovers_s_min_and_e_min_from_noisy_steps() -> None:
    s_min, b_crit = 400.0, 96.0
    b = np.array([8, 16, 32, 64, 128, 256, 512])
    noisy = s_min * (1 + b_crit / b) * (1 + 0.03 * np.random.default_rng(1).standard_normal(len(b)))
    fit = fit_critical_batch(b, noisy)
    assert fit.s_min == pytest.approx(s_min, rel=0.08)
    assert fit.e_min == pytest.approx(s_min * b_crit, rel=0.08)
    assert fit.interval[0] <= b_crit <= fit.interval[1] and fit.interval[1] / fit.interval[0] < 2


def test_the_most_efficient_batch_follows_the_steps_law() -> None:
    b = np.array([16, 24, 32, 48, 64, 96, 128])
    eps2, c1, c2 = 0.02, 800.0, 0.3  # b* = 2 c2 / eps^2 = 30
    assert most_efficient_batch(b, c1 * b / (eps2 * b - c2)) == pytest.approx(30.0, rel=1e-9)
    with pytest.raises(ValueError, match="need steps at two or more distinct batch sizes, got 1"):
        most_efficient_batch([32, 32], [10, 11])
    with pytest.raises(ValueError, match="do not fall with the batch size"):
        fit_critical_batch([8, 16, 32], [100, 200, 400])


def test_the_falling_side_leaves_out_a_rise_the_law_cannot_make() -> None:
    # The law up to 32, then steps rising again (a rate rule that overshoots at large batches),
    # and one size that never reached the target.
    b_crit, s_min = 12.0, 20.0
    sizes = [4, 8, 16, 32, 64, 128, 256]
    steps = [s_min * (1 + b_crit / b) for b in sizes[:4]] + [40.0, 60.0, float("nan")]
    points = pd.DataFrame({"batch_size": sizes, "reached": [True] * 6 + [False], "steps": steps})
    falling = falling_side(points)
    assert falling["batch_size"].tolist() == [4, 8, 16, 32]
    assert fit_critical_batch(falling["batch_size"], falling["steps"]).b_crit == pytest.approx(b_crit)
    assert fit_critical_batch(sizes[:6], steps[:6]).b_crit < b_crit / 2  # what the rise does to a fit of all
