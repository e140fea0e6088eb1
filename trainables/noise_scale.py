"""The gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018, arXiv 1812.06162, appendix A).

|G|² is the squared norm of the true gradient and tr(Σ) the trace of the
per-example gradient covariance. A gradient averaged over B examples has
E|G_B|² = |G|² + tr(Σ) / B, so the squared norms of gradients over two batch
sizes, b_small < b_big, give unbiased estimates of both:

    |G|²  = (b_big |G_big|² - b_small |G_small|²) / (b_big - b_small)
    tr(Σ) = (|G_small|² - |G_big|²) / (1 / b_small - 1 / b_big)

On one worker the small gradients are those of micro-batches and the big
one their mean; under data parallelism, each worker's gradient and the
all-reduced one. Each estimate is noisy (|G|² can even come out negative),
so ``NoiseScale`` keeps exponential moving averages of the two and reports
their ratio, as the paper does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from trainables.workers import Workers


def unbiased_terms(small_sq: float, big_sq: float, b_small: float, b_big: float) -> tuple[float, float]:
    """Unbiased (|G|², tr(Σ)) from the squared norms of gradients averaged over ``b_small`` and ``b_big`` examples.

    ``small_sq`` may be the mean squared norm of several small gradients: a
    mean of unbiased estimates stays unbiased, with less variance.

    Example:
        >>> unbiased_terms(small_sq=5.0, big_sq=3.0, b_small=1, b_big=2)
        (1.0, 4.0)
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small} and {b_big}")
    gradient_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return gradient_sq, trace


class NoiseScale:
    """Moving averages of |G|² and tr(Σ), and B_simple, their ratio.

    Example:
        >>> gns = NoiseScale(decay=0.0)
        >>> gns.update(small_sq=5.0, big_sq=3.0, b_small=1, b_big=2)
        >>> gns.value
        4.0
    """

    def __init__(self, decay: float = 0.95) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self._gradient_sq = 0.0
        self._trace = 0.0
        self._weight = 0.0  # the averages' total weight, to undo their start at zero

    def update(self, small_sq: float, big_sq: float, b_small: float, b_big: float) -> None:
        gradient_sq, trace = unbiased_terms(small_sq, big_sq, b_small, b_big)
        keep = self.decay
        self._gradient_sq = keep * self._gradient_sq + (1 - keep) * gradient_sq
        self._trace = keep * self._trace + (1 - keep) * trace
        self._weight = keep * self._weight + (1 - keep)

    @property
    def gradient_sq(self) -> float:
        return self._gradient_sq / self._weight if self._weight else math.nan

    @property
    def trace(self) -> float:
        return self._trace / self._weight if self._weight else math.nan

    @property
    def value(self) -> float:
        """B_simple; NaN before the first update or while the |G|² average is not positive."""
        if not self._weight or self._gradient_sq <= 0:
            return math.nan
        return self._trace / self._gradient_sq


def probe(
    model: nn.Module,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    window: torch.Tensor,
    workers: Workers,
    parts: int = 4,
) -> tuple[float, float, float, float] | None:
    """Squared gradient norms (small, big, b_small, b_big) for ``NoiseScale.update``; None for too small a batch.

    The worker's rows split into ``parts`` micro-batches give the small
    gradients; their mean over every worker (all-reduced) the big one. The
    gradients come from ``torch.autograd.grad``, so neither the parameters'
    ``.grad`` nor the optimizer see them: measuring does not change training.
    """
    rows = len(window) // parts
    if rows < 1:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    small_sq, total = None, None
    for part in range(parts):
        grads = torch.autograd.grad(loss_of(window[part * rows : (part + 1) * rows]), params)
        flat = torch.cat([g.reshape(-1) for g in grads]).double()
        small_sq = flat @ flat if small_sq is None else small_sq + flat @ flat
        total = flat if total is None else total + flat
    # One all-reduce, on the gradients' own device, of their sum and of the small squared norms.
    summed = workers.sum(torch.cat([total, small_sq.view(1)]))
    examples = parts * workers.world_size
    big = summed[:-1] / examples
    return float(summed[-1]) / examples, float(big @ big), float(rows), float(rows * examples)
