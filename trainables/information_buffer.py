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

Example:
    >>> import torch
    >>> buffer = InformationBuffer(3)
    >>> values = torch.tensor([123456789, -987654321, 5], dtype=torch.int64)
    >>> numerator = torch.full((3,), 58982, dtype=torch.int64)  # momentum 0.9
    >>> scaled = multiply_exact(values, numerator, buffer)
    >>> scaled.tolist()
    [111063107, -888917721, 0]
    >>> divide_exact(scaled, numerator, buffer).tolist()
    [123456789, -987654321, 5]
"""

from __future__ import annotations

import torch

RATIO_BITS = 16
DENOMINATOR = 1 << RATIO_BITS
_HEAD_LOW_BITS = 31  # the head lives in [2^31, 2^63): an int64 that never overflows
_HEAD_LOW = 1 << _HEAD_LOW_BITS
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
        self.head = torch.full((size,), _HEAD_LOW, dtype=torch.int64)
        self.depth = torch.zeros(size, dtype=torch.int64)
        self._words = torch.zeros(size, capacity, dtype=torch.int32)

    def __len__(self) -> int:
        return self.head.numel()

    def bits(self) -> torch.Tensor:
        """Information held by each element, in bits: its stack's words and its head above 2^31."""
        return _WORD_BITS * self.depth.double() + torch.log2(self.head.double()) - _HEAD_LOW_BITS

    def nbytes(self) -> int:
        """Memory the buffer occupies now (the stack is allocated in whole columns)."""
        return self.head.nbytes + self.depth.nbytes + self._words.nbytes

    def push_low_bits(self, symbols: torch.Tensor) -> None:
        """Store ``symbols`` in [0, 2^16) (a remainder modulo 2^16)."""
        self._spill(self.head >= 1 << (63 - RATIO_BITS))
        self.head = self.head * DENOMINATOR + symbols

    def pop_low_bits(self) -> torch.Tensor:
        """Undo ``push_low_bits``: the symbols in [0, 2^16) it stored last."""
        symbols = self.head & (DENOMINATOR - 1)
        self.head = self.head >> RATIO_BITS
        self._refill()
        return symbols

    def push_uniform(self, symbols: torch.Tensor, base: torch.Tensor) -> None:
        """Store ``symbols``, each in [0, base) for its element's ``base`` (2 to 2^31)."""
        freq, start = _frequency(symbols, base)
        self._spill(self.head >= freq << _WORD_BITS)
        self.head = torch.div(self.head, freq, rounding_mode="floor") * _PRECISION + start + self.head % freq

    def pop_uniform(self, base: torch.Tensor) -> torch.Tensor:
        """Undo ``push_uniform`` with the same ``base``: the symbols it stored last."""
        slot = self.head & (_PRECISION - 1)
        symbols = _symbol(slot, base)
        freq, start = _frequency(symbols, base)
        self.head = freq * (self.head >> _PRECISION_BITS) + slot - start
        self._refill()
        return symbols

    def _spill(self, mask: torch.Tensor) -> None:
        """Move the low 32 bits of the masked heads onto their stacks."""
        index = mask.nonzero().squeeze(1)
        if index.numel() == 0:
            return
        depth = self.depth[index]
        if int(depth.max()) >= self._words.shape[1]:
            self._grow()
        self._words[index, depth] = ((self.head[index] & _WORD_MASK) - _WORD_OFFSET).to(torch.int32)
        self.depth[index] = depth + 1
        self.head[index] = self.head[index] >> _WORD_BITS

    def _refill(self) -> None:
        """Bring heads that fell below 2^31 back up with a word from their stacks (zeros when empty)."""
        index = (self.head < _HEAD_LOW).nonzero().squeeze(1)
        if index.numel() == 0:
            return
        depth = (self.depth[index] - 1).clamp(min=0)
        stacked = self.depth[index] > 0
        words = torch.where(stacked, self._words[index, depth].to(torch.int64) + _WORD_OFFSET, 0)
        self.depth[index] = depth
        self.head[index] = (self.head[index] << _WORD_BITS) | words

    def _grow(self) -> None:
        extra = torch.zeros_like(self._words)
        self._words = torch.cat([self._words, extra], dim=1)


def multiply_exact(values: torch.Tensor, numerator: torch.Tensor, buffer: InformationBuffer) -> torch.Tensor:
    """``values * numerator / 2^16`` as integers, the lost information kept in ``buffer``.

    As in the paper, the result is ``(values div 2^16) * numerator`` plus a
    value in [0, numerator) taken from the buffer, so it is within
    ``numerator`` units of the true product: fixed-point callers keep
    enough fractional bits for that to be negligible. ``numerator`` in [2, 2^16).
    """
    buffer.push_low_bits(values & (DENOMINATOR - 1))
    return (values >> RATIO_BITS) * numerator + buffer.pop_uniform(numerator)


def divide_exact(values: torch.Tensor, numerator: torch.Tensor, buffer: InformationBuffer) -> torch.Tensor:
    """Undo ``multiply_exact`` with the same ``numerator``: the values before it, bit for bit."""
    buffer.push_uniform(values % numerator, numerator)
    return torch.div(values, numerator, rounding_mode="floor") * DENOMINATOR + buffer.pop_low_bits()


def _frequency(symbols: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each symbol's frequency out of 2^31 and where its range starts: the first ``extra`` symbols get one more."""
    share = _PRECISION // base
    extra = _PRECISION - share * base
    freq = share + (symbols < extra).to(torch.int64)
    start = symbols * share + torch.minimum(symbols, extra)
    return freq, start


def _symbol(slot: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """The symbol whose range holds ``slot``, inverting ``_frequency``'s starts."""
    share = _PRECISION // base
    extra = _PRECISION - share * base
    boundary = extra * (share + 1)
    return torch.where(
        slot < boundary,
        torch.div(slot, share + 1, rounding_mode="floor"),
        extra + torch.div(slot - boundary, share, rounding_mode="floor"),
    )
