"""Patch-level training (Shao, Meng and Zhou 2024, arXiv 2407.12665): batches and loss.

K consecutive tokens form a patch. The model's input at patch i is the mean
of its K token embeddings (no new parameters); its output at patch i scores
every one of the K tokens of patch i+1 with the one LM head, and the loss is
the mean cross-entropy over those K targets, from one log-softmax per
position. A patch sample reads K*T tokens so the model still sees T
positions: it does the work of T positions (``compute`` advances by tokens/K).
A patch step holds batch_size such samples, or batch_size/K of them so that it
reads as many tokens as a token step (``patch.tokens_per_step: equal``, the
paper's recipe: as many steps as token-level training over the same data).

The first share lambda of a trial's data is trained this way, the rest at
token level from the same weights. ``PatchBatcher`` keeps the two phases on
one pass over the data: it shuffles contiguous groups of K*T tokens each
epoch; the patch phase takes whole groups, and the token phase continues in
the same order, each group giving its K token windows. It reads the trial's
documents in place in the sweep's memory-mapped token file
(``trainables.data.tokens.TokenSpans``), and each worker of a data-parallel
trial reads only its own rows of every global batch.

The loop trains through ``TrainingLoss``, whose ``forward`` computes either
loss, so one ``DistributedDataParallel`` wrapper sees every parameter of
both phases (``trainables.workers``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.data.tokens import TokenSpans
from trainables.model import GPT


def patch_loss(model: GPT, window: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Mean next-patch cross-entropy of a (batch, K*T + K) token window.

    With K = 1 this is ``model.loss`` on the same tokens, to rounding.

    Example:
        >>> from trainables.model import ModelConfig
        >>> model = GPT(ModelConfig(seq_len=4, n_layer=1, n_head=1, d_model=8))
        >>> window = torch.randint(0, 257, (2, 4 * 3 + 3))
        >>> patch_loss(model, window, patch_size=3).shape
        torch.Size([])
    """
    batch, length = window.shape
    positions = length // patch_size - 1
    if positions < 1 or length != patch_size * (positions + 1):
        raise ValueError(f"a window of {length} tokens is not K*T + K tokens for K={patch_size}")
    inputs = window[:, : patch_size * positions].reshape(batch, positions, patch_size)
    targets = window[:, patch_size:].reshape(batch, positions, patch_size)
    logits = model.logits_from_embeddings(model.embed(inputs).mean(dim=2)).float()
    # Each position's logits score all K tokens of the next patch: one normaliser per position, and the
    # K targets' logits gathered, rather than the (batch, T, K, vocab) scores of K copies.
    target_logits = logits.gather(2, targets)
    return (torch.logsumexp(logits, dim=2, keepdim=True) - target_logits).mean()


class TrainingLoss(nn.Module):
    """The loss of a training window in ``forward``: ``patch_loss`` for patches of K > 1 tokens, else ``model.loss``.

    Example:
        >>> from trainables.model import ModelConfig
        >>> loss = TrainingLoss(GPT(ModelConfig(seq_len=4, n_layer=1, n_head=1, d_model=8)))
        >>> loss(torch.randint(0, 257, (2, 5))).shape, loss(torch.randint(0, 257, (2, 4 * 3 + 3)), 3).shape
        (torch.Size([]), torch.Size([]))
    """

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, window: torch.Tensor, patch_size: int = 1) -> torch.Tensor:
        if patch_size > 1:
            return patch_loss(self.model, window, patch_size)
        return self.model.loss(window[:, :-1], window[:, 1:])


class PatchBatcher:
    """Batches for both phases of a trial, from one shuffled pass over the data per epoch.

    The stream is cut into non-overlapping groups of K*T tokens (K the patch
    size, T the sequence length); every epoch visits all groups once, in an
    order drawn from ``seed``. ``patch_batch`` returns groups with the K
    tokens after each (the targets of its last patch); ``token_batch``
    returns token windows of T + 1 tokens, the K of each group in turn,
    continuing where the patch phase stopped. With K = 1 both are the
    token-level batches of the same order.

    A patch batch holds ``patch_rows`` groups (``batch_size`` unless given).
    Every worker of a trial draws the same order; with ``world_size``
    workers, the one of ``rank`` reads and returns rows ``rank::world_size``
    of each global batch, and no other.

    Example:
        >>> batcher = PatchBatcher(np.arange(1000, dtype=np.uint16), seq_len=8, patch_size=4, batch_size=2, seed=0)
        >>> batcher.patch_batch().shape, batcher.token_batch().shape
        (torch.Size([2, 36]), torch.Size([2, 9]))
    """

    def __init__(
        self,
        stream: np.ndarray | TokenSpans,
        *,
        seq_len: int,
        patch_size: int,
        batch_size: int,
        seed: int,
        patch_rows: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        patch_rows = batch_size if patch_rows is None else patch_rows
        if min(seq_len, patch_size, batch_size, patch_rows) < 1:
            raise ValueError(
                f"seq_len, patch_size, batch_size and patch_rows must be at least 1, got {seq_len}, {patch_size}, "
                f"{batch_size}, {patch_rows}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world_size}")
        self._group = seq_len * patch_size
        self._n_groups = (len(stream) - patch_size) // self._group
        if self._n_groups < 1:
            raise ValueError(
                f"the training data holds {len(stream)} tokens, fewer than one sample of {self._group + patch_size}"
            )
        self._stream = stream if isinstance(stream, TokenSpans) else TokenSpans.whole(stream)
        self._seq_len = seq_len
        self._patch_size = patch_size
        self._batch_size = batch_size
        self._patch_rows = patch_rows
        self._rows = slice(rank, None, world_size)
        self._rng = np.random.default_rng(seed)
        self._order = np.zeros(0, dtype=np.int64)
        self._position = 0
        self._pending = np.zeros(0, dtype=np.int64)  # token-window starts of groups already opened

    @property
    def tokens_per_patch_batch(self) -> int:
        return self._patch_rows * self._group

    @property
    def tokens_per_token_batch(self) -> int:
        return self._batch_size * self._seq_len

    def batches_per_epoch(self, patched: bool) -> int:
        """Batches in one pass over the data, in the patch phase or the token phase."""
        if patched:
            return max(1, self._n_groups // self._patch_rows)
        return max(1, self._n_groups * self._patch_size // self._batch_size)

    def patch_batch(self) -> torch.Tensor:
        """(rows, K*T + K) tokens: this worker's rows of the next groups, with the patch after each."""
        starts = self._next_groups(self._patch_rows) * self._group
        return self._windows(starts, self._group + self._patch_size)

    def token_batch(self) -> torch.Tensor:
        """(rows, T + 1) tokens: this worker's rows of the next token windows."""
        while len(self._pending) < self._batch_size:
            groups = self._next_groups(-(-(self._batch_size - len(self._pending)) // self._patch_size))
            inside = np.arange(self._patch_size) * self._seq_len
            self._pending = np.concatenate([self._pending, (groups[:, None] * self._group + inside).ravel()])
        starts, self._pending = self._pending[: self._batch_size], self._pending[self._batch_size :]
        return self._windows(starts, self._seq_len + 1)

    def state_dict(self) -> dict[str, Any]:
        """Where the batcher is in its data order, so a resumed run reads what it would have read."""
        return {
            "rng": self._rng.bit_generator.state, "order": self._order.copy(),
            "position": self._position, "pending": self._pending.copy(),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._order, self._position, self._pending = state["order"], state["position"], state["pending"]

    def _next_groups(self, count: int) -> np.ndarray:
        while len(self._order) - self._position < count:
            rest = self._order[self._position :]
            self._order = np.concatenate([rest, self._rng.permutation(self._n_groups)])
            self._position = 0
        groups = self._order[self._position : self._position + count]
        self._position += count
        return groups

    def _windows(self, starts: np.ndarray, length: int) -> torch.Tensor:
        return torch.from_numpy(self._stream.windows(starts[self._rows], length).astype(np.int64))
