"""Tasks for the reversible trainer: a model, its parameter groups, and losses drawn by step.

``DigitsTask`` is the paper's kind of experiment on data that ships with
scikit-learn (8x8 handwritten digits, 1,797 images), a tanh MLP with one
group per layer's weights and per layer's biases. ``LanguageModelTask`` is
effsweep's GPT on a sweep's tokens, in float64, with one group for the
embeddings, one per transformer block and one for the final norm.

Each step's batch comes from a generator seeded with (seed, step), so the
reverse pass draws the same batch again without storing it.

Example:
    >>> task = DigitsTask(hidden=(16,), train_size=200, batch_size=50, seed=0)
    >>> list(task.groups)
    ['layer1.weight', 'layer1.bias', 'layer2.weight', 'layer2.bias']
    >>> round(task.val_loss(dict(task.model.named_parameters())).item(), 1)
    2.4
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.reversal import block_of, hypergradients, meta_iteration_report
from trainables.model import GPT, ModelConfig


class DigitsTask:
    """Classify scikit-learn's bundled 8x8 digits with a tanh MLP; the images left after training validate."""

    def __init__(
        self, *, hidden: Sequence[int] = (50, 50, 50), train_size: int = 1000, batch_size: int = 100, seed: int = 0
    ) -> None:
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        if not 0 < train_size < len(labels):
            raise ValueError(f"train_size must be in (0, {len(labels)}), got {train_size}")
        if not 0 < batch_size <= train_size:
            raise ValueError(f"batch_size must be in (0, train_size={train_size}], got {batch_size}")
        order = np.random.default_rng(seed).permutation(len(labels))
        inputs = torch.from_numpy(images / 16.0)
        targets = torch.from_numpy(labels)
        self._train = inputs[order[:train_size]], targets[order[:train_size]]
        self._val = inputs[order[train_size:]], targets[order[train_size:]]
        self._batch_size, self._seed = batch_size, seed
        torch.manual_seed(seed)
        widths = [inputs.shape[1], *hidden, 10]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths) - 2:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers).double()
        linear = [name for name, module in self.model.named_children() if isinstance(module, nn.Linear)]
        self.groups: dict[str, list[str]] = {}
        for number, name in enumerate(linear, start=1):
            self.groups[f"layer{number}.weight"] = [f"{name}.weight"]
            self.groups[f"layer{number}.bias"] = [f"{name}.bias"]

    def train_loss(self, params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        inputs, targets = self._train
        rows = torch.from_numpy(_batch_rows(len(targets), self._batch_size, self._seed, step))
        return F.cross_entropy(functional_call(self.model, dict(params), (inputs[rows],)), targets[rows])

    def val_loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs, targets = self._val
        return F.cross_entropy(functional_call(self.model, dict(params), (inputs,)), targets)


class LanguageModelTask:
    """effsweep's GPT on a token stream, random windows per step; fixed validation windows."""

    def __init__(
        self, model_cfg: ModelConfig, tokens: np.ndarray, val_windows: np.ndarray, *, batch_size: int, seed: int
    ) -> None:
        window = model_cfg.seq_len + 1
        if len(tokens) < window:
            raise ValueError(f"the training data holds {len(tokens)} tokens, fewer than one window of {window}")
        self._tokens = torch.from_numpy(tokens.astype(np.int64))
        self._starts = len(tokens) - window + 1
        self._val = torch.from_numpy(val_windows.astype(np.int64))
        self._batch_size, self._seed, self._window = batch_size, seed, window
        torch.manual_seed(seed)
        self.model = GPT(model_cfg).double()
        self.groups = lm_groups(self.model)

    def train_loss(self, params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        starts = torch.from_numpy(_batch_rows(self._starts, self._batch_size, self._seed, step))
        windows = self._tokens[starts[:, None] + torch.arange(self._window)]
        return self._loss(params, windows)

    def val_loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._loss(params, self._val)

    def _loss(self, params: Mapping[str, torch.Tensor], windows: torch.Tensor) -> torch.Tensor:
        # The fused CPU attention kernels have no double backward, which the reverse pass needs.
        with sdpa_kernel(SDPBackend.MATH):
            logits = functional_call(self.model, dict(params), (windows[:, :-1],))
        return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())


def lm_meta_iteration(cfg: TrialConfig, data: SweepData, hyper: Hyperparameters) -> dict[str, Any]:
    """One meta-iteration on a sweep trial's LM: its data selection, batch size, model and step budget."""
    documents = data.training_documents(cfg.selection)
    task = LanguageModelTask(
        cfg.model, data.train.select(documents), data.val_windows, batch_size=cfg.batch_size, seed=cfg.seed
    )
    steps = cfg.total_steps
    report = meta_iteration_report(hypergradients(task, hyper, steps))
    lrs = np.exp(hyper.log_lr)
    return {
        **data.selection_metrics(documents),
        **report,
        "step": float(steps),
        "tokens": float(steps * cfg.tokens_per_step),
        # Training compute, as every trial counts it; the reverse pass costs about three times more again.
        "compute": float(steps * cfg.tokens_per_step),
        "lr": float(lrs[-1].mean()),
        "lr_sum": float(sum(lrs[block_of(s, steps, len(lrs))].mean() for s in range(steps))),
        "wall_s": report["forward_s"] + report["reverse_s"],
    }


def lm_groups(model: GPT) -> dict[str, list[str]]:
    """Parameter groups of the GPT: embeddings, each transformer block, the final norm."""
    groups: dict[str, list[str]] = {name: [] for name in lm_group_names(model.cfg)}
    for name, _ in model.named_parameters():
        if name.startswith("blocks."):
            groups[f"block{name.split('.')[1]}"].append(name)
        elif name.startswith("ln_f."):
            groups["final_norm"].append(name)
        else:
            groups["embeddings"].append(name)
    return groups


def lm_group_names(model_cfg: ModelConfig) -> list[str]:
    """The group names ``lm_groups`` gives a GPT of this shape, without building one."""
    return ["embeddings", *(f"block{i}" for i in range(model_cfg.n_layer)), "final_norm"]


def _batch_rows(population: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of step ``step``'s batch: SplitMix64 of (seed, step, position), so no generator is built per step."""
    first = (seed * 0xD1B54A32D192ED03 + step * batch_size) % 2**64  # any seed: Python ints, then 64 bits
    counter = np.arange(batch_size, dtype=np.uint64) + np.uint64(first)
    mixed = counter * np.uint64(0x9E3779B97F4A7C15)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((mixed ^ (mixed >> np.uint64(31))) % np.uint64(population)).astype(np.int64)
