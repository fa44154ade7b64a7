"""RSPose's ranking losses: Spatial Rank + Spatial Sort, and Instance Sort (pure torch).

Both follow RankSortLoss (Oksuz et al., "Rank & Sort Loss for Object Detection and Instance
Segmentation", ICCV 2021): the losses are the rank error (how many negatives outrank each
positive) and the sort error (how far the positives are from being ordered by their labels),
and the gradients are the error-driven ones of that paper, not the autograd of the formula.
Unlike RankSortLoss, the ranking and sorting step functions may use different smoothings, and
every group (a heatmap of one keypoint of one instance, a SimCC vector, ...) is ranked on its own,
all groups at once. See :mod:`._core` for how this avoids any (P, M) pairwise tensor.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ._core import rank_sort_terms

__all__ = ["instance_sort", "spatial_rank_sort"]


class _RankSortFunction(torch.autograd.Function):
    """(rank, sort) with the error-driven gradients, computed in the forward pass and saved."""

    @staticmethod
    def forward(ctx, logits, labels, pos, group_weights, delta_rank, delta_sort, with_rank, with_grad):  # noqa: ANN001, ANN205
        rank, sort, g_rank, g_sort = rank_sort_terms(
            logits, labels, pos, group_weights, delta_rank, delta_sort,
            with_rank=with_rank, with_grad=with_grad,
        )
        ctx.save_for_backward(g_rank, g_sort)
        return rank.to(logits.dtype), sort.to(logits.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rank, grad_sort):  # noqa: ANN001, ANN205
        g_rank, g_sort = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.addcmul(g_rank * grad_rank, g_sort, grad_sort)
        return grad, None, None, None, None, None, None, None


def _check_delta(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"The value of `{name}` is {value}, but must be finite and `{name} >= 0`")
    return value


class NonFiniteError(ValueError):
    """A loss input (logits, scores, labels, weights) holds NaN or inf: in training, the model diverged."""


def _check_finite(name: str, tensor: Tensor) -> None:
    # A finite sum proves every entry finite (NaN and inf propagate) in one cheap reduction;
    # only when it is not (or overflows) are the entries checked one by one.
    if tensor.numel() == 0 or math.isfinite(float(tensor.sum())):
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f"`{name}` contains {bad} non-finite value(s) (NaN or inf); every entry must be finite"
        )


def _check_matrix(name: str, tensor: object) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"`{name}` must be 2-D, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {tensor.dtype}")
    return tensor


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _check_same_shape(name: str, tensor: object, ref_name: str, ref: Tensor) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.shape != ref.shape:
        raise ValueError(
            f"`{name}` must have the same shape as `{ref_name}`: got {name} {tuple(tensor.shape)} "
            f"and {ref_name} {tuple(ref.shape)}"
        )
    return tensor


def _check_weights(weights: object, shape: tuple[int, ...], ref_name: str, ref: Tensor) -> Tensor | None:
    if weights is None:
        return None
    if not isinstance(weights, Tensor):
        raise TypeError(f"`weights` must be a torch.Tensor or None, got {type(weights).__name__}")
    if tuple(weights.shape) != shape:
        raise ValueError(
            f"`weights` must have shape {shape} for `{ref_name}` of shape {tuple(ref.shape)}, "
            f"got {tuple(weights.shape)}"
        )
    weights = weights.detach().to(device=ref.device, dtype=torch.float64)
    _check_finite("weights", weights)
    if bool((weights < 0).any()):
        raise ValueError(f"`weights` must be >= 0, got minimum {float(weights.min())}")
    return weights


def spatial_rank_sort(
    logits: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    *,
    delta_rank: float = 0.4,
    delta_sort: float = 1.5,
    pos_thr: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Spatial Rank and Spatial Sort losses of G ranking groups, with error-driven gradients.

    In each group the positives (``labels > pos_thr``) should outrank every negative (rank loss)
    and be ordered among themselves by their labels (sort loss). With the smoothed step
    ``H_d(x) = clamp(x / (2d) + 1/2, 0, 1)`` (``[x >= 0]`` for ``d = 0``), for each positive i:
    ``FP(i) = sum_{j in N} H_r(s_j - s_i)``, ``R+(i) = sum_{j in P} H_r(s_j - s_i)`` (i counts
    itself), rank error ``FP / (FP + R+)``; sort error ``l_sort - l*_sort`` where ``l_sort`` is
    the ``H_s``-weighted mean of ``1 - y_j`` over the positives and ``l*_sort`` the same over the
    positives with ``y_j >= y_i``. A group's losses are the means over its positives; the result
    is their ``weights``-weighted mean over the groups that have ``weight > 0`` and a positive.

    Note:
        - G: number of ranking groups (e.g. instances x keypoints).
        - M: elements per group (e.g. H*W heatmap pixels, or the bins of one SimCC axis).
        - P: positives of a group; memory is O(G*M + G*P**2), never O(G*P*M).

        The gradient w.r.t. ``logits`` is the error-driven one of RankSortLoss (Oksuz et al.,
        2021), not the autograd of the formula above: each positive's rank error is pushed onto
        it (negative sign) and spread over the negatives in proportion to ``H_r(s_j - s_i) /
        FP(i)``; its sort error onto it and over the positives with smaller labels in proportion
        to ``H_s(s_j - s_i)``; divided by |P| and weighted like the loss. ``rank`` and ``sort``
        carry their own gradients, so ``c_r * rank + c_s * sort`` back-propagates
        ``c_r * g_rank + c_s * g_sort``. With ``delta_rank == delta_sort`` this is exactly
        RankSortLoss's algorithm, applied to each group. Second derivatives are not supported.

        The sums over the smoothed step come from prefix sums, accurate to about
        ``1e-16 * M * max|logits| / delta`` (float64; float32 inputs are computed in float32
        with float64 prefix sums), so a positive delta below ~1e-6 of the logits' scale is only
        approximate: use ``delta = 0`` for a hard step.

    Args:
        logits: (G, M) scores, finite.
        labels: (G, M) targets, typically in [0, 1] (e.g. a Gaussian heatmap).
        weights: (G,) group weights >= 0, or None for all 1 (e.g. keypoint visibility).
        delta_rank: smoothing ``d >= 0`` of the step function for the rank loss.
        delta_sort: smoothing ``d >= 0`` of the step function for the sort loss.
        pos_thr: elements with ``labels > pos_thr`` are the positives, the rest negatives.

    Returns:
        ``(rank, sort)``: two 0-d tensors in the dtype of ``logits`` (float64 stays float64,
        other dtypes are computed in float32). Both are 0, with zero gradient, when no group
        has ``weight > 0`` and a positive.

    Raises:
        ValueError: if a shape is wrong (both shapes are printed), an input is NaN/inf, a weight
            is negative, or a delta is negative or not finite.
        TypeError: if an argument has the wrong type.
    """
    logits = _check_matrix("logits", logits)
    labels = _check_same_shape("labels", labels, "logits", logits)
    delta_rank = _check_delta("delta_rank", delta_rank)
    delta_sort = _check_delta("delta_sort", delta_sort)
    if isinstance(pos_thr, bool) or not isinstance(pos_thr, numbers.Real) or not math.isfinite(pos_thr):
        raise ValueError(f"`pos_thr` must be a finite real number, got {pos_thr!r}")
    weights = _check_weights(weights, (logits.shape[0],), "logits", logits)
    _check_finite("logits", logits.detach())
    labels = labels.detach().to(device=logits.device)
    _check_finite("labels", labels)

    dtype = _compute_dtype(logits)
    pos = labels > float(pos_thr)
    if weights is None:
        weights = torch.ones(logits.shape[0], dtype=torch.float64, device=logits.device)
    with_grad = torch.is_grad_enabled() and logits.requires_grad
    rank, sort = _RankSortFunction.apply(
        logits.to(dtype), labels.to(dtype), pos, weights, delta_rank, delta_sort, True, with_grad
    )
    return rank.to(logits.dtype), sort.to(logits.dtype)


def instance_sort(scores: Tensor, ks: Tensor, weights: Tensor | None = None, *, delta: float = 3.0) -> Tensor:
    """Instance Sort loss: per keypoint type, instance confidences ordered by keypoint similarity.

    For every keypoint type k (a column), the valid instances (``weights[:, k] > 0``) are all
    positives, labelled by their keypoint similarity ``ks`` (no negatives), and the sort loss of
    :func:`spatial_rank_sort` applies with step smoothing ``delta``: an instance's score should
    be above those of instances with a lower similarity. The result is the mean over the keypoint
    types with at least 2 valid instances (a single instance is always sorted), 0 if none.

    Note:
        - I: instances (e.g. all person instances of a batch).
        - K: keypoint types.

        ``weights`` only selects the valid instances: its magnitude is not used. The gradient
        w.r.t. ``scores`` is the error-driven one of RankSortLoss (see
        :func:`spatial_rank_sort`), divided by the number of valid instances of the column and
        the number of columns averaged over; not the autograd of the formula.

    Args:
        scores: (I, K) predicted confidences (logits), finite.
        ks: (I, K) keypoint-similarity targets, in [0, 1].
        weights: (I, K) validity, >= 0 (> 0 means valid), or None for all valid.
        delta: smoothing ``d >= 0`` of the step function.

    Returns:
        0-d tensor in the dtype of ``scores`` (float64 stays float64, others use float32).

    Raises:
        ValueError: if a shape is wrong (both shapes are printed), an input is NaN/inf, a weight
            is negative, or ``delta`` is negative or not finite.
        TypeError: if an argument has the wrong type.
    """
    scores = _check_matrix("scores", scores)
    ks = _check_same_shape("ks", ks, "scores", scores)
    delta = _check_delta("delta", delta)
    weights = _check_weights(weights, tuple(scores.shape), "scores", scores)
    _check_finite("scores", scores.detach())
    ks = ks.detach().to(device=scores.device)
    _check_finite("ks", ks)

    dtype = _compute_dtype(scores)
    valid = torch.ones_like(ks, dtype=torch.bool) if weights is None else weights > 0
    pos = valid.t().contiguous()  # (K, I): one group per keypoint type
    group_weights = (pos.sum(1) >= 2).to(torch.float64)
    with_grad = torch.is_grad_enabled() and scores.requires_grad
    _, sort = _RankSortFunction.apply(
        scores.t().contiguous().to(dtype), ks.t().contiguous().to(dtype), pos, group_weights,
        0.0, delta, False, with_grad,
    )
    return sort.to(scores.dtype)
