"""The uniform order of a sweep's corpus as a Ray task: on a GPU where the cluster has one, else on one node's CPUs.

The greedy max-min order (``orderings.uniform_document_order``) is the long
step of preparing a sweep that selects data; it runs on the cluster rather
than on the driver, which may be a laptop, and its progress comes back to
the driver as the task runs (a streaming generator). The order is the same
wherever it runs: the greedy is exact on any device (docs/selection.md).
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray

from trainables.selection.orderings import Progress, SelectionOrder, uniform_document_order

# How often the task looks for progress to send while the greedy runs.
PROGRESS_POLL_S = 0.2


def uniform_order_on_ray(embeddings: np.ndarray, k: int, progress: Progress | None = None) -> SelectionOrder:
    """``uniform_document_order(embeddings, k, progress)`` computed by a Ray task; this process must be on Ray."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    order = None
    for reference in _uniform_order_task.options(**task_resources(nodes)).remote(embeddings, k):
        item = ray.get(reference)
        if isinstance(item, SelectionOrder):
            order = item
        elif progress is not None:
            progress(*item)
    assert order is not None, "the ordering task ended without an order"
    return order


def task_resources(nodes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """What the ordering task asks for, given the nodes' resources: one GPU (and one CPU) where a node has a GPU,
    else every CPU of the largest node, as the greedy's matrix products use them all.

    Example:
        >>> task_resources([{"CPU": 16.0, "GPU": 2.0}, {"CPU": 8.0}]), task_resources([{"CPU": 4.0}, {"CPU": 8.0}])
        ({'num_cpus': 1, 'num_gpus': 1}, {'num_cpus': 8.0})
    """
    if any(node.get("GPU", 0) >= 1 for node in nodes):
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": max((node.get("CPU", 1.0) for node in nodes), default=1.0)}


@ray.remote
def _uniform_order_task(embeddings: np.ndarray, k: int) -> Iterator[tuple[int, int] | SelectionOrder]:
    """Yields (picked, total) as the greedy goes, then the order."""
    updates: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    # The greedy reports through a callback; it runs on a thread so that this generator can yield its reports.
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(uniform_document_order, embeddings, k, lambda picked, total: updates.put((picked, total)))
        while not running.done():
            try:
                yield updates.get(timeout=PROGRESS_POLL_S)
            except queue.Empty:
                continue
        while not updates.empty():
            yield updates.get()
        yield running.result()
