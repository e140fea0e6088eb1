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
    >>> from trainables.hypergrad.tasks import DigitsTask
    >>> task = DigitsTask(hidden=(16,), train_size=200, batch_size=50, seed=0)
    >>> hyper = Hyperparameters.initial(blocks=2, groups=len(task.groups), lr=0.1, momentum=0.9)
    >>> outcome = hypergradients(task, hyper, steps=20)
    >>> outcome.exact, outcome.grads.log_lr.shape
    (True, (2, 4))
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from trainables.hypergrad.fixed_point import ReversibleSGD, from_fixed
from trainables.hypergrad.flat_parameters import FlatParameters
from trainables.hypergrad.hyperparameters import Hyperparameters, momentum_numerators, sigmoid
from trainables.hypergrad.information_buffer import DENOMINATOR
from trainables.loop import OBJECTIVE

# Keys of a meta-iteration's trial: its config carries the hyperparameters under CONFIG_PREFIX,
# its report the hypergradients under GRAD_PREFIX and their norm as GRAD_NORM.
CONFIG_PREFIX = "hypergrad."
GRAD_PREFIX = "hypergrad.grad."
GRAD_NORM = "meta_grad_norm"
REVERSAL_EXACT = "reversal_exact"


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


@dataclass(frozen=True)
class HyperOutcome:
    """One meta-iteration: the losses reached and the gradient of ``val_loss`` for every hyperparameter."""

    val_loss: float
    train_loss: float
    grads: Hyperparameters
    exact: bool  # the reverse pass ended exactly where training began: weights, zero velocity, empty buffer
    buffer_bits: float  # mean bits per parameter in the buffer after training
    buffer_bytes: int
    forward_s: float
    reverse_s: float


def block_of(step: int, steps: int, blocks: int) -> int:
    """The block of steps that ``step`` (0-based) of ``steps`` falls in: equal blocks, the later ones longer.

    Example:
        >>> [block_of(step, 10, 3) for step in range(10)]
        [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    """
    return step * blocks // steps


def hypergradients(task: HyperTask, hyper: Hyperparameters, steps: int) -> HyperOutcome:
    """Train ``steps`` steps exactly reversibly, then reverse them for the hypergradients of the validation loss."""
    flat = FlatParameters(task.model, task.groups)
    _check_shapes(hyper, flat.n_groups, steps)
    lrs = np.exp(hyper.log_lr)
    numerators = momentum_numerators(hyper.logit_momentum)
    # The momentum trains at its rounded value n / 2^16; its gradient flows as if it were the logit's sigmoid.
    smooth = sigmoid(hyper.logit_momentum)
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
    velocity = sgd.velocity_float()
    for step in reversed(range(steps)):
        block = block_of(step, steps, hyper.blocks)
        lr, numerator, forget, forget_decay = rates(block)
        grads.log_lr[block] += lrs[block] * flat.group_sums(d_weights * velocity)
        sgd.unstep_weights(lr)
        d_velocity = d_velocity + lr * d_weights
        weights = sgd.weights_float()
        loss, tensor = loss_at(weights, step)
        (data_grad,) = torch.autograd.grad(loss, tensor, create_graph=True)
        # Rates differ by group, so (1 - momentum) weighs d_velocity before the Hessian, not after.
        (hvp,) = torch.autograd.grad(data_grad, tensor, grad_outputs=torch.from_numpy(forget * d_velocity))
        grad = data_grad.detach().numpy() + decay * weights
        sgd.unstep_velocity(grad, numerator, forget)
        velocity = sgd.velocity_float()  # v_{t-1}: this step's momentum gradient, and the next step's start
        grads.logit_momentum[block] += flat.group_sums(d_velocity * (velocity + grad)) * slope[block]
        decayed = forget_decay * d_velocity
        grads.log_weight_decay -= flat.group_sums(decayed * weights)
        d_weights = d_weights - hvp.numpy() - decayed
        d_velocity = d_velocity - forget * d_velocity
    grads.log_init_scale += flat.group_sums(d_weights * from_fixed(initial))
    return HyperOutcome(
        val_loss=float(val_loss.detach()),
        train_loss=train_loss,
        grads=grads,
        exact=sgd.is_initial(initial),
        buffer_bits=buffer_bits,
        buffer_bytes=buffer_bytes,
        forward_s=forward_s,
        reverse_s=time.perf_counter() - started - forward_s,
    )


def meta_iteration_report(outcome: HyperOutcome) -> dict[str, Any]:
    """What a trial reports for one meta-iteration: losses, the hypergradients and how the reversal went."""
    return {
        "val_loss": outcome.val_loss,
        OBJECTIVE: outcome.val_loss,
        "train_loss": outcome.train_loss,
        GRAD_NORM: float(np.linalg.norm(outcome.grads.vector())),
        REVERSAL_EXACT: float(outcome.exact),
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
    # As in ``hypergradients``: rounded momentum, the sigmoid's gradient.
    smooth = torch.sigmoid(leaves["logit_momentum"])
    rounded = torch.as_tensor(momentum_numerators(hyper.logit_momentum) / DENOMINATOR)
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


def _check_shapes(hyper: Hyperparameters, groups: int, steps: int) -> None:
    if hyper.log_lr.shape[1] != groups:
        raise ValueError(f"hyperparameters have {hyper.log_lr.shape[1]} groups, the task has {groups}")
    if steps < hyper.blocks:
        raise ValueError(f"{steps} steps cannot fill {hyper.blocks} blocks; use at least one step per block")
