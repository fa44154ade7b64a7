"""rspose_tune.bench._losses: the benchmark's baseline loop computes the package's losses and gradients."""

from __future__ import annotations

import torch

from tests.losses.conftest import assert_matches, make_groups, ours


def test_benchmark_naive_loop_agrees():
    """The benchmark's baseline loop computes the same losses and gradients."""
    from rspose_tune.bench._losses import naive_loop

    logits, labels = make_groups(g=4, m=30, seed=6)
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    rank, sort, g_rank, g_sort = naive_loop(logits, labels, weights, 0.3, 1.1)
    assert_matches(ours(logits, labels, weights, delta_rank=0.3, delta_sort=1.1), (rank, sort, g_rank + g_sort))
