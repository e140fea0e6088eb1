"""The uniform order computed by a Ray task is the order computed in process, and its progress reaches the driver."""

from __future__ import annotations

import numpy as np

from trainables.selection.order_task import uniform_order_on_ray
from trainables.selection.orderings import uniform_document_order


def test_the_ray_task_computes_the_order_computed_here_and_reports_its_progress(local_ray: None) -> None:
    vectors = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    vectors[::50] = 0  # documents without an embedding follow the greedy's picks
    seen: list[tuple[int, int]] = []
    remote = uniform_order_on_ray(vectors, 1500, lambda picked, total: seen.append((picked, total)))
    here = uniform_document_order(vectors, 1500)
    np.testing.assert_array_equal(remote.documents, here.documents)
    np.testing.assert_array_equal(remote.distances, here.distances)
    assert remote.ranked == here.ranked == 1500
    assert len(seen) > 1 and seen[-1] == (1500, 1500)
    assert [picked for picked, _ in seen] == sorted(picked for picked, _ in seen)
