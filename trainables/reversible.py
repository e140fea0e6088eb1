"""Hypergradients by exact reversal of SGD with momentum (Maclaurin, Duvenaud and Adams, 2015).

Training runs T steps of

    v <- gamma v - (1 - gamma) g,    w <- w + alpha v

on a model's flattened parameters, with ``w`` and ``v`` held as 64-bit
fixed-point integers and ``gamma = n / 2^16``, so that every step can be
undone bit for bit (the bits the momentum multiplication drops go to an
``InformationBuffer``). The reverse pass (the paper's Algorithm 2) walks
the steps backwards, recovering each ``w_t`` and ``v_t`` exactly, and
carries the gradient of the validation loss at ``w_T`` back to every
hyperparameter: a log learning rate and a momentum logit per block of
steps and per parameter group, a log L2 weight decay and a log
initialisation scale per group. Its memory does not grow with T apart
from the buffer (about log2(1/gamma) bits per parameter per step), where
autograd through the unrolled steps keeps every step's graph.

Example:
    >>> import torch
    >>> from trainables.hypertasks import DigitsTask
    >>> task = DigitsTask(hidden=(16,), train_size=200, batch_size=50, seed=0)
    >>> hyper = Hyperparameters.initial(blocks=2, groups=len(task.groups), lr=0.1, momentum=0.9)
    >>> outcome = hypergradients(task, hyper, steps=20)
    >>> outcome.exact, outcome.grads.log_lr.shape
    (True, (2, 4))
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from trainables.information_buffer import DENOMINATOR, InformationBuffer, divide_exact, multiply_exact

# Keys of a meta-iteration's trial: its config carries the hyperparameters under CONFIG_PREFIX,
# its report the hypergradients under GRAD_PREFIX and their norm as GRAD_NORM.
CONFIG_PREFIX = "hypergrad."
GRAD_PREFIX = "hypergrad.grad."
GRAD_NORM = "meta_grad_norm"

# Weights and velocities in units of 2^-50: the momentum multiplication is off by at most
# 2^16 units (6e-11), and values up to 2^12 in magnitude fit.
FRACTION_BITS = 50
_SCALE = float(2**FRACTION_BITS)
_LIMIT = float(2 ** (62 - FRACTION_BITS))


class HyperTask(Protocol):
    """A model, its parameter groups, and the losses whose hypergradients are wanted.

    ``train_loss(params, step)`` must be a deterministic function of the step
    (its batch drawn from the step number), since the reverse pass evaluates
    it again; ``params`` maps the model's parameter names to tensors.
    """

    model: nn.Module
    groups: Mapping[str, Sequence[str]]

    def train_loss(self, params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor: ...

    def val_loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


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
        return _numerators(self.logit_momentum) / DENOMINATOR


@dataclass(frozen=True)
class HyperOutcome:
    """One meta-iteration: the losses reached and the gradient of ``val_loss`` for every hyperparameter."""

    val_loss: float
    train_loss: float
    grads: Hyperparameters
    exact: bool  # the reverse pass recovered the initial weights bit for bit
    buffer_bits: float  # mean bits per parameter in the buffer after training
    buffer_bytes: int
    forward_s: float
    reverse_s: float


def to_fixed(values: np.ndarray) -> np.ndarray:
    """Float64 values as integers in units of 2^-FRACTION_BITS; refuses values out of range."""
    if not -_LIMIT < values.min(initial=0.0) <= values.max(initial=0.0) < _LIMIT:  # also catches NaN
        raise OverflowError(
            f"a weight, velocity or step left the fixed-point range (|x| < {_LIMIT:g}) or is not finite: "
            "training diverged; lower the learning rate"
        )
    return np.rint(values * _SCALE).astype(np.int64)


def _to_fixed_unchecked(values: np.ndarray) -> np.ndarray:
    """``to_fixed`` for values the forward pass already checked: undoing a step recomputes them bit for bit."""
    return np.rint(values * _SCALE).astype(np.int64)


def from_fixed(values: np.ndarray) -> np.ndarray:
    return values * (1 / _SCALE)


class ReversibleSGD:
    """SGD with momentum on a flat float64 parameter vector, exactly invertible step by step.

    ``step`` takes the gradient at the current weights; undoing it is two
    calls, since the gradient must be evaluated at the weights before the
    step: ``unstep_weights`` (w_{t-1} from w_t and v_t), then
    ``unstep_velocity`` with the gradient at w_{t-1}. Rates and numerators
    are per element; pass the same numerator array for a run of steps (the
    buffer caches its tables by identity).
    """

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = to_fixed(np.asarray(weights, dtype=np.float64))
        self.velocity = np.zeros_like(self.weights)
        self.buffer = InformationBuffer(self.weights.size)

    def weights_float(self) -> np.ndarray:
        return from_fixed(self.weights)

    def velocity_float(self) -> np.ndarray:
        return from_fixed(self.velocity)

    def step(self, grad: np.ndarray, lr: np.ndarray, numerator: np.ndarray, forget: np.ndarray) -> None:
        """One step; ``forget`` is 1 - numerator / 2^16, which callers keep for a run of steps."""
        self.velocity = multiply_exact(self.velocity, numerator, self.buffer) - to_fixed(forget * grad)
        self.weights = self.weights + to_fixed(lr * self.velocity_float())

    def unstep_weights(self, lr: np.ndarray, velocity: np.ndarray) -> None:
        """Undo the weights' update, given the velocity as floats (``velocity_float()``, which callers reuse)."""
        self.weights = self.weights - _to_fixed_unchecked(lr * velocity)

    def unstep_velocity(self, grad: np.ndarray, numerator: np.ndarray, forget: np.ndarray) -> None:
        self.velocity = divide_exact(self.velocity + _to_fixed_unchecked(forget * grad), numerator, self.buffer)


class FlatParameters:
    """A model's parameters as one float64 vector, with each element's group."""

    def __init__(self, model: nn.Module, groups: Mapping[str, Sequence[str]]) -> None:
        named = dict(model.named_parameters())
        owner: dict[str, int] = {}
        for index, names in enumerate(groups.values()):
            for name in names:
                if name not in named:
                    raise ValueError(f"parameter group '{list(groups)[index]}' names unknown parameter '{name}'")
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


def block_of(step: int, steps: int, blocks: int) -> int:
    """The block of steps that ``step`` (0-based) of ``steps`` falls in."""
    return step * blocks // steps


def hypergradients(task: HyperTask, hyper: Hyperparameters, steps: int) -> HyperOutcome:
    """Train ``steps`` steps exactly reversibly, then reverse them for the hypergradients of the validation loss."""
    flat = FlatParameters(task.model, task.groups)
    _check_shapes(hyper, flat.n_groups, steps)
    lrs = np.exp(hyper.log_lr)
    numerators = _numerators(hyper.logit_momentum)
    # The momentum trains at its rounded value n / 2^16; its gradient flows as if it were the logit's sigmoid.
    smooth = 1 / (1 + np.exp(-hyper.logit_momentum))
    slope = smooth * (1 - smooth)
    decay = flat.per_element(np.exp(hyper.log_weight_decay))

    @functools.lru_cache(maxsize=2)
    def rates(block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each element's rate, momentum numerator, 1 - momentum and (1 - momentum) x decay in ``block``."""
        numerator = flat.per_element(numerators[block])
        forget = 1 - numerator / DENOMINATOR
        return flat.per_element(lrs[block]), numerator, forget, forget * decay

    def loss_at(weights: np.ndarray, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        tensor = torch.from_numpy(weights).requires_grad_(True)
        return task.train_loss(flat.unflatten(tensor), step), tensor

    started = time.perf_counter()
    sgd = ReversibleSGD(flat.initial * flat.per_element(np.exp(hyper.log_init_scale)))
    initial = sgd.weights.copy()
    for step in range(steps):
        lr, numerator, forget, _ = rates(block_of(step, steps, hyper.blocks))
        weights = sgd.weights_float()
        (grad,) = torch.autograd.grad(*loss_at(weights, step))
        sgd.step(grad.numpy() + decay * weights, lr, numerator, forget)
    tensor = torch.from_numpy(sgd.weights_float()).requires_grad_(True)
    val_loss = task.val_loss(flat.unflatten(tensor))
    d_weights = torch.autograd.grad(val_loss, tensor)[0].numpy()
    with torch.no_grad():
        train_loss = float(task.train_loss(flat.unflatten(tensor.detach()), steps - 1))
    buffer_bits, buffer_bytes = float(sgd.buffer.bits().mean()), sgd.buffer.nbytes()
    forward_s = time.perf_counter() - started

    grads = Hyperparameters(*(np.zeros_like(getattr(hyper, name)) for name in Hyperparameters.FIELDS))
    d_velocity = np.zeros_like(d_weights)
    for step in reversed(range(steps)):
        block = block_of(step, steps, hyper.blocks)
        lr, numerator, forget, forget_decay = rates(block)
        velocity = sgd.velocity_float()
        grads.log_lr[block] += lrs[block] * flat.group_sums(d_weights * velocity)
        sgd.unstep_weights(lr, velocity)
        d_velocity = d_velocity + lr * d_weights
        weights = sgd.weights_float()
        loss, tensor = loss_at(weights, step)
        (data_grad,) = torch.autograd.grad(loss, tensor, create_graph=True)
        # Rates differ by group, so (1 - momentum) weighs d_velocity before the Hessian, not after.
        (hvp,) = torch.autograd.grad(data_grad, tensor, grad_outputs=torch.from_numpy(forget * d_velocity))
        grad = data_grad.detach().numpy() + decay * weights
        sgd.unstep_velocity(grad, numerator, forget)
        grads.logit_momentum[block] += flat.group_sums(d_velocity * (sgd.velocity_float() + grad)) * slope[block]
        decayed = forget_decay * d_velocity
        grads.log_weight_decay -= flat.group_sums(decayed * weights)
        d_weights = d_weights - hvp.numpy() - decayed
        d_velocity = d_velocity - forget * d_velocity
    grads.log_init_scale += flat.group_sums(d_weights * from_fixed(initial))
    return HyperOutcome(
        val_loss=float(val_loss.detach()),
        train_loss=train_loss,
        grads=grads,
        exact=bool(np.array_equal(sgd.weights, initial)),
        buffer_bits=buffer_bits,
        buffer_bytes=buffer_bytes,
        forward_s=forward_s,
        reverse_s=time.perf_counter() - started - forward_s,
    )


def meta_iteration_report(outcome: HyperOutcome) -> dict[str, Any]:
    """What a trial reports for one meta-iteration: losses, the hypergradients and how the reversal went."""
    return {
        "val_loss": outcome.val_loss,
        "final_val_loss": outcome.val_loss,
        "train_loss": outcome.train_loss,
        GRAD_NORM: float(np.linalg.norm(outcome.grads.vector())),
        "reversal_exact": float(outcome.exact),
        "buffer_bits_per_param": outcome.buffer_bits,
        "forward_s": outcome.forward_s,
        "reverse_s": outcome.reverse_s,
        **{f"{GRAD_PREFIX}{name}": values for name, values in outcome.grads.to_dict().items()},
    }


def unrolled_hypergradients(task: HyperTask, hyper: Hyperparameters, steps: int) -> tuple[float, Hyperparameters]:
    """The same hypergradients by autograd through every step in float64: the reference, memory O(T)."""
    flat = FlatParameters(task.model, task.groups)
    _check_shapes(hyper, flat.n_groups, steps)
    leaves = {name: torch.tensor(getattr(hyper, name), requires_grad=True) for name in Hyperparameters.FIELDS}
    # The momentum trains at its rounded value n / 2^16; its gradient flows as if it were the logit's sigmoid.
    smooth = torch.sigmoid(leaves["logit_momentum"])
    rounded = torch.as_tensor(_numerators(hyper.logit_momentum) / DENOMINATOR)
    momenta = rounded + smooth - smooth.detach()
    decay = flat.per_element_tensor(torch.exp(leaves["log_weight_decay"]))
    weights = torch.from_numpy(flat.initial) * flat.per_element_tensor(torch.exp(leaves["log_init_scale"]))
    velocity = torch.zeros_like(weights)
    for step in range(steps):
        block = block_of(step, steps, hyper.blocks)
        loss = task.train_loss(flat.unflatten(weights), step) + 0.5 * (decay * weights * weights).sum()
        (grad,) = torch.autograd.grad(loss, weights, create_graph=True)
        momentum = flat.per_element_tensor(momenta[block])
        velocity = momentum * velocity - (1 - momentum) * grad
        weights = weights + flat.per_element_tensor(torch.exp(leaves["log_lr"][block])) * velocity
    val_loss = task.val_loss(flat.unflatten(weights))
    grads = torch.autograd.grad(val_loss, list(leaves.values()))
    return float(val_loss.detach()), Hyperparameters(*(g.numpy() for g in grads))


def _numerators(logit_momentum: np.ndarray) -> np.ndarray:
    """Momentum n / 2^16 nearest each logit's sigmoid, n kept in [2, 2^16 - 1] so that both ends stay invertible."""
    momentum = 1 / (1 + np.exp(-np.asarray(logit_momentum)))
    return np.clip(np.round(momentum * DENOMINATOR), 2, DENOMINATOR - 1).astype(np.int64)


def _check_shapes(hyper: Hyperparameters, groups: int, steps: int) -> None:
    if hyper.log_lr.shape[1] != groups:
        raise ValueError(f"hyperparameters have {hyper.log_lr.shape[1]} groups, the task has {groups}")
    if steps < hyper.blocks:
        raise ValueError(f"{steps} steps cannot fill {hyper.blocks} blocks; use at least one step per block")
