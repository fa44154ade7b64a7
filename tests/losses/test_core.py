"""rspose_tune.losses._core: the sorted step sums, the sort, the torch.sort path and chunking."""

from __future__ import annotations

import math

import pytest
import torch

from rspose_tune.losses import _core
from tests.losses.conftest import assert_matches, brute_force, make_groups, ours, step


@pytest.mark.parametrize("budget", [1, 2000])
def test_chunked_equals_unchunked(monkeypatch, budget):
    logits, labels = make_groups(g=9, m=50, seed=11)
    labels[4] = 0.0  # a group without positives: the valid rows are not contiguous
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0, 0.5, 1.0, 1.0, 3.0], dtype=torch.float64)
    for w in (None, weights):
        full = ours(logits, labels, w, coeffs=(1.0, 0.7))
        with monkeypatch.context() as mp:
            mp.setitem(_core.CHUNK_ELEMENTS, "cpu", budget)  # 1 or a few groups per chunk
            chunked = ours(logits, labels, w, coeffs=(1.0, 0.7))
        assert_matches(chunked, full, atol=1e-14)
        r, s, gr, gs = brute_force(logits, labels, w)
        assert_matches(chunked, (r, s, gr + 0.7 * gs))


@pytest.mark.parametrize("weighted", [False, True])
def test_step_sums_helper(weighted):
    """The piecewise-linear sums against the dense formula, including d = 0 and ties."""
    gen = torch.Generator().manual_seed(0)
    vals = torch.round(torch.randn(3, 12, generator=gen, dtype=torch.float64) * 4) / 4
    wts = torch.rand(3, 12, generator=gen, dtype=torch.float64) if weighted else torch.ones(3, 12, dtype=torch.float64)
    count = torch.tensor([12, 7, 0])
    valid = torch.arange(12) < count[:, None]
    srt, order = vals.masked_fill(~valid, math.inf).sort(1)
    w_sorted = wts.gather(1, order).masked_fill(~valid, 0)
    v_sorted = srt.masked_fill(~valid, 0)
    pad = torch.nn.functional.pad
    cum_w = pad(w_sorted.cumsum(1), (1, 0)) if weighted else None
    cum_wv = pad((w_sorted * v_sorted).cumsum(1), (1, 0))
    total = (wts * valid).sum(1)
    queries = torch.round(torch.randn(3, 5, generator=gen, dtype=torch.float64) * 4) / 4
    for d in [0.0, 0.25, 0.5, 1.0]:
        got, _, _ = _core.step_sums(srt, total, cum_w, cum_wv, queries, d)
        want = torch.stack([
            torch.stack([(wts[g, : count[g]] * step(vals[g, : count[g]] - q, d)).sum() for q in queries[g]])
            for g in range(3)
        ])
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_torch_sort_path_gives_the_same_result(monkeypatch):
    """Off CPU (or without NumPy) the sorts are torch.sort: same losses and gradients."""
    logits, labels = make_groups(g=5, m=40, seed=8)
    want = ours(logits, labels, coeffs=(1.0, 0.3))
    monkeypatch.setattr(_core, "_numpy", lambda: None)
    assert_matches(ours(logits, labels, coeffs=(1.0, 0.3)), want, atol=1e-14)


def test_sort_last_dim_matches_torch_sort():
    x = torch.round(torch.randn(4, 50, dtype=torch.float32) * 3) / 3
    vals, order = _core.sort_last_dim(x)
    torch.testing.assert_close(vals, torch.sort(x, dim=-1).values)
    torch.testing.assert_close(x.gather(1, order), vals)
    assert order.dtype == torch.long
