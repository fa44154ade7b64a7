"""Geometry of the RSPose heads: COCO's keypoint similarity (the OKS term, which the validation
metric averages too), the object-area factor, and the sub-pixel refinement of an arg-max by the
vertex of a parabola.

For KS only, the arg-max is refined to sub-pixel by the vertex of the parabola through it and its
two neighbours per axis (:func:`refine_argmax_2d`, :func:`refine_argmax_1d`; MMPose's decoders
refine too): on the integer 64x48 grid alone (4 input pixels per step) a perfect heatmap scores
KS ≈ 0.8 on the face keypoints of medium persons, with it KS > 0.99. The confidence and its
gradient stay at the integer arg-max.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["BBOX_AREA_FACTOR", "keypoint_similarity", "parabola_offset", "refine_argmax_1d", "refine_argmax_2d"]

#: Object area = this factor x bbox area when the annotation has no ``area`` (CrowdPose, MPII);
#: the same factor MMPose's datasets and metrics use.
BBOX_AREA_FACTOR = 0.53


def keypoint_similarity(pred: Tensor, gt: Tensor, area: Tensor, sigmas: Tensor) -> Tensor:
    """COCO's per-keypoint OKS term ``exp(-d^2 / (2 * area * (2 sigma_k)^2))``.

    As in ``pycocotools.cocoeval.computeOks``: ``k_i = 2 sigma_i``, ``s^2 = area`` and
    ``area + np.spacing(1)`` in the denominator.

    Note:
        - I: instances, K: keypoints.

    Args:
        pred (Tensor): Predicted keypoints (I, K, 2), original-image pixels.
        gt (Tensor): Ground-truth keypoints (I, K, 2), original-image pixels.
        area (Tensor): Object areas (I,), original-image pixels squared.
        sigmas (Tensor): Per-keypoint sigmas (K,) from the dataset metainfo.

    Returns:
        Tensor: KS in [0, 1], shape (I, K). No gradient is meant to flow through it.
    """
    if pred.shape != gt.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"`pred` and `gt` must both have shape (I, K, 2), got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if area.shape != pred.shape[:1] or sigmas.shape != pred.shape[1:2]:
        raise ValueError(
            f"`area` must have shape (I,) = {tuple(pred.shape[:1])} and `sigmas` (K,) = "
            f"{tuple(pred.shape[1:2])}, got {tuple(area.shape)} and {tuple(sigmas.shape)}"
        )
    d2 = (pred - gt).pow(2).sum(-1)
    variances = (2 * sigmas).pow(2)
    return torch.exp(-d2 / variances / (area[:, None] + float(np.spacing(1))) / 2)


def parabola_offset(left: Tensor, centre: Tensor, right: Tensor) -> Tensor:
    """Sub-pixel offset in [-0.5, 0.5] of the vertex of the parabola through three neighbours.

    ``centre`` is a maximum and ``left``/``right`` its neighbours along one axis (same shape).
    Exact for a quadratic; for MMPose's sigma=2 heatmap Gaussians the error is below 0.02 px.
    Where the three values do not bend downwards (flat, or a border) the offset is 0.
    """
    denom = left - 2 * centre + right
    bends = denom < 0
    offset = 0.5 * (left - right) / torch.where(bends, denom, torch.ones_like(denom))
    return torch.where(bends, offset, torch.zeros_like(offset)).clamp(-0.5, 0.5)


def refine_argmax_1d(values: Tensor, index: Tensor) -> Tensor:
    """Arg-max ``index`` (...,) of ``values`` (..., M) plus its :func:`parabola_offset`, as float."""
    size = values.shape[-1]
    left_i = (index - 1).clamp_min(0)
    right_i = (index + 1).clamp_max(size - 1)
    picked = values.gather(-1, torch.stack([left_i, index, right_i], dim=-1))
    offset = parabola_offset(picked[..., 0], picked[..., 1], picked[..., 2])
    inside = (index > 0) & (index < size - 1)
    return index.to(values.dtype) + torch.where(inside, offset, torch.zeros_like(offset))


def refine_argmax_2d(heatmaps: Tensor, index: Tensor) -> Tensor:
    """(x, y) of the flat arg-max ``index`` (B, K) of ``heatmaps`` (B, K, H, W), sub-pixel refined
    per axis with :func:`parabola_offset`; shape (B, K, 2), heatmap pixels."""
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.flatten(2)
    x = index % w
    y = torch.div(index, w, rounding_mode="floor")
    neighbours = torch.stack(
        [
            index - (x > 0).long(),
            index + (x < w - 1).long(),
            index - w * (y > 0).long(),
            index + w * (y < h - 1).long(),
            index,
        ],
        dim=-1,
    )
    v = flat.gather(-1, neighbours)
    centre = v[..., 4]
    dx = torch.where((x > 0) & (x < w - 1), parabola_offset(v[..., 0], centre, v[..., 1]), torch.zeros_like(centre))
    dy = torch.where((y > 0) & (y < h - 1), parabola_offset(v[..., 2], centre, v[..., 3]), torch.zeros_like(centre))
    return torch.stack([x.to(heatmaps.dtype) + dx, y.to(heatmaps.dtype) + dy], dim=-1)
