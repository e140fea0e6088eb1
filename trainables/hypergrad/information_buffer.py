"""Exact multiplication of fixed-point integers by a ratio n/2^16, keeping the bits it loses.

Maclaurin, Duvenaud and Adams (2015) reverse SGD with momentum exactly by
storing weights and velocities as integers and multiplying velocities by
the momentum ``n / 2^16`` in a way that can be undone: the remainder of
the division by 2^16 goes into an *information buffer*, and the numerator's
missing low part comes back out of it. Their buffer is one Python big
integer per weight. Here it is a range-asymmetric-numeral-system (rANS)
coder per element: a head kept within [2^31, 2^47) and a stack of 16-bit
words. One exchange stores a 16-bit remainder (the head grows by 16 bits)
and takes out a symbol uniform over n values (it shrinks by log2 n bits, as
an rANS decode with frequencies out of 2^31), so a multiplication by
``n / 2^16`` costs log2(2^16 / n) bits: log2(1/momentum) per step. Between
the two halves the head is at most 2^63, so they need no renormalisation;
after them a head that grew past 2^47 (about 1% of elements a step at
momentum 0.9) moves its low 16 bits onto its stack.

An empty stack reads as zeros, which makes every operation a bijection on
(head, stack) and so exactly invertible.

The per-element work is compiled with Numba (``multiply_exact_at`` and
``divide_exact_at``), so that a training step's fixed-point update and its
exchange run as one pass over the parameters: as whole-array NumPy
operations they cost a few microseconds of dispatch each, dozens per step.

Example:
    >>> import numpy as np
    >>> buffer = InformationBuffer(3)
    >>> values = np.array([123456789, -987654321, 5])
    >>> numerator = np.full(3, 58982)  # momentum 0.9
    >>> scaled = multiply_exact(values, numerator, buffer)
    >>> scaled.tolist()
    [111063107, -888917721, 0]
    >>> divide_exact(scaled, numerator, buffer).tolist()
    [123456789, -987654321, 5]
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

RATIO_BITS = 16
DENOMINATOR = 1 << RATIO_BITS
_LOW_MASK = DENOMINATOR - 1
_HEAD_LOW_BITS = 31  # between operations the head lives in [2^31, 2^47)
_HEAD_LOW = 1 << _HEAD_LOW_BITS
_HEAD_HIGH = 1 << (_HEAD_LOW_BITS + RATIO_BITS)
_WORD_OFFSET = 1 << 15  # 16-bit words are stored as int16, shifted down by 2^15
# Symbols uniform over n values use frequencies out of 2^31, as even as integers allow
# (each at least 2^31 / 2^16 = 2^15, which keeps a decoded head at or above 2^31).
_PRECISION_BITS = 31
_PRECISION = 1 << _PRECISION_BITS
# A float64 quotient of integers below 2^53 truncates to the integer quotient (see ``_symbol``).
_FLOAT_EXACT = 1 << 53

# What compiled callers pass for a buffer: heads, depths, stacks, and each element's share and extra.
Coder = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class InformationBuffer:
    """One rANS coder per element: trade 16-bit remainders for symbols uniform over a per-element base.

    ``bits()`` is what the buffer holds per element beyond its empty state.
    """

    def __init__(self, size: int, *, capacity: int = 4) -> None:
        if size < 1:
            raise ValueError(f"an information buffer needs at least one element, got size={size}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 word per element, got {capacity}")
        self.head = np.full(size, _HEAD_LOW, dtype=np.int64)
        self.depth = np.zeros(size, dtype=np.int64)
        self._words = np.zeros((size, capacity), dtype=np.int16)
        self._depth_bound = 0  # no stack is deeper than this
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the last base, its shares, extras

    def bits(self) -> np.ndarray:
        """Information held by each element, in bits: its stack's words and its head above 2^31."""
        return RATIO_BITS * self.depth + np.log2(self.head.astype(np.float64)) - _HEAD_LOW_BITS

    def is_empty(self) -> bool:
        """Whether every element is back at its empty state (as a reversal that undid everything leaves it)."""
        return not self.depth.any() and bool((self.head == _HEAD_LOW).all())

    def nbytes(self) -> int:
        """Memory the buffer occupies now (the stack is allocated in whole columns)."""
        return self.head.nbytes + self.depth.nbytes + self._words.nbytes

    def coder(self, base: np.ndarray, *, storing: bool = True) -> Coder:
        """The arrays one compiled loop of ``*_at`` calls works on, for ``base`` (one per element, in
        [2, 2^16]); with ``storing`` (a multiplication or exchange), room on every stack for one more word.

        Valid for that one loop: the next ``coder`` call may reallocate the
        stacks. The numerator each ``*_at`` call is given must be its element's
        ``base``. Pass the same base array for a run of calls: its table is
        cached by identity.
        """
        if base.shape != self.head.shape:
            raise ValueError(f"bases must have the buffer's shape {self.head.shape}, got {base.shape}")
        if self._tables is None or self._tables[0] is not base:
            if base.min(initial=2) < 2 or base.max(initial=2) > DENOMINATOR:
                raise ValueError(f"bases must lie in [2, 2^16], got {base.min()} to {base.max()}")
            share = _PRECISION // base.astype(np.int64)
            self._tables = (base, share, _PRECISION - share * base)
        if storing:
            # A word goes at index depth, so depths must stay below the capacity.
            if self._depth_bound >= self._words.shape[1]:
                self._depth_bound = int(self.depth.max())
                if self._depth_bound >= self._words.shape[1]:
                    self._words = np.concatenate([self._words, np.zeros_like(self._words)], axis=1)
            self._depth_bound += 1  # a call adds at most a word to each stack
        return self.head, self.depth, self._words, self._tables[1], self._tables[2]

    def exchange(self, low: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Store ``low`` (each in [0, 2^16)) and take out symbols, each in [0, base) (base in [2, 2^16])."""
        return _each(_exchange_at, self._elementwise(low, "remainders"), self.coder(base))

    def unexchange(self, symbols: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Undo ``exchange`` with the same ``base``: put the symbols back, return the remainders it stored."""
        return _each(_unexchange_at, self._elementwise(symbols, "symbols"), self.coder(base, storing=False))

    def _elementwise(self, values: np.ndarray, what: str) -> np.ndarray:
        # The compiled loops do not check bounds: a wrong size would write past the arrays.
        values = np.asarray(values, dtype=np.int64)
        if values.shape != self.head.shape:
            raise ValueError(f"{what} must have the buffer's shape {self.head.shape}, got {values.shape}")
        return values


def multiply_exact(values: np.ndarray, numerator: np.ndarray, buffer: InformationBuffer) -> np.ndarray:
    """``values * numerator / 2^16`` as integers, the lost information kept in ``buffer``.

    As in the paper, the result is ``(values div 2^16) * numerator`` plus a
    value in [0, numerator) taken from the buffer, so it is within
    ``numerator`` units of the true product: fixed-point callers keep
    enough fractional bits for that to be negligible. ``numerator`` in [2, 2^16);
    pass the same array for a run of calls (the buffer caches its tables by identity).
    """
    return (values >> RATIO_BITS) * numerator + buffer.exchange(values & _LOW_MASK, numerator)


def divide_exact(values: np.ndarray, numerator: np.ndarray, buffer: InformationBuffer) -> np.ndarray:
    """Undo ``multiply_exact`` with the same ``numerator``: the values before it, bit for bit."""
    quotient, remainder = np.divmod(values, numerator)
    return quotient * DENOMINATOR + buffer.unexchange(remainder, numerator)


# The per-element functions are compiled without reference counting (``_nrt=False``, an option of
# Numba's own rather than of its documented API): they allocate nothing, and counting references to
# the five arrays they are passed, once per element, made a training step six times slower.
@numba.njit(cache=True, _nrt=False)
def multiply_exact_at(coder: Coder, i: int, value: int, numerator: int) -> int:
    """``multiply_exact`` for element ``i`` alone, for compiled callers; ``coder`` from ``InformationBuffer.coder``."""
    return (value >> RATIO_BITS) * numerator + _exchange_at(coder, i, value & _LOW_MASK)


@numba.njit(cache=True, _nrt=False)
def divide_exact_at(coder: Coder, i: int, value: int, numerator: int) -> int:
    """``divide_exact`` for element ``i`` alone, for compiled callers."""
    return (value // numerator) * DENOMINATOR + _unexchange_at(coder, i, value % numerator)


@numba.njit(cache=True, _nrt=False)
def _exchange_at(coder: Coder, i: int, low: int) -> int:
    head, depth, words, shares, extras = coder
    share, extra = shares[i], extras[i]
    state = (head[i] << RATIO_BITS) | low  # in [2^47, 2^63)
    slot = state & (_PRECISION - 1)
    symbol = _symbol(slot, share, extra)
    freq, start = _frequency(symbol, share, extra)
    top = freq * (state >> _PRECISION_BITS) + slot - start  # in [freq 2^16, freq 2^32)
    if top >= _HEAD_HIGH:
        words[i, depth[i]] = (top & _LOW_MASK) - _WORD_OFFSET
        depth[i] += 1
        top >>= RATIO_BITS
    head[i] = top
    return symbol


@numba.njit(cache=True, _nrt=False)
def _unexchange_at(coder: Coder, i: int, symbol: int) -> int:
    head, depth, words, shares, extras = coder
    freq, start = _frequency(symbol, shares[i], extras[i])
    top = head[i]
    # A decoded head was at least freq 2^16, so one below that had spilled a word (an empty stack reads 0).
    if top < freq << RATIO_BITS:
        word = 0
        if depth[i] > 0:
            depth[i] -= 1
            word = words[i, depth[i]] + _WORD_OFFSET
        top = (top << RATIO_BITS) | word
    quotient = np.int64(top / freq) if top < _FLOAT_EXACT else top // freq
    state = quotient * (_PRECISION - freq) + start + top
    head[i] = state >> RATIO_BITS
    return state & _LOW_MASK


@numba.njit(cache=True, _nrt=False)
def _frequency(symbol: int, share: int, extra: int) -> tuple[int, int]:
    """A symbol's frequency out of 2^31 and where its range starts: the first ``extra`` symbols get one more."""
    below = symbol < extra
    return share + below, symbol * share + (symbol if below else extra)


@numba.njit(cache=True, _nrt=False)
def _symbol(slot: int, share: int, extra: int) -> int:
    """The symbol whose range holds ``slot``: the first ``extra`` symbols have ``share + 1`` slots, the rest
    ``share``.

    The divisions run in float64, several times faster than int64's and
    exact: a quotient a / d with a < 2^31 errs by at most a 2^-53 / d after
    rounding, less than the 1 / d between a non-integer quotient and the next
    integer, so truncation gives the integer quotient.
    """
    boundary = extra * (share + 1)
    if slot < boundary:
        return np.int64(slot / (share + 1.0))
    return extra + np.int64((slot - boundary) / (share + 0.0))


@numba.njit(cache=True)
def _each(element: Callable[[Coder, int, int], int], values: np.ndarray, coder: Coder) -> np.ndarray:
    """``element(coder, i, values[i])`` for every element."""
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = element(coder, i, values[i])
    return out
