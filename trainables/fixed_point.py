"""SGD with momentum on fixed-point integers, exactly invertible step by step.

Example:
    >>> import numpy as np
    >>> sgd = ReversibleSGD(np.array([0.5, -0.25]))
    >>> start = sgd.weights.copy()
    >>> lr, numerator = np.full(2, 0.1), np.full(2, 58982)
    >>> forget = 1 - numerator / 2**16
    >>> grad = np.array([0.3, -0.7])
    >>> sgd.step(grad, lr, numerator, forget)
    >>> sgd.unstep_weights(lr, sgd.velocity_float())
    >>> sgd.unstep_velocity(grad, numerator, forget)
    >>> sgd.is_initial(start)
    True
"""

from __future__ import annotations

import numpy as np

from trainables.information_buffer import InformationBuffer, divide_exact, multiply_exact

# Weights and velocities in units of 2^-50: the momentum multiplication is off by at most
# 2^16 units (6e-11), and values up to 2^12 in magnitude fit.
FRACTION_BITS = 50
_SCALE = float(2**FRACTION_BITS)
_LIMIT = float(2 ** (62 - FRACTION_BITS))


class FixedPointOverflow(OverflowError):
    """A weight, velocity or update left the fixed-point range: training diverged."""


def to_fixed(values: np.ndarray, what: str = "a value") -> np.ndarray:
    """Float64 values as integers in units of 2^-FRACTION_BITS; refuses values out of range.

    Example:
        >>> to_fixed(np.array([0.5, -0.25])) == np.array([2**49, -(2**48)])
        array([ True,  True])
    """
    if not -_LIMIT < values.min(initial=0.0) <= values.max(initial=0.0) < _LIMIT:  # also catches NaN
        raise FixedPointOverflow(
            f"{what} left the fixed-point range (|x| < {_LIMIT:g}) or is not finite (largest magnitude "
            f"{np.abs(values).max():.3g}): training diverged; lower the learning rate or the initial scale"
        )
    return np.rint(values * _SCALE).astype(np.int64)


def _check_range(values: np.ndarray, what: str) -> None:
    """Keep |values| below 2^62 units, so that adding an update (also below 2^62) cannot wrap int64."""
    if values.max(initial=0) >= 1 << 62 or values.min(initial=0) <= -(1 << 62):
        raise FixedPointOverflow(
            f"{what} left the fixed-point range (|x| < {_LIMIT:g}): training diverged; lower the learning rate"
        )


def _to_fixed_unchecked(values: np.ndarray) -> np.ndarray:
    """``to_fixed`` for values the forward pass already checked: undoing a step recomputes them bit for bit."""
    return np.rint(values * _SCALE).astype(np.int64)


def from_fixed(values: np.ndarray) -> np.ndarray:
    return values * (1 / _SCALE)


class ReversibleSGD:
    """SGD with momentum on a flat float64 parameter vector, exactly invertible step by step.

    ``step`` takes the gradient at the current weights; undoing it is two
    calls, since the gradient must be evaluated at the weights before the
    step: ``unstep_weights`` (w_{t-1} from w_t and v_t), then
    ``unstep_velocity`` with the gradient at w_{t-1}. Rates and numerators
    are per element; pass the same numerator array for a run of steps (the
    buffer caches its tables by identity).
    """

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = to_fixed(np.asarray(weights, dtype=np.float64), "an initial weight")
        self.velocity = np.zeros_like(self.weights)
        self.buffer = InformationBuffer(self.weights.size)

    def weights_float(self) -> np.ndarray:
        return from_fixed(self.weights)

    def velocity_float(self) -> np.ndarray:
        return from_fixed(self.velocity)

    def step(self, grad: np.ndarray, lr: np.ndarray, numerator: np.ndarray, forget: np.ndarray) -> None:
        """One step; ``forget`` is 1 - numerator / 2^16, which callers keep for a run of steps."""
        scaled = multiply_exact(self.velocity, numerator, self.buffer)  # |scaled| <= |velocity|
        self.velocity = scaled - to_fixed(forget * grad, "a gradient term (1 - momentum) g")
        _check_range(self.velocity, "a velocity")
        self.weights = self.weights + to_fixed(lr * self.velocity_float(), "a weight update")
        _check_range(self.weights, "a weight")

    def is_initial(self, weights: np.ndarray) -> bool:
        """Whether the state is exactly where training started: these weights, no velocity, an empty buffer."""
        return bool(np.array_equal(self.weights, weights)) and not self.velocity.any() and self.buffer.is_empty()

    def unstep_weights(self, lr: np.ndarray, velocity: np.ndarray) -> None:
        """Undo the weights' update, given the velocity as floats (``velocity_float()``, which callers reuse)."""
        self.weights = self.weights - _to_fixed_unchecked(lr * velocity)

    def unstep_velocity(self, grad: np.ndarray, numerator: np.ndarray, forget: np.ndarray) -> None:
        self.velocity = divide_exact(self.velocity + _to_fixed_unchecked(forget * grad), numerator, self.buffer)
