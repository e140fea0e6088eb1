"""Delta-bar-delta and its retraction, against hand computations."""

from __future__ import annotations

import pytest
import torch

from trainables.step_rules.delta_bar_delta import DeltaBarDelta


def _stepped(weights: torch.nn.Parameter, opt: DeltaBarDelta, gradient: list[float]) -> None:
    weights.grad = torch.tensor(gradient)
    opt.step()


def test_dbd_matches_a_hand_computation_of_two_steps() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    lr, kappa, phi, theta = 0.1, 0.5, 0.2, 0.7
    opt = DeltaBarDelta([w], lr, direction="momentum", momentum=0.0, kappa=kappa, phi=phi, theta=theta)
    # Step 1: g_bar is 0, so no gain moves; w -= lr * 1 * g; g_bar = 0.3 g.
    _stepped(w, opt, [1.0, -2.0, 0.5])
    assert w.detach().tolist() == pytest.approx([0.9, 1.2, 0.95])
    # Step 2: the first gradient keeps its sign (gain 1 + kappa), the second flips (gain 1 - phi), the third is 0.
    _stepped(w, opt, [2.0, 1.0, 0.0])
    gains = [1 + kappa, 1 - phi, 1.0]
    assert w.detach().tolist() == pytest.approx([0.9 - lr * gains[0] * 2.0, 1.2 - lr * gains[1] * 1.0, 0.95])
    assert opt.state[w]["g_bar"].tolist() == pytest.approx([0.7 * 0.3 + 0.3 * 2.0, 0.7 * -0.6 + 0.3, 0.7 * 0.15])
    assert opt.last_rate == pytest.approx(lr * sum(gains) / 3)


@pytest.mark.parametrize("retract", [False, True])
def test_an_increase_is_withdrawn_exactly_when_the_next_gradient_contradicts_it(retract: bool) -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    kappa, phi = 0.5, 0.2
    opt = DeltaBarDelta([w], 0.1, direction="momentum", momentum=0.0, kappa=kappa, phi=phi, retract=retract)
    _stepped(w, opt, [1.0, 1.0])  # g_bar takes the sign
    _stepped(w, opt, [1.0, 1.0])  # agreement: both gains rise to 1 + kappa, provisionally
    assert opt.state[w]["gain"].tolist() == pytest.approx([1 + kappa, 1 + kappa])
    # The first parameter's next gradient contradicts the one that earned its increase; the second's confirms it.
    _stepped(w, opt, [-1.0, 1.0])
    withdrawn = 1.0 if retract else 1 + kappa
    assert opt.state[w]["gain"].tolist() == pytest.approx([withdrawn * (1 - phi), 1 + 2 * kappa])
    # A decrease is never withdrawn: the gradient returning to its old sign raises the gain afresh, no more.
    _stepped(w, opt, [1.0, 1.0])
    assert opt.state[w]["gain"][0].item() == pytest.approx(withdrawn * (1 - phi) + kappa)


def test_gains_stay_within_their_bounds_and_arguments_are_checked() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = DeltaBarDelta([w], 0.1, direction="momentum", kappa=1.0, max_gain=2.0)
    for _ in range(5):
        _stepped(w, opt, [1.0])
    assert opt.state[w]["gain"].item() == 2.0
    with pytest.raises(ValueError, match="direction must be adam or momentum, got 'rmsprop'"):
        DeltaBarDelta([w], 0.1, direction="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 <= phi < 1"):
        DeltaBarDelta([w], 0.1, phi=1.0)
