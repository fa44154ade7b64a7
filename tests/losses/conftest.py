"""Shared by the tests of :mod:`rspose_tune.losses`: an independent float64 reference and its helpers.

:func:`brute_force` is written without reusing anything from the package: the formulas of the
contract, one group and one positive at a time, dense over the group's elements, with the
error-driven gradients written out."""

from __future__ import annotations

import pytest
import torch

from rspose_tune.losses import spatial_rank_sort

EPS = 1e-10


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------
def step(x: torch.Tensor, d: float) -> torch.Tensor:
    if d == 0:
        return (x >= 0).double()
    return torch.clamp(x / (2 * d) + 0.5, min=0, max=1)


def brute_group(s, y, pos, dr, ds, with_rank=True):
    """Losses and error-driven gradients of one group (float64), dividing by |P|."""
    s = s.double()
    y = y.double()
    p_idx = torch.nonzero(pos).flatten().tolist()
    n_idx = torch.nonzero(~pos).flatten().tolist()
    g_rank = torch.zeros_like(s)
    g_sort = torch.zeros_like(s)
    rank_sum = 0.0
    sort_sum = 0.0
    for i in p_idx:
        sp = s[p_idx]
        yp = y[p_idx]
        if with_rank:
            h_neg = step(s[n_idx] - s[i], dr)
            fp = h_neg.sum()
            r_plus = step(sp - s[i], dr).sum()
            l_rank = fp / (fp + r_plus)
            rank_sum += float(l_rank)
            if fp > EPS:
                g_rank[i] -= l_rank
                g_rank[n_idx] += h_neg * l_rank / fp  # n_idx has no repeats
        h = step(sp - s[i], ds)
        l_sort = (h * (1 - yp)).sum() / h.sum()
        ge = (yp >= y[i]).double()
        l_star = (h * ge * (1 - yp)).sum() / (h * ge).sum()
        err = l_sort - l_star
        sort_sum += float(err)
        m = (yp < y[i]).double() * h
        if m.sum() > EPS:
            g_sort[i] -= err
            g_sort[p_idx] += m * err / m.sum()
    n = len(p_idx)
    return rank_sum / n, sort_sum / n, g_rank / n, g_sort / n


def brute_force(logits, labels, weights=None, delta_rank=0.4, delta_sort=1.5, pos_thr=0.0, pos=None):
    """Weighted batch of :func:`brute_group`; ``pos`` overrides ``labels > pos_thr``."""
    g_count = logits.shape[0]
    weights = torch.ones(g_count, dtype=torch.float64) if weights is None else weights.double()
    pos = labels > pos_thr if pos is None else pos
    rank = sort = total = 0.0
    g_rank = torch.zeros_like(logits, dtype=torch.float64)
    g_sort = torch.zeros_like(logits, dtype=torch.float64)
    parts = []
    for g in range(g_count):
        if weights[g] <= 0 or not bool(pos[g].any()):
            continue
        r, s, gr, gs = brute_group(logits[g], labels[g], pos[g], delta_rank, delta_sort)
        parts.append((g, float(weights[g]), r, s, gr, gs))
        total += float(weights[g])
    for g, w, r, s, gr, gs in parts:
        rank += w / total * r
        sort += w / total * s
        g_rank[g] = w / total * gr
        g_sort[g] = w / total * gs
    return rank, sort, g_rank, g_sort


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def make_groups(g=6, m=40, seed=0, ties=True, frac_pos=0.35, dtype=torch.float64):
    """Random groups; with ``ties``, scores and labels are quantised so that many coincide."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(g, m, generator=gen, dtype=torch.float64)
    labels = torch.rand(g, m, generator=gen, dtype=torch.float64)
    labels = labels * (torch.rand(g, m, generator=gen, dtype=torch.float64) < frac_pos)
    if ties:
        logits = torch.round(logits * 4) / 4  # steps of 0.25: ties, and |x| = d exactly
        labels = torch.round(labels * 4) / 4
    return logits.to(dtype), labels.to(dtype)


def ours(logits, labels, weights=None, coeffs=(1.0, 1.0), **kw):
    x = logits.clone().requires_grad_(True)
    rank, sort = spatial_rank_sort(x, labels, weights, **kw)
    (grad,) = torch.autograd.grad(coeffs[0] * rank + coeffs[1] * sort, x)
    return rank.detach(), sort.detach(), grad


def assert_matches(got, want, atol=1e-10):
    rank, sort, grad = got
    w_rank, w_sort, w_grad = want
    assert float(rank) == pytest.approx(float(w_rank), abs=atol)
    assert float(sort) == pytest.approx(float(w_sort), abs=atol)
    torch.testing.assert_close(grad.double(), w_grad.double(), atol=atol, rtol=0)
