"""A small decoder-only transformer language model, in the style of nanoGPT.

The model is deliberately plain: pre-LayerNorm blocks, causal self-attention
through ``scaled_dot_product_attention``, a GELU MLP, learned positions and an
LM head tied to the token embedding. Training code reaches it through two
seams that patch-level training (and later, other input transforms) need:
``embed`` turns token ids into input vectors and ``logits_from_embeddings``
runs the transformer on any sequence of such vectors.

The FLOPs estimate lives here, next to the architecture it counts.
"""

from __future__ import annotations

import math

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ModelConfig:
    """Shape of the language model. ``seq_len`` is the context in positions."""

    vocab_size: int = Field(257, ge=2)
    seq_len: int = Field(128, ge=1)
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    d_model: int = Field(128, ge=1)
    vocab_multiple: int = Field(1, ge=1, description="embedding rows rounded up to a multiple of this")

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and the LM head: ``vocab_size`` rounded up to ``vocab_multiple``.

        Tensor cores run the head's matrix product fastest with a multiple of 64 (nanoGPT pads GPT-2's
        50,257 to 50,304); the extra rows are never targets, so training pushes their logits down.
        """
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple


# Named sizes a spec can ask for; every field can still be overridden. The sized presets are named by
# their non-embedding parameters (``count_parameters``): 25M and 100M as in the Multi-Power-Law paper,
# GPT-2 small's shape (124M with GPT-2's vocabulary) and GPT-2 medium's (350M); they pad the vocabulary
# for tensor cores.
_PADDED = {"seq_len": 1024, "vocab_multiple": 64}
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"seq_len": 64, "n_layer": 2, "n_head": 2, "d_model": 64},
    "small": {"seq_len": 128, "n_layer": 4, "n_head": 4, "d_model": 128},
    "base": {"seq_len": 256, "n_layer": 6, "n_head": 6, "d_model": 384},
    "25m": {**_PADDED, "n_layer": 8, "n_head": 8, "d_model": 512},
    "100m": {**_PADDED, "n_layer": 14, "n_head": 12, "d_model": 768},
    "124m": {**_PADDED, "n_layer": 12, "n_head": 12, "d_model": 768},
    "350m": {**_PADDED, "n_layer": 24, "n_head": 16, "d_model": 1024},
}


class _CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        shape = (b, t, self.n_head, d // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = _CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer LM.

    Example:
        >>> import torch
        >>> model = GPT(ModelConfig(seq_len=16, n_layer=1, n_head=2, d_model=32))
        >>> idx = torch.randint(0, 257, (2, 16))
        >>> model.loss(idx, idx).shape
        torch.Size([])
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(_init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual
        # stream's variance independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``idx`` (batch, time) without positions."""
        return self.tok_emb(idx)

    def logits_from_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """Run the transformer on input vectors (batch, time, d_model)."""
        t = x.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence of {t} positions exceeds seq_len {self.cfg.seq_len}")
        x = x + self.pos_emb(torch.arange(t, device=x.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.tok_emb.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits_from_embeddings(self.embed(idx))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ``targets`` given ``idx``."""
        logits = self(idx)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def count_parameters(cfg: ModelConfig, *, non_embedding: bool = True) -> int:
    """Parameters of a GPT with this config; the tied head counts once."""
    d = cfg.d_model
    per_block = 4 * d * d + 8 * d * d + 4 * d  # attention, MLP, two LayerNorms
    total = cfg.n_layer * per_block + 2 * d  # final LayerNorm
    if not non_embedding:
        total += cfg.padded_vocab_size * d + cfg.seq_len * d
    return total


def flops_per_token(cfg: ModelConfig) -> float:
    """Forward+backward FLOPs per trained token (Kaplan et al.; nanoGPT's estimate).

    6 FLOPs per non-embedding parameter, the tied LM head's matmul, and the
    attention scores over a full context.
    """
    head = 6 * cfg.d_model * cfg.padded_vocab_size
    attention = 12 * cfg.n_layer * cfg.d_model * cfg.seq_len
    return 6 * count_parameters(cfg) + head + attention


def model_flops_utilisation(cfg: ModelConfig, tokens_per_s: float, peak_flops: float) -> float:
    """Fraction of a device's peak FLOP/s that a training throughput achieves."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return flops_per_token(cfg) * tokens_per_s / peak_flops
