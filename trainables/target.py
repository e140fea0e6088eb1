"""Running to a target loss: where a run crossed it, and when it no longer can.

Example:
    >>> crossing((10, 3.2), (15, 2.9), target=3.0)
    13.333333333333334
    >>> # Falling 0.02 a step at best lately, 10 steps left: 2.8 is out of reach, 2.95 is not.
    >>> history = [(0, 3.3), (5, 3.2), (10, 3.12), (15, 3.06)]
    >>> cannot_reach(history, steps_left=10, target=2.8), cannot_reach(history, steps_left=10, target=2.95)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence

# Reports (after the current one) whose slopes the projection may use: a few, since loss curves
# flatten, and more than one, since a single interval's slope is noisy.
WINDOW = 3


def crossing(before: tuple[int, float] | None, now: tuple[int, float], target: float) -> float:
    """The step where the validation loss crossed ``target``, linear in the loss between two reports."""
    if before is None or before[1] <= now[1]:
        return float(now[0])
    (s0, l0), (s1, l1) = before, now
    return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)


def cannot_reach(history: Sequence[tuple[int, float]], *, steps_left: float, target: float) -> bool:
    """Whether the validation loss stays above ``target`` even falling at its steepest recent rate to the end.

    ``history`` holds (step, val_loss) reports, the current one last. The
    steepest of the slopes from each of the ``WINDOW`` reports before it to
    now, held for ``steps_left`` steps, is optimistic for a loss curve that
    flattens under a constant rate, so a run judged out of reach is; with a
    decay still to come it is not (the loss falls faster then), and callers
    ask only when the rate stays as it is. Fewer than ``WINDOW`` + 1 reports
    never count as out of reach.
    """
    if len(history) <= WINDOW:
        return False
    step, loss = history[-1]
    steepest = max((earlier - loss) / (step - at) for at, earlier in history[-WINDOW - 1 : -1])
    return loss - max(steepest, 0.0) * steps_left > target
