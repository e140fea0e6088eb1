"""Stop a trial once a smaller batch size has reached the target loss in fewer steps than it has taken.

With ``target_loss``, steps to the target S(b) can only fall as the batch
size b grows (S(b) = S_min (1 + B_crit / b)). A trial at batch size b that
has run more steps than some smaller size needed is past the batch size
with the fewest steps: whether it reaches the target later or never, the
critical-batch fit leaves it out (``orchestrator.cbs.study.falling_side``),
so the rest of its budget would buy nothing. It ends as pruned.

Example:
    >>> stopper = OutpacedStopper()
    >>> stopper("a", {"config": {"batch_size": 16}, "step": 25, "steps_to_target": 22.7})
    False
    >>> stopper("b", {"config": {"batch_size": 64}, "step": 20})  # not yet past 22.7 steps
    False
    >>> stopper("b", {"config": {"batch_size": 64}, "step": 25})
    True
    >>> stopper("c", {"config": {"batch_size": 8}, "step": 40})  # smaller sizes may need more steps
    False
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Stopper


class OutpacedStopper(Stopper):
    """Tune stopper for sweeps over ``batch_size`` with ``target_loss``: see the module docstring."""

    def __init__(self) -> None:
        self._fewest: dict[int, float] = {}  # batch size -> fewest steps to the target seen

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        batch = result.get("config", {}).get("batch_size")
        if batch is None:
            return False
        reached = result.get("steps_to_target")
        if reached is not None and math.isfinite(reached):
            self._fewest[batch] = min(self._fewest.get(batch, math.inf), float(reached))
            return False
        step = float(result.get("step", 0))
        return any(smaller < batch and steps < step for smaller, steps in self._fewest.items())

    def stop_all(self) -> bool:
        return False
