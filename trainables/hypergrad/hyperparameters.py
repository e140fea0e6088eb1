"""The continuous hyperparameters the ``hypergrad`` searcher learns, in the spaces their gradients are taken in.

Example:
    >>> hyper = Hyperparameters.initial(blocks=3, groups=2, lr=0.1, momentum=0.9)
    >>> hyper.log_lr.shape, hyper.vector().size
    ((3, 2), 16)
    >>> float(hyper.momenta()[0, 0])  # the rounded momentum n / 2^16 that training uses
    0.899993896484375
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.hypergrad.information_buffer import DENOMINATOR


@dataclass
class Hyperparameters:
    """The continuous hyperparameters, each in the space its gradient is taken in.

    ``log_lr`` and ``logit_momentum`` are (blocks, groups): T steps split into
    equal blocks, each with its own value per parameter group.
    """

    log_lr: np.ndarray
    logit_momentum: np.ndarray
    log_weight_decay: np.ndarray
    log_init_scale: np.ndarray

    FIELDS = ("log_lr", "logit_momentum", "log_weight_decay", "log_init_scale")

    def __post_init__(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if self.log_lr.ndim != 2 or self.log_lr.shape != self.logit_momentum.shape:
            raise ValueError(
                f"log_lr {self.log_lr.shape} and logit_momentum {self.logit_momentum.shape} "
                "must both be (blocks, groups)"
            )
        groups = self.log_lr.shape[1]
        for name in ("log_weight_decay", "log_init_scale"):
            if getattr(self, name).shape != (groups,):
                raise ValueError(f"{name} must have one value per group ({groups}), got {getattr(self, name).shape}")

    @classmethod
    def initial(
        cls,
        *,
        blocks: int,
        groups: int,
        lr: float,
        momentum: float,
        weight_decay: float = 1e-4,
        init_scale: float = 1.0,
    ) -> Hyperparameters:
        """Constant schedules: the same rate and momentum in every block and group."""
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("init_scale", init_scale)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        return cls(
            np.full((blocks, groups), math.log(lr)),
            np.full((blocks, groups), math.log(momentum / (1 - momentum))),
            np.full(groups, math.log(weight_decay)),
            np.full(groups, math.log(init_scale)),
        )

    @property
    def blocks(self) -> int:
        return self.log_lr.shape[0]

    def to_dict(self) -> dict[str, list]:
        return {name: getattr(self, name).tolist() for name in self.FIELDS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """The inverse of ``to_dict``."""
        missing = [name for name in cls.FIELDS if name not in values]
        if missing:
            raise ValueError(f"hyperparameters are missing {', '.join(missing)}")
        return cls(*(values[name] for name in cls.FIELDS))

    def vector(self) -> np.ndarray:
        """All values in one flat vector (the meta-optimiser's view)."""
        return np.concatenate([getattr(self, name).ravel() for name in self.FIELDS])

    def with_vector(self, vector: np.ndarray) -> Hyperparameters:
        """The same shapes filled from ``vector``."""
        parts, start = [], 0
        for name in self.FIELDS:
            shape = getattr(self, name).shape
            size = int(np.prod(shape))
            parts.append(np.asarray(vector[start : start + size]).reshape(shape))
            start += size
        return Hyperparameters(*parts)

    def momenta(self) -> np.ndarray:
        """The momentum each block and group trains with (rounded to n / 2^16)."""
        return momentum_numerators(self.logit_momentum) / DENOMINATOR


def momentum_numerators(logit_momentum: np.ndarray) -> np.ndarray:
    """Momentum n / 2^16 nearest each logit's sigmoid, n kept in [2, 2^16 - 1] so that both ends stay invertible."""
    momentum = sigmoid(np.asarray(logit_momentum))
    return np.clip(np.round(momentum * DENOMINATOR), 2, DENOMINATOR - 1).astype(np.int64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, from a momentum logit to a momentum."""
    return 1 / (1 + np.exp(-x))
