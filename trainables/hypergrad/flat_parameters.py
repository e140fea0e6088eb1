"""A model's parameters as one flat float64 vector, each element tagged with its parameter group.

Example:
    >>> from torch import nn
    >>> model = nn.Linear(3, 2)
    >>> flat = FlatParameters(model, {"weights": ["weight"], "biases": ["bias"]})
    >>> flat.initial.shape, flat.group_sums(np.ones(8)).tolist()
    ((8,), [6.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn


class FlatParameters:
    """A model's parameters as one float64 vector, with each element's group."""

    def __init__(self, model: nn.Module, groups: Mapping[str, Sequence[str]]) -> None:
        named = dict(model.named_parameters())
        owner: dict[str, int] = {}
        labels = list(groups)
        for index, names in enumerate(groups.values()):
            for name in names:
                if name not in named:
                    raise ValueError(f"parameter group '{labels[index]}' names unknown parameter '{name}'")
                if name in owner:
                    raise ValueError(f"parameter '{name}' is in groups '{labels[owner[name]]}' and '{labels[index]}'")
                owner[name] = index
        missing = sorted(set(named) - set(owner))
        if missing:
            raise ValueError(f"parameters in no group: {', '.join(missing)}")
        self.names = list(named)
        self.shapes = [named[n].shape for n in self.names]
        self.sizes = [named[n].numel() for n in self.names]
        self.n_groups = len(groups)
        self.group_index = np.concatenate([np.full(s, owner[n]) for n, s in zip(self.names, self.sizes, strict=True)])
        self._torch_index = torch.from_numpy(self.group_index)
        # Groups usually hold consecutive parameters (one layer each): then sums are slices' sums.
        starts = np.flatnonzero(np.diff(self.group_index, prepend=-1))
        consecutive = np.array_equal(self.group_index[starts], np.arange(self.n_groups))
        self._group_starts = starts if consecutive else None
        self.initial = torch.cat([named[n].detach().to(torch.float64).reshape(-1) for n in self.names]).numpy()

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = flat.split(self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def per_element(self, per_group: np.ndarray) -> np.ndarray:
        return per_group[self.group_index]

    def per_element_tensor(self, per_group: torch.Tensor) -> torch.Tensor:
        """``per_element`` keeping autograd's graph (for the unrolled reference)."""
        return per_group[self._torch_index]

    def group_sums(self, values: np.ndarray) -> np.ndarray:
        if self._group_starts is not None:
            return np.add.reduceat(values, self._group_starts)
        return np.bincount(self.group_index, weights=values, minlength=self.n_groups)
