"""SGD with momentum on fixed-point integers, exactly invertible step by step.

Example:
    >>> import numpy as np
    >>> sgd = ReversibleSGD(np.array([0.5, -0.25]))
    >>> start = sgd.weights.copy()
    >>> lr, numerator = np.full(2, 0.1), np.full(2, 58982)
    >>> forget = 1 - numerator / 2**16
    >>> grad = np.array([0.3, -0.7])
    >>> sgd.step(grad, lr, numerator, forget)
    >>> sgd.unstep_weights(lr)
    >>> sgd.unstep_velocity(grad, numerator, forget)
    >>> sgd.is_initial(start)
    True
"""

from __future__ import annotations

import numba
import numpy as np

from trainables.hypergrad.information_buffer import Coder, InformationBuffer, divide_exact_at, multiply_exact_at

# Weights and velocities in units of 2^-50: the momentum multiplication is off by at most
# 2^16 units (6e-11), and values up to 2^12 in magnitude fit.
FRACTION_BITS = 50
_SCALE = float(2**FRACTION_BITS)
_LIMIT = float(2 ** (62 - FRACTION_BITS))
_UNIT = 1 / _SCALE


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


def from_fixed(values: np.ndarray) -> np.ndarray:
    return values * _UNIT


class ReversibleSGD:
    """SGD with momentum on a flat float64 parameter vector, exactly invertible step by step.

    ``step`` takes the gradient at the current weights; undoing it is two
    calls, since the gradient must be evaluated at the weights before the
    step: ``unstep_weights`` (w_{t-1} from w_t and v_t), then
    ``unstep_velocity`` with the gradient at w_{t-1}. Rates and numerators
    are per element; pass the same numerator array for a run of steps (the
    buffer caches its tables by identity). Each call is one compiled pass
    over the elements.
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
        """One step; ``forget`` is 1 - numerator / 2^16, which callers keep for a run of steps.

        Raises ``FixedPointOverflow`` (leaving the state part-way through the
        step) when a value leaves the range: the run has diverged.
        """
        self._check_shapes(grad=grad, lr=lr, numerator=numerator, forget=forget)
        failed = _step(self.weights, self.velocity, grad, lr, numerator, forget, self.buffer.coder(numerator))
        if failed:
            raise FixedPointOverflow(
                f"{_QUANTITIES[failed - 1]} left the fixed-point range (|x| < {_LIMIT:g}) or is not finite: "
                "training diverged; lower the learning rate or the initial scale"
            )

    def is_initial(self, weights: np.ndarray) -> bool:
        """Whether the state is exactly where training started: these weights, no velocity, an empty buffer."""
        return bool(np.array_equal(self.weights, weights)) and not self.velocity.any() and self.buffer.is_empty()

    def unstep_weights(self, lr: np.ndarray) -> None:
        """Undo the weights' update of the last step."""
        self._check_shapes(lr=lr)
        _unstep_weights(self.weights, self.velocity, lr)

    def unstep_velocity(self, grad: np.ndarray, numerator: np.ndarray, forget: np.ndarray) -> None:
        """Undo the velocity's update, given the gradient at the weights ``unstep_weights`` restored.

        Raises ``FixedPointOverflow`` for a gradient term out of range, which
        the forward step would have refused: the gradient is not the one it
        took (a training loss that is not a deterministic function of the step).
        """
        self._check_shapes(grad=grad, numerator=numerator, forget=forget)
        coder = self.buffer.coder(numerator, storing=False)
        if not _unstep_velocity(self.velocity, grad, numerator, forget, coder):
            raise FixedPointOverflow(
                f"{_QUANTITIES[0]} left the fixed-point range (|x| < {_LIMIT:g}) or is not finite in the reverse "
                "pass, though not in training: the gradient differs from the one training took"
            )

    def _check_shapes(self, **arrays: np.ndarray) -> None:
        # The compiled loops do not check bounds: a wrong size would read or write past the arrays.
        for name, values in arrays.items():
            if values.shape != self.weights.shape:
                raise ValueError(f"{name} must have the weights' shape {self.weights.shape}, got {values.shape}")


# What ``_step``'s failure codes 1 to 4 name.
_QUANTITIES = ("a gradient term (1 - momentum) g", "a velocity", "a weight update", "a weight")
_FIXED_LIMIT = 1 << 62  # |fixed-point values| stay below this, so adding two cannot wrap int64


@numba.njit(cache=True, _nrt=False)
def _fixed(value: float) -> int:
    return np.int64(np.rint(value * _SCALE))


# ``_step`` and ``_unstep_velocity`` are not cached on disk: Numba would check only this file's
# timestamp, and keep running an old copy of the buffer's functions after information_buffer.py
# changed (compiling them takes about a second per process).
@numba.njit
def _step(
    weights: np.ndarray,
    velocity: np.ndarray,
    grad: np.ndarray,
    lr: np.ndarray,
    numerator: np.ndarray,
    forget: np.ndarray,
    coder: Coder,
) -> int:
    """One step in place; 0, or the 1-based index in ``_QUANTITIES`` of what left the range."""
    for i in range(weights.size):
        term = forget[i] * grad[i]
        if not -_LIMIT < term < _LIMIT:  # also catches NaN
            return 1
        moved = multiply_exact_at(coder, i, velocity[i], numerator[i]) - _fixed(term)  # |.| < 2^63
        if not -_FIXED_LIMIT < moved < _FIXED_LIMIT:
            return 2
        velocity[i] = moved
        update = lr[i] * (moved * _UNIT)
        if not -_LIMIT < update < _LIMIT:
            return 3
        weights[i] += _fixed(update)
        if not -_FIXED_LIMIT < weights[i] < _FIXED_LIMIT:
            return 4
    return 0


@numba.njit(cache=True)
def _unstep_weights(weights: np.ndarray, velocity: np.ndarray, lr: np.ndarray) -> None:
    # The values the forward step computed, bit for bit: it checked their range.
    for i in range(weights.size):
        weights[i] -= _fixed(lr[i] * (velocity[i] * _UNIT))


@numba.njit
def _unstep_velocity(
    velocity: np.ndarray, grad: np.ndarray, numerator: np.ndarray, forget: np.ndarray, coder: Coder
) -> bool:
    """Undo a step's velocity update in place; False, part-way, at a gradient term out of range."""
    for i in range(velocity.size):
        term = forget[i] * grad[i]
        if not -_LIMIT < term < _LIMIT:
            return False
        velocity[i] = divide_exact_at(coder, i, velocity[i] + _fixed(term), numerator[i])
    return True
