"""The ``hypergrad`` searcher: Adam meta-steps on exact hypergradients, several chains at once.

Each chain fixes the spec's discrete knobs (one combination per chain) and
walks the continuous hyperparameters of reversible SGD with momentum (log
learning rate and momentum logit per block of steps and per parameter
group, log weight decay and log initialisation scale per group): a trial
is one meta-iteration, which trains T steps, reverses them and reports the
hypergradients of its validation loss; the chain's next trial starts from
one Adam step further. A chain ends after ``meta_steps`` meta-iterations,
when a trial fails or diverges, or when the norm of its meta-gradient has
grown past ``growth`` times its smallest value and stayed there for
``patience`` meta-iterations: Maclaurin et al. (2015) find that the
hypergradient then becomes chaotic and stops being useful. With ``record``
the chains' summaries (``chain_summaries``) go to that JSON file whenever a
chain ends.

Example:
    >>> from trainables.hypergrad.hyperparameters import Hyperparameters
    >>> start = Hyperparameters.initial(blocks=2, groups=1, lr=0.1, momentum=0.9)
    >>> searcher = HypergradSearcher(start, [{"batch_size": 8}], meta_steps=3, meta_lr=0.1)
    >>> config = searcher.suggest("t1")
    >>> config["batch_size"], config["hypergrad.chain"], config["hypergrad.meta_step"]
    (8, 0, 0)
    >>> searcher.suggest("t2") is None  # the only chain waits for its trial
    True
    >>> grads = {f"hypergrad.grad.{k}": v for k, v in start.to_dict().items()}
    >>> searcher.on_trial_complete("t1", {"val_loss": 2.0, "reversal_exact": 1.0, **grads})
    >>> searcher.suggest("t2")["hypergrad.meta_step"]
    1
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.reversal import CONFIG_PREFIX, GRAD_PREFIX, REVERSAL_EXACT

CHAINS_FILE = "hypergrad/chains.json"  # in the sweep directory: how each chain ended


@dataclass
class _Chain:
    index: int
    discrete: dict[str, Any]
    point: np.ndarray
    first_moment: np.ndarray
    second_moment: np.ndarray
    meta_step: int = 0
    norms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    pending: str | None = None
    ended: str | None = None  # why the chain ended, once it has


class HypergradSearcher(Searcher):
    """Suggests each chain's next meta-iteration once its last one has reported its hypergradients."""

    def __init__(
        self,
        initial: Hyperparameters,
        chains: Sequence[Mapping[str, Any]],
        *,
        meta_steps: int,
        meta_lr: float,
        patience: int = 2,
        growth: float = 5.0,
        record: Path | None = None,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        if not chains:
            raise ValueError("the hypergrad searcher needs at least one chain")
        if meta_steps < 1:
            raise ValueError(f"meta_steps must be at least 1, got {meta_steps}")
        if meta_lr <= 0:
            raise ValueError(f"meta_lr must be positive, got {meta_lr}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if growth <= 1:
            raise ValueError(f"growth must exceed 1, got {growth}")
        super().__init__(metric=metric, mode=mode)
        self._template = initial
        self._meta_steps, self._meta_lr, self._patience, self._growth = meta_steps, meta_lr, patience, growth
        self._record = record
        start = initial.vector()
        self._chains = [
            _Chain(i, dict(d), start.copy(), np.zeros_like(start), np.zeros_like(start)) for i, d in enumerate(chains)
        ]

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for chain in self._chains:
            if chain.ended is None and chain.pending is None:
                chain.pending = trial_id
                values = self._template.with_vector(chain.point).to_dict()
                return {
                    **chain.discrete,
                    f"{CONFIG_PREFIX}chain": chain.index,
                    f"{CONFIG_PREFIX}meta_step": chain.meta_step,
                    **{f"{CONFIG_PREFIX}{name}": value for name, value in values.items()},
                }
        return Searcher.FINISHED if all(c.ended for c in self._chains) else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        chain = next((c for c in self._chains if c.pending == trial_id), None)
        if chain is None:
            return
        chain.pending = None
        self._advance(chain, result, error)
        if chain.ended and self._record is not None:
            self._record.parent.mkdir(parents=True, exist_ok=True)
            self._record.write_text(json.dumps(self.chain_summaries(), indent=1) + "\n")

    def _advance(self, chain: _Chain, result: dict | None, error: bool) -> None:
        """Record the chain's meta-iteration and take its Adam step, or end it."""
        if error or not result:
            chain.ended = "trial failed"
            return
        if f"{GRAD_PREFIX}log_lr" not in result:  # the trial diverged before it could reverse
            chain.ended = "diverged"
            return
        if result.get(REVERSAL_EXACT) != 1.0:  # its gradients would be of some other training run
            chain.ended = "reversal not exact"
            return
        grad = Hyperparameters.from_dict(
            {name: result[f"{GRAD_PREFIX}{name}"] for name in Hyperparameters.FIELDS}
        ).vector()
        loss = float(result.get("val_loss", math.nan))
        chain.losses.append(loss)
        chain.norms.append(float(np.linalg.norm(grad)))
        chain.meta_step += 1
        chain.ended = _end_reason(chain, grad, self._meta_steps, self._patience, self._growth)
        if chain.ended is None:
            chain.point, chain.first_moment, chain.second_moment = adam_step(
                chain.point, grad, chain.first_moment, chain.second_moment, step=chain.meta_step, lr=self._meta_lr
            )

    def chain_summaries(self) -> list[dict[str, Any]]:
        """Each chain's knobs, meta-iterations, losses, meta-gradient norms and why it ended."""
        return [
            {"chain": c.index, "knobs": c.discrete, "meta_steps": c.meta_step, "val_loss": c.losses,
             "meta_grad_norm": c.norms, "ended": c.ended}
            for c in self._chains
        ]  # fmt: skip

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        # A trial in flight when the sweep stopped stays pending: Tune saved it with this state and
        # runs it again, under the same id, when the sweep resumes.
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))


def adam_step(
    point: np.ndarray,
    grad: np.ndarray,
    first_moment: np.ndarray,
    second_moment: np.ndarray,
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step (``step`` counts from 1): the new point and moments; the inputs are left as they are."""
    first = betas[0] * first_moment + (1 - betas[0]) * grad
    second = betas[1] * second_moment + (1 - betas[1]) * grad * grad
    unbiased_first = first / (1 - betas[0] ** step)
    unbiased_second = second / (1 - betas[1] ** step)
    return point - lr * unbiased_first / (np.sqrt(unbiased_second) + eps), first, second


def gradient_growing(norms: Sequence[float], patience: int, growth: float) -> bool:
    """Whether each of the last ``patience`` meta-gradient norms exceeds ``growth`` times the smallest before them.

    The norm is noisy from one meta-iteration to the next and drifts as the
    rates grow; in the chaotic regime it grows by an order of magnitude and
    stays there, which a factor held over several iterations tells apart.
    """
    if len(norms) <= patience:
        return False
    floor = min(norms[:-patience])
    return all(norm > growth * floor for norm in norms[-patience:])


def _end_reason(chain: _Chain, grad: np.ndarray, meta_steps: int, patience: int, growth: float) -> str | None:
    if not (math.isfinite(chain.losses[-1]) and np.isfinite(grad).all()):
        return "diverged"
    if gradient_growing(chain.norms, patience, growth):
        return "meta-gradient growing"
    if chain.meta_step >= meta_steps:
        return "meta_steps done"
    return None
