"""Exact multiplication of fixed-point integers by a ratio n/2^16, keeping the bits it loses.

Maclaurin, Duvenaud and Adams (2015) reverse SGD with momentum exactly by
storing weights and velocities as integers and multiplying velocities by
the momentum ``n / 2^16`` in a way that can be undone: the remainder of
the division by 2^16 goes into an *information buffer*, and the numerator's
missing low part comes back out of it. Their buffer is one Python big
integer per weight. Here it is a vectorised range-asymmetric-numeral-system
(rANS) coder, one per element: a 64-bit head, kept within [2^31, 2^63), and a
stack of 32-bit words that the head spills into and refills from. Pushing a
value uniform over ``b`` symbols grows the state by log2(b) bits and popping
one shrinks it by as much, so a multiplication by ``n / 2^16`` (push 16
bits, pop log2(n)) costs log2(2^16 / n) bits: log2(1/momentum) per step.

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
_HEAD_LOW_BITS = 31  # between operations the head lives in [2^31, 2^63): an int64 that never overflows
_HEAD_LOW = 1 << _HEAD_LOW_BITS
_SPILL_AT = 1 << (63 - RATIO_BITS)
_WORD_BITS = 32
_WORD_MASK = (1 << _WORD_BITS) - 1
_WORD_OFFSET = 1 << 31  # words are stored as int32, shifted down by 2^31
# Uniform symbols over n values use frequencies out of 2^31, as even as integers allow.
_PRECISION_BITS = 31
_PRECISION = 1 << _PRECISION_BITS


class InformationBuffer:
    """One rANS coder per element: push and pop symbols uniform over a per-element base, exactly.

    ``bits()`` is what the buffer holds per element beyond its empty state.
    """

    def __init__(self, size: int, *, capacity: int = 4) -> None:
        if size < 1:
            raise ValueError(f"an information buffer needs at least one element, got size={size}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 word per element, got {capacity}")
        self.head = np.full(size, _HEAD_LOW, dtype=np.int64)
        self.depth = np.zeros(size, dtype=np.int64)
        self._words = np.zeros((size, capacity), dtype=np.int32)
        self._deepest = 0  # at least the largest depth, kept without a reduction per spill
        self._tables: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.head.size

    def bits(self) -> np.ndarray:
        """Information held by each element, in bits: its stack's words and its head above 2^31."""
        return _WORD_BITS * self.depth + np.log2(self.head.astype(np.float64)) - _HEAD_LOW_BITS

    def nbytes(self) -> int:
        """Memory the buffer occupies now (the stack is allocated in whole columns)."""
        return self.head.nbytes + self.depth.nbytes + self._words.nbytes

    def push_low_bits(self, symbols: np.ndarray) -> None:
        """Store ``symbols`` in [0, 2^16) (a remainder modulo 2^16)."""
        self._spill(np.flatnonzero(self.head >= _SPILL_AT))
        self.head = self.head * DENOMINATOR + symbols

    def pop_low_bits(self) -> np.ndarray:
        """Undo ``push_low_bits``: the symbols in [0, 2^16) it stored last."""
        symbols = self.head & (DENOMINATOR - 1)
        self.head = self.head >> RATIO_BITS
        self._refill()
        return symbols

    def push_uniform(self, symbols: np.ndarray, base: np.ndarray) -> None:
        """Store ``symbols``, each in [0, base) for its element's ``base`` (2 to 2^31)."""
        freq, start = _frequency(symbols, self._table(base))
        self._spill(np.flatnonzero(self.head >= freq << _WORD_BITS))
        quotient, remainder = np.divmod(self.head, freq)
        self.head = quotient * _PRECISION + start + remainder

    def pop_uniform(self, base: np.ndarray) -> np.ndarray:
        """Undo ``push_uniform`` with the same ``base``: the symbols it stored last."""
        table = self._table(base)
        slot = self.head & (_PRECISION - 1)
        symbols = _symbol(slot, table)
        freq, start = _frequency(symbols, table)
        self.head = freq * (self.head >> _PRECISION_BITS) + slot - start
        self._refill()
        return symbols

    def _table(self, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each element's share of 2^31, how many symbols get one more, and where those end (cached per base)."""
        if self._tables is None or self._tables[0] is not base:
            share = _PRECISION // base
            extra = _PRECISION - share * base
            self._tables = (base, (share, extra, extra * (share + 1)))
        return self._tables[1]

    def _spill(self, index: np.ndarray) -> None:
        """Move the low 32 bits of the heads at ``index`` onto their stacks."""
        if index.size == 0:
            return
        self._deepest += 1
        if self._deepest >= self._words.shape[1]:
            self._deepest = int(self.depth.max()) + 1
            if self._deepest >= self._words.shape[1]:
                self._words = np.concatenate([self._words, np.zeros_like(self._words)], axis=1)
        depth = self.depth[index]
        heads = self.head[index]
        self._words[index, depth] = (heads & _WORD_MASK) - _WORD_OFFSET
        self.depth[index] = depth + 1
        self.head[index] = heads >> _WORD_BITS

    def _refill(self) -> None:
        """Bring heads that fell below 2^31 back up with a word from their stacks (zeros when empty)."""
        index = np.flatnonzero(self.head < _HEAD_LOW)
        if index.size == 0:
            return
        stacked = self.depth[index] > 0
        depth = self.depth[index] - stacked
        words = np.where(stacked, self._words[index, depth].astype(np.int64) + _WORD_OFFSET, 0)
        self.depth[index] = depth
        self.head[index] = (self.head[index] << _WORD_BITS) | words


def multiply_exact(values: np.ndarray, numerator: np.ndarray, buffer: InformationBuffer) -> np.ndarray:
    """``values * numerator / 2^16`` as integers, the lost information kept in ``buffer``.

    As in the paper, the result is ``(values div 2^16) * numerator`` plus a
    value in [0, numerator) taken from the buffer, so it is within
    ``numerator`` units of the true product: fixed-point callers keep
    enough fractional bits for that to be negligible. ``numerator`` in [2, 2^16).
    """
    buffer.push_low_bits(values & (DENOMINATOR - 1))
    return (values >> RATIO_BITS) * numerator + buffer.pop_uniform(numerator)


def divide_exact(values: np.ndarray, numerator: np.ndarray, buffer: InformationBuffer) -> np.ndarray:
    """Undo ``multiply_exact`` with the same ``numerator``: the values before it, bit for bit."""
    quotient, remainder = np.divmod(values, numerator)
    buffer.push_uniform(remainder, numerator)
    return quotient * DENOMINATOR + buffer.pop_low_bits()


def _frequency(symbols: np.ndarray, table: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each symbol's frequency out of 2^31 and where its range starts: the first ``extra`` symbols get one more."""
    share, extra, _ = table
    below = symbols < extra
    return share + below, symbols * share + np.where(below, symbols, extra)


def _symbol(slot: np.ndarray, table: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The symbol whose range holds ``slot``, inverting ``_frequency``'s starts."""
    share, extra, boundary = table
    return np.where(slot < boundary, slot // (share + 1), extra + (slot - boundary) // share)
