"""``inverse_power``: warmup, then (1 + t / t0)^(-beta). See docs/schedules.md."""

from __future__ import annotations

from typing import Literal

import numpy as np

from trainables.schedules.base import DecayExponent, DecayTimescaleFrac, WarmupSchedule, with_warmup


class InversePowerSchedule(WarmupSchedule):
    """Warmup, then an inverse power decay of exponent ``decay_exponent`` and timescale ``decay_timescale_frac``."""

    name: Literal["inverse_power"] = "inverse_power"
    decay_exponent: DecayExponent
    decay_timescale_frac: DecayTimescaleFrac

    def timescale(self, total_steps: int) -> float:
        """t0 in steps; at least one."""
        return max(self.decay_timescale_frac * total_steps, 1.0)

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        return inverse_power(
            np.arange(total_steps), total_steps, n_warmup=self.warmup_steps(total_steps),
            t0=self.timescale(total_steps), beta=self.decay_exponent,
        )  # fmt: skip


def inverse_power(step: np.ndarray, total_steps: int, *, n_warmup: int, t0: float, beta: float) -> np.ndarray:
    """(1 + t / t0)^(-beta), t counting steps after warmup."""
    after = (1.0 + np.clip(step - n_warmup, 0, None) / t0) ** (-beta)
    return with_warmup(step, n_warmup, after, 1.0)
