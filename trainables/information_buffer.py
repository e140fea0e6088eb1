"""Exact multiplication of fixed-point integers by a ratio n/2^16, keeping the bits it loses.

Maclaurin, Duvenaud and Adams (2015) reverse SGD with momentum exactly by
storing weights and velocities as integers and multiplying velocities by
the momentum ``n / 2^16`` in a way that can be undone: the remainder of
the division by 2^16 goes into an *information buffer*, and the numerator's
missing low part comes back out of it. Their buffer is one Python big
integer per weight. Here it is a vectorised range-asymmetric-numeral-system
(rANS) coder, one per element: a head kept within [2^31, 2^47) and a stack of
16-bit words. One ``exchange`` stores a 16-bit remainder (the head grows by
16 bits) and takes out a symbol uniform over n values (it shrinks by log2 n
bits, as an rANS decode with frequencies out of 2^31), so a multiplication
by ``n / 2^16`` costs log2(2^16 / n) bits: log2(1/momentum) per step. Between
the two halves the head is at most 2^63, so they need no renormalisation;
after them a head that grew past 2^47 (about 1% of elements a step at
momentum 0.9) moves its low 16 bits onto its stack.

An empty stack reads as zeros, which makes every operation a bijection on
(head, stack) and so exactly invertible.

Everything is NumPy int64 arithmetic on whole arrays: an operation costs a
few microseconds of dispatch whatever the number of parameters, which
matters here since training calls it at every step.

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

_Table = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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
        # The last base seen, its table, and whether its frequencies let ``unexchange`` divide in float64.
        self._tables: tuple[np.ndarray, _Table, bool] | None = None

    def bits(self) -> np.ndarray:
        """Information held by each element, in bits: its stack's words and its head above 2^31."""
        return RATIO_BITS * self.depth + np.log2(self.head.astype(np.float64)) - _HEAD_LOW_BITS

    def is_empty(self) -> bool:
        """Whether every element is back at its empty state (as a reversal that undid everything leaves it)."""
        return not self.depth.any() and bool((self.head == _HEAD_LOW).all())

    def nbytes(self) -> int:
        """Memory the buffer occupies now (the stack is allocated in whole columns)."""
        return self.head.nbytes + self.depth.nbytes + self._words.nbytes

    def exchange(self, low: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Store ``low`` (each in [0, 2^16)) and take out symbols, each in [0, base) (base in [2, 2^16])."""
        table = self._table(base)
        state = (self.head << RATIO_BITS) | low  # in [2^47, 2^63)
        slot = state & (_PRECISION - 1)
        symbols = _symbol(slot, table)
        freq, start = _frequency(symbols, table[0], table[1])
        self.head = freq * (state >> _PRECISION_BITS) + slot - start  # in [freq 2^16, freq 2^32)
        self._spill(np.flatnonzero(self.head >= _HEAD_HIGH))
        return symbols

    def unexchange(self, symbols: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Undo ``exchange`` with the same ``base``: put the symbols back, return the remainders it stored."""
        share, extra, *_ = self._table(base)
        freq, start = _frequency(symbols, share, extra)
        # A decoded head was at least freq 2^16, so one below that had spilled a word.
        self._refill(np.flatnonzero(self.head < freq << RATIO_BITS))
        if self._tables is not None and self._tables[2]:
            # Heads are now below freq 2^32 <= 2^53: the float quotient truncates exactly (see ``_symbol``).
            quotient = (self.head / freq).astype(np.int64)
        else:
            quotient = self.head // freq
        state = quotient * (_PRECISION - freq) + start + self.head
        self.head = state >> RATIO_BITS
        return state & _LOW_MASK

    def _table(self, base: np.ndarray) -> _Table:
        """Each element's share of 2^31, how many symbols get one more, where those end, and the two divisors
        as floats (cached per base)."""
        if self._tables is None or self._tables[0] is not base:
            if base.min(initial=2) < 2 or base.max(initial=2) > DENOMINATOR:
                raise ValueError(f"bases must lie in [2, 2^16], got {base.min()} to {base.max()}")
            share = _PRECISION // base
            extra = _PRECISION - share * base
            table = (share, extra, extra * (share + 1), share + 1.0, share + 0.0)
            self._tables = (base, table, bool(share.max() < 1 << (53 - 32)))
        return self._tables[1]

    def _spill(self, index: np.ndarray) -> None:
        """Move the low 16 bits of the heads at ``index`` onto their stacks."""
        if index.size == 0:
            return
        depth = self.depth[index]
        if int(depth.max()) >= self._words.shape[1]:
            self._words = np.concatenate([self._words, np.zeros_like(self._words)], axis=1)
        heads = self.head[index]
        self._words[index, depth] = (heads & _LOW_MASK) - _WORD_OFFSET
        self.depth[index] = depth + 1
        self.head[index] = heads >> RATIO_BITS

    def _refill(self, index: np.ndarray) -> None:
        """Bring the heads at ``index`` back up with a word from their stacks (zeros when empty)."""
        if index.size == 0:
            return
        stacked = self.depth[index] > 0
        depth = self.depth[index] - stacked
        words = np.where(stacked, self._words[index, depth].astype(np.int64) + _WORD_OFFSET, 0)
        self.depth[index] = depth
        self.head[index] = (self.head[index] << RATIO_BITS) | words


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


def _frequency(symbols: np.ndarray, share: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each symbol's frequency out of 2^31 and where its range starts: the first ``extra`` symbols get one more."""
    below = symbols < extra
    return share + below, symbols * share + np.where(below, symbols, extra)


def _symbol(slot: np.ndarray, table: _Table) -> np.ndarray:
    """The symbol whose range holds ``slot``, inverting ``_frequency``'s starts.

    The divisions run in float64, twice as fast as int64's here and exact:
    a quotient a / d with a < 2^31 errs by at most a 2^-53 / d after
    rounding, less than the 1 / d between a non-integer quotient and the next
    integer, so truncation gives the integer quotient.
    """
    _, extra, boundary, wide, narrow = table
    value = slot.astype(np.float64)
    return np.where(
        slot < boundary, (value / wide).astype(np.int64), extra + ((value - boundary) / narrow).astype(np.int64)
    )
