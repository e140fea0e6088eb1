"""What a sweep's trials ask of the Ray cluster, how many of them it runs at once, and asks it cannot meet.

A trial under Ray Train reserves ``resources.workers`` workers of ``resources.cpus`` CPUs and
``resources.gpus`` GPUs each; a plain Tune trial (one worker, no GPU) reserves ``resources.cpus`` CPUs.
The cluster is Ray's view of it, ``ray.cluster_resources()``: the totals of the nodes it has now.
See docs/deploy.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from orchestrator.spec import ResourcesSection, SpecError, SweepSpec

logger = logging.getLogger("effsweep.resources")

# The spec fields that ask for a resource, each with Ray's name for it.
RAY_NAMES = {"cpus": "CPU", "gpus": "GPU"}
# Ray keeps resource amounts to four decimals; this keeps float rounding (3 * 0.1 is 0.30000000000000004) from
# costing a trial its place.
_SLACK = 1e-6


def trial_ask(resources: ResourcesSection) -> dict[str, float]:
    """What one trial reserves in all, by spec field (every worker's share together); a resource it asks none of is
    left out.

    >>> trial_ask(ResourcesSection(workers=2, cpus=3, gpus=1))
    {'cpus': 6.0, 'gpus': 2.0}
    """
    per_worker = {"cpus": resources.cpus, "gpus": resources.gpus}
    return {field: resources.workers * amount for field, amount in per_worker.items() if amount > 0}


def trials_at_once(ask: Mapping[str, float], cluster: Mapping[str, float]) -> int:
    """How many trials that each ask ``ask`` (by spec field) the ``cluster``'s totals (by Ray's names) hold at once:
    the scarcest resource decides, and at least 1.

    >>> trials_at_once({"cpus": 1.0, "gpus": 1.0}, {"CPU": 16.0, "GPU": 2.0})
    2
    """
    fits = [int(cluster.get(RAY_NAMES[field], 0.0) / amount + _SLACK) for field, amount in ask.items()]
    return max(1, min(fits, default=1))


def default_concurrency(spec: SweepSpec, cluster: Mapping[str, float]) -> int | None:
    """The spec's ``concurrency``; else, for Ray Train trials, as many as ``cluster`` holds at once (their Tune
    drivers hold nothing, so Tune alone would start every trial); else None: Tune starts plain trials as their own
    CPUs fit, and on a cluster that grows, as the new nodes' CPUs fit too."""
    if spec.concurrency is not None or not spec.resources.distributed:
        return spec.concurrency
    return trials_at_once(trial_ask(spec.resources), cluster)


def shortfalls(resources: ResourcesSection, cluster: Mapping[str, float]) -> list[str]:
    """One ``resources.FIELD: ...`` line for each resource that a trial asks more of than ``cluster`` has in all."""
    lines = []
    for field, amount in trial_ask(resources).items():
        name = RAY_NAMES[field]
        has = cluster.get(name, 0.0)
        if amount > has + _SLACK:
            each = f" ({resources.workers} workers × {getattr(resources, field):g})" if resources.workers > 1 else ""
            asks = f"a trial asks for {_amount(amount, name)}{each}"
            lines.append(f"resources.{field}: {asks}; the cluster has {_amount(has, name)}")
    return lines


def check_cluster(spec: SweepSpec, cluster: Mapping[str, float], *, can_grow: bool) -> None:
    """Refuse (``SpecError``) a spec whose trials ask for more than ``cluster`` has in all, as they would wait
    forever; where the cluster ``can_grow`` (an autoscaler may add nodes), warn instead."""
    problems = shortfalls(spec.resources, cluster)
    if problems and not can_grow:
        raise SpecError(
            [f"{p} (ask for less, or run the sweep on a cluster that has them: --address)" for p in problems]
        )
    # Ray Train trials' default concurrency counts the nodes there are now: 1 while any resource is missing.
    alone = spec.concurrency is None and spec.resources.distributed
    then = ", one at a time (set concurrency to run more at once)" if alone else ""
    for problem in problems:
        logger.warning("%s now: trials wait for nodes that have them%s", problem, then)


def _amount(amount: float, name: str) -> str:
    return f"{amount:g} {name}" + ("" if amount == 1 else "s")
