"""Batched kernels behind :mod:`rspose_tune.losses`: rank and sort errors of many groups at once.

Nothing here validates input; :mod:`._rank_sort` does that and calls :func:`rank_sort_terms`.

Notation (per ranking group): ``s`` scores, ``y`` labels, ``P`` positives, ``N`` negatives,
``H_d(x) = clamp(x / (2d) + 1/2, 0, 1)`` for ``d > 0`` and ``[x >= 0]`` for ``d = 0``.

How the (P, M) pairwise tensor is avoided. ``H_d`` is piecewise linear, so a sum
``sum_j w_j H_d(v_j - q)`` over values ``v_j`` sorted once per group is "total weight of the values
``>= q + d``" plus a linear part over the values in ``(q - d, q + d)``, read off prefix sums of
``w`` and ``w * v`` at two :func:`torch.searchsorted` positions (:func:`step_sums`). That gives
``FP(i)`` (over the sorted negatives), ``R+(i)``, ``S+(i)`` and the numerator of ``l_sort(i)``
(over the sorted positives). The error-driven gradient of the negatives,
``sum_i c_i H_d(s_j - s_i)``, is read back through the same two positions per positive with
difference arrays and cumulative sums. The rank part is therefore O(G * M) memory. Only the
target sort error needs pairs: its condition ``[y_j >= y_i]`` is not an interval of scores, so the
masked (P, P) tensor ``m_ij = [y_j < y_i] H_s(s_j - s_i)`` is built, O(G * P**2).

Groups are processed in chunks whose (Gc, P, P) and (Gc, M) tensors hold about
:data:`CHUNK_ELEMENTS` elements; the two (Gc, P, P) buffers are allocated once per call and
reused by every chunk. Peak memory is then the (G, M) inputs and gradients plus a constant.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["CHUNK_ELEMENTS", "EPS", "rank_sort_terms", "sort_last_dim", "step_positions", "step_sums"]

#: Errors or pmf denominators at or below this do not produce a gradient (as in RankSortLoss).
EPS = 1e-10

#: Target number of elements of the per-chunk (Gc, P, P) and (Gc, M) tensors, per device type.
#: 2**22 float32 elements are 16 MiB. Smaller chunks fit the caches better, but every chunk costs
#: ~100 operator calls (each an OpenMP barrier when multi-threaded), so fewer, larger ones win.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 25}

_F64 = torch.float64


@functools.cache
def _numpy():  # noqa: ANN202
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with every supported torch install
        return None
    return numpy


def sort_last_dim(x: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.sort(x, dim=-1)`` (values, indices) for a 2-D tensor; via NumPy's argsort on CPU.

    On CPU, ``torch.sort`` along rows is about 4x slower than NumPy's SIMD argsort
    (x86-simd-sort), and sorting is the largest single cost of the rank loss. Without NumPy, or
    off CPU, this is ``torch.sort``. Ties may come out in either order.
    """
    np = _numpy()
    if np is None or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.sort(x, dim=-1)
    order = torch.from_numpy(np.argsort(x.detach().numpy(), axis=-1)).to(torch.long)
    return x.gather(-1, order), order


def _exclusive_cumsum(x: Tensor) -> Tensor:
    """(G, L) -> (G, L + 1) float64: ``out[:, k] = x[:, :k].sum(1)``."""
    out = torch.empty(x.shape[0], x.shape[1] + 1, dtype=_F64, device=x.device)
    out[:, 0] = 0.0
    torch.cumsum(x, dim=1, dtype=_F64, out=out[:, 1:])
    return out


def step_positions(sorted_vals: Tensor, queries: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Positions ``(lo, hi)`` (G, Q) int64 in ascending rows ``sorted_vals`` for :func:`step_sums`.

    ``hi`` is the first value ``>= q + d`` (the values from there count fully), ``lo`` the first
    value ``> q - d`` (those in ``[lo, hi)`` count linearly); ``lo == hi`` when ``delta == 0``.
    One :func:`torch.searchsorted` call: ``v > q - d`` is ``v >= nextafter(q - d, +inf)``.
    """
    if delta == 0:
        hi = torch.searchsorted(sorted_vals, queries)
        return hi, hi
    lower = torch.nextafter(queries - delta, queries.new_tensor(math.inf))
    both = torch.searchsorted(sorted_vals, torch.cat((lower, queries + delta), dim=1))
    lo, hi = both.split(queries.shape[1], dim=1)
    return lo, torch.maximum(hi, lo)  # hi < lo only when d is below the float resolution of q


def step_sums(
    sorted_vals: Tensor,
    total: Tensor,
    cum_w: Tensor | None,
    cum_wv: Tensor,
    queries: Tensor,
    delta: float,
    positions: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``sum_j w_j H_delta(v_j - q)`` for every query ``q``, from sorted values and prefix sums.

    Args:
        sorted_vals: (G, L) ascending per row; padding is ``+inf`` (after the real values).
        total: (G,) float64, the total weight of the real values of each row.
        cum_w: (G, L + 1) float64 exclusive prefix sums of the weights (0 on padding), or None
            for unit weights (the prefix sum is then the position).
        cum_wv: (G, L + 1) float64 exclusive prefix sums of ``w * v``, finite at least up to
            each row's number of real values.
        queries: (G, Q), finite, the dtype of ``sorted_vals``.
        delta: smoothing half-width ``d >= 0``.
        positions: ``step_positions(sorted_vals, queries, delta)`` if already known.

    Returns:
        ``(sums, lo, hi)``: sums (G, Q) float64 and the positions of :func:`step_positions`.
    """
    lo, hi = step_positions(sorted_vals, queries, delta) if positions is None else positions

    def prefix(pos: Tensor) -> Tensor:
        return pos.to(_F64) if cum_w is None else cum_w.gather(1, pos)

    w_hi = prefix(hi)
    if delta == 0:
        return total[:, None] - w_hi, lo, hi
    linear = cum_wv.gather(1, hi) - cum_wv.gather(1, lo) - (w_hi - prefix(lo)) * (queries.to(_F64) - delta)
    return total[:, None] - w_hi + linear / (2.0 * delta), lo, hi


class _Chunk:
    """One chunk of groups: its rows, positives gathered into a padded (Gc, P) layout."""

    def __init__(self, s: Tensor, y_pos: Tensor, pos: Tensor, pidx: Tensor, pmask: Tensor) -> None:
        self.s = s  # (Gc, M) scores
        self.pos = pos  # (Gc, M) bool
        self.pidx = pidx  # (Gc, P) column of each positive, 0 on padding
        self.pmask = pmask  # (Gc, P) real positives
        self.n_pos = pmask.sum(1)
        self.sp = s.gather(1, pidx).masked_fill_(~pmask, 0.0)  # (Gc, P) their scores, 0 on padding
        self.yp = y_pos  # (Gc, P) their labels
        # The positives sorted by score (padding +inf last), with the prefix sums used by
        # step_sums for unit weights and for the weights 1 - y.
        vals, order = sort_last_dim(self.sp.masked_fill(~pmask, math.inf))
        self.sorted_sp = vals
        real = vals.nan_to_num(posinf=0.0)
        omy = (1.0 - self.yp).masked_fill_(~pmask, 0.0).gather(1, order)
        self.cum_v = _exclusive_cumsum(real)
        self.cum_omy = _exclusive_cumsum(omy)
        self.cum_omy_v = _exclusive_cumsum(omy * real)
        self.total_omy = self.cum_omy[:, -1]


def _count_rows(mask: Tensor) -> Tensor:
    """Number of True per row of a 2-D bool tensor, int64 (several times faster than ``sum``)."""
    return mask.view(torch.uint8).sum(1, dtype=torch.int32).long()


def _gather_positives(pos: Tensor, n_pos: Tensor) -> tuple[Tensor, Tensor]:
    """Columns (Gc, P) of each row's positives, left-aligned and padded with 0, and the pad mask."""
    width = int(n_pos.max())
    pmask = torch.arange(width, device=pos.device) < n_pos[:, None]
    pidx = torch.zeros(pos.shape[0], width, dtype=torch.long, device=pos.device)
    pidx[pmask] = pos.nonzero()[:, 1]
    return pidx, pmask


def _sort_error(c: _Chunk, delta: float, h_buf: Tensor, m_buf: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Sort error ``l_sort - l*_sort`` of every positive (float64 (Gc, P), 0 on padding) and,
    if ``with_grad``, its error-driven gradient on the positives (float64 (Gc, P), not yet
    divided by |P|). ``h_buf``/``m_buf`` are scratch buffers of at least Gc * P * P elements."""
    sp, yp, pmask = c.sp, c.yp, c.pmask
    gc, p = sp.shape
    n_pos = c.n_pos.to(_F64)
    # S+(i) = sum_j H_s(s_j - s_i) and sum_j H_s(s_j - s_i) (1 - y_j): sorted positives.
    at = step_positions(c.sorted_sp, sp, delta)
    s_plus, _, _ = step_sums(c.sorted_sp, n_pos, None, c.cum_v, sp, delta, at)
    num, _, _ = step_sums(c.sorted_sp, c.total_omy, c.cum_omy, c.cum_omy_v, sp, delta, at)
    # m_ij = [y_j < y_i] H_s(s_j - s_i), built in the two scratch buffers. Columns of padding
    # are -inf (H = 0); rows of padding are finite garbage whose coefficients are 0.
    h = h_buf[: gc * p * p].view(gc, p, p)
    mask = m_buf[: gc * p * p].view(gc, p, p)
    col = sp.masked_fill(~pmask, -math.inf)
    if delta > 0:
        scale = 1.0 / (2.0 * delta)
        torch.sub((col * scale)[:, None, :], (sp * scale - 0.5)[:, :, None], out=h)
        h.clamp_(0.0, 1.0)  # (s_j - s_i) / (2d) + 1/2, clamped
    else:
        torch.sub(col[:, None, :], sp[:, :, None], out=h)
        h.ge_(0.0)  # [s_j >= s_i] as 0/1 in place
    torch.gt(yp[:, :, None], yp[:, None, :], out=mask)  # [y_i > y_j] as 0/1
    h.mul_(mask)
    one_minus_y = (1.0 - yp).masked_fill_(~pmask, 0.0)
    x = torch.stack((one_minus_y, torch.ones_like(one_minus_y)), dim=-1)  # (Gc, P, 2)
    num_m, m_sum = torch.bmm(h, x).to(_F64).unbind(-1)
    tiny = torch.finfo(_F64).tiny
    l_sort = num / s_plus.clamp(min=tiny)
    # Over [y_j >= y_i] = all positives minus the mis-sorted ones; >= H(0) > 0 for real rows.
    l_star = (num - num_m) / (s_plus - m_sum).clamp(min=tiny)
    err = (l_sort - l_star).masked_fill_(~pmask, 0.0)
    if not with_grad:
        return err, None
    ok = (m_sum > EPS) & pmask
    coef = torch.where(ok, err / m_sum.clamp(min=tiny), 0.0)
    spread = torch.bmm(coef.to(h.dtype)[:, None, :], h).squeeze(1).to(_F64)  # sum_i coef_i m_ij
    grad = spread - torch.where(ok, err, 0.0)
    return err, grad.masked_fill_(~pmask, 0.0)


def _rank_error(c: _Chunk, delta: float, out: Tensor | None, scale: Tensor) -> Tensor:
    """Rank error of every positive (float64 (Gc, P), 0 on padding). With ``out`` (Gc, M), also
    writes there the error-driven gradient times ``scale`` (Gc, 1)."""
    s, pos, sp, pmask = c.s, c.pos, c.sp, c.pmask
    gc, m = s.shape
    neg_vals, neg_order = sort_last_dim(s.masked_fill(pos, math.inf))  # negatives first
    n_neg = (m - c.n_pos).to(_F64)
    # The +inf (positives) are last, so the prefix sums are finite up to position n_neg, and
    # step_sums never reads beyond (its positions for finite queries are <= n_neg).
    cum_neg = _exclusive_cumsum(neg_vals)
    fp, lo, hi = step_sums(neg_vals, n_neg, None, cum_neg, sp, delta)
    fp.clamp_(min=0.0)  # rounding of the prefix sums
    r_plus, _, _ = step_sums(c.sorted_sp, c.n_pos.to(_F64), None, c.cum_v, sp, delta)
    err = (fp / (fp + r_plus).clamp(min=torch.finfo(_F64).tiny)).masked_fill_(~pmask, 0.0)
    if out is None:
        return err
    ok = (fp > EPS) & pmask
    grad_pos = -torch.where(ok, err, 0.0) * scale
    coef = torch.where(ok, err / fp.clamp(min=EPS), 0.0) * scale  # l_rank(i) / FP(i) (0 if no gradient)
    # The negative at sorted position k receives sum_i coef_i H(v_k - s_i): coef_i in full for
    # k >= hi_i, and coef_i (v_k - s_i + d) / (2d) for lo_i <= k < hi_i. With difference arrays
    # (scatter at lo/hi, cumulative sum) that is g_k = v_k / (2d) * A_k + B_k, where
    # A_k = sum_{lo_i <= k < hi_i} coef_i and B_k = sum_{lo_i <= k < hi_i} coef_i (d - s_i) / (2d)
    # + sum_{hi_i <= k} coef_i.
    dtype = s.dtype
    if delta > 0:
        lin = coef * (delta - sp.to(_F64)) / (2.0 * delta)
        index = torch.cat((lo, hi, lo + (m + 1), hi + (m + 1)), dim=1)
        source = torch.cat((coef, -coef, lin, coef - lin), dim=1).to(dtype)
        acc = torch.zeros(gc, 2 * (m + 1), dtype=dtype, device=s.device)
        acc = acc.scatter_add_(1, index, source).view(gc, 2, m + 1).cumsum_(2)
        g_sorted = torch.addcmul(acc[:, 1, :m], neg_vals, acc[:, 0, :m], value=1.0 / (2.0 * delta))
    else:
        acc = torch.zeros(gc, m + 1, dtype=dtype, device=s.device)
        g_sorted = acc.scatter_add_(1, hi, coef.to(dtype)).cumsum_(1)[:, :m]
    out.scatter_(1, neg_order, g_sorted)  # neg_order is a permutation: every entry is written
    # That wrote garbage (+inf in neg_vals, maybe NaN) at the positives: overwrite it.
    rows, cols = pmask.nonzero(as_tuple=True)
    out[rows, c.pidx[rows, cols]] = grad_pos[rows, cols].to(dtype)
    return err


def rank_sort_terms(
    s: Tensor,
    y: Tensor,
    pos: Tensor,
    group_weights: Tensor,
    delta_rank: float,
    delta_sort: float,
    *,
    with_rank: bool = True,
    with_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Weighted-mean rank and sort losses of G groups, and their error-driven gradients.

    Args:
        s: (G, M) finite scores, float32 or float64.
        y: (G, M) labels, same dtype as ``s``.
        pos: (G, M) bool, the positives.
        group_weights: (G,) float64 >= 0.
        delta_rank, delta_sort: smoothing of the step function, >= 0.
        with_rank: compute the rank part (otherwise it is 0 with zero gradient).
        with_grad: compute the gradients (otherwise None).

    Returns:
        ``(rank, sort, g_rank, g_sort)``: 0-d float64 losses, ``sum_g w_g L_g / sum_g w_g`` over
        groups with ``w_g > 0`` and at least one positive (0 if there is none), and (G, M)
        gradients in the dtype of ``s``, scaled alike.
    """
    g_count, m = s.shape
    g_rank = torch.zeros_like(s) if with_grad else None
    g_sort = torch.zeros_like(s) if with_grad else None
    rank = torch.zeros((), dtype=_F64, device=s.device)
    sort = torch.zeros((), dtype=_F64, device=s.device)
    if g_count == 0 or m == 0:
        return rank, sort, g_rank, g_sort
    n_pos = _count_rows(pos)
    valid = (group_weights > 0) & (n_pos > 0)
    rows = valid.nonzero().squeeze(1)
    if rows.numel() == 0:
        return rank, sort, g_rank, g_sort
    w = group_weights[rows]
    factor = w / w.sum()
    every = rows.numel() == g_count  # then chunks are slices: no copies in or out
    p_max = int(n_pos[rows].max())
    budget = CHUNK_ELEMENTS.get(s.device.type, CHUNK_ELEMENTS["cuda"])
    step = max(1, budget // max(m, p_max * p_max))
    n_buf = min(step, rows.numel()) * p_max * p_max
    h_buf = torch.empty(n_buf, dtype=s.dtype, device=s.device)
    m_buf = torch.empty(n_buf, dtype=s.dtype, device=s.device)
    for start in range(0, rows.numel(), step):
        stop = min(start + step, rows.numel())
        r = rows[start:stop]
        f = factor[start:stop]
        sl = slice(start, stop) if every else r
        s_c, pos_c = s[sl], pos[sl]
        pidx, pmask = _gather_positives(pos_c, n_pos[sl])
        c = _Chunk(s_c, y[r[:, None], pidx], pos_c, pidx, pmask)
        inv_np = 1.0 / c.n_pos.to(_F64)
        scale = (f * inv_np)[:, None]
        sort_err, sort_grad = _sort_error(c, delta_sort, h_buf, m_buf, with_grad)
        sort += (f * sort_err.sum(1) * inv_np).sum()
        if with_rank:
            out = (g_rank[sl] if every else torch.empty_like(s_c)) if with_grad else None
            rank_err = _rank_error(c, delta_rank, out, scale)
            rank += (f * rank_err.sum(1) * inv_np).sum()
            if with_grad and not every:
                g_rank.index_copy_(0, r, out)
        if with_grad:
            rows_2d = r[:, None].expand_as(pidx)
            g_sort.index_put_((rows_2d, pidx), (sort_grad * scale).to(s.dtype), accumulate=True)
    return rank, sort, g_rank, g_sort
