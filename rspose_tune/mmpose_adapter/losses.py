"""``RSPoseLoss``: Spatial Rank and Spatial Sort for MMPose heatmaps and SimCC vectors.

Registered in MMPose's ``MODELS`` registry by :func:`rspose_tune.mmpose_adapter.setup_mmpose`.
The ranking itself lives in :mod:`rspose_tune.losses` (pure torch); this module only flattens
MMPose's tensors into ranking groups, turns target weights into group weights and scales the
components by their coefficients.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from mmpose.registry import MODELS
from torch import Tensor, nn

from rspose_tune import losses as _pure

__all__ = ["HEATMAP_POS_THR", "SIMCC_POS_THR", "RSPoseLoss", "check_component", "flatten_groups"]

#: Default positive threshold for SimCC, in units of each group's label maximum (labels are
#: divided by their per-group maximum first, see :class:`RSPoseLoss`). ``exp(-4.5)`` is the value
#: of a Gaussian at 3 sigma, so the SimCC positives are exactly the bins within 3 sigma of the
#: keypoint: the same support MMPose's heatmap codecs (``MSRAHeatmap``, ``UDPHeatmap``) give
#: their Gaussians, which they truncate at radius 3 sigma (where ``pos_thr=0`` then selects it).
SIMCC_POS_THR = math.exp(-4.5)

#: Default positive threshold for 2D heatmaps: every pixel with a non-zero label. MMPose's
#: heatmap codecs truncate their Gaussians at 3 sigma, so these are the pixels within 3 sigma.
HEATMAP_POS_THR = 0.0


_DEFAULT_DELTA = 1.0


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_component(name: str, delta: float | None, coeff: float) -> tuple[float | None, float]:
    """Validate one component's ``(delta_NAME, coeff_NAME)``; returns them as floats.

    ``coeff`` must be a finite real >= 0 (0 switches the component off); ``delta`` a finite real
    >= 0, or None when ``coeff`` is 0 (the project stores a switched-off component's delta as null).

    Raises:
        ValueError: stating the value received and the rule broken.
    """
    if not (_is_real(coeff) and coeff >= 0):
        raise ValueError(f"The value of `coeff_{name}` is {coeff!r}, but must be a finite `coeff_{name} >= 0`")
    if delta is None:
        if coeff != 0:
            raise ValueError(
                f"The value of `delta_{name}` is None, but must be a finite `delta_{name} >= 0` while "
                f"`coeff_{name}` is {coeff} (None is allowed only with `coeff_{name}=0`)"
            )
        return None, 0.0
    if not (_is_real(delta) and delta >= 0):
        raise ValueError(f"The value of `delta_{name}` is {delta!r}, but must be a finite `delta_{name} >= 0`")
    return float(delta), float(coeff)


def flatten_groups(
    output: Tensor, target: Tensor, target_weight: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Flatten (B, K, *S) predictions/labels into (B*K, prod(S)) ranking groups.

    One group per (instance, keypoint); ``target_weight`` (B, K) becomes group weights (B*K,).

    Raises:
        ValueError: if the shapes of ``output``, ``target`` and ``target_weight`` disagree.
    """
    if output.shape != target.shape:
        raise ValueError(
            f"`output` and `target` must have the same shape, got {tuple(output.shape)} and "
            f"{tuple(target.shape)}"
        )
    if output.dim() < 3:
        raise ValueError(
            f"`output` must have shape (B, K, H, W) or (B, K, W), got {tuple(output.shape)}"
        )
    b, k = output.shape[:2]
    logits = output.reshape(b * k, -1)
    labels = target.reshape(b * k, -1)
    weights = None
    if target_weight is not None:
        if tuple(target_weight.shape) != (b, k):
            raise ValueError(
                f"`target_weight` must have shape (B, K) = {(b, k)} for output of shape "
                f"{tuple(output.shape)}, got {tuple(target_weight.shape)}"
            )
        weights = target_weight.reshape(b * k).to(logits.dtype)
    return logits, labels, weights


@MODELS.register_module()
class RSPoseLoss(nn.Module):
    """RSPose Spatial Rank + Spatial Sort loss for heatmaps (B, K, H, W) and SimCC vectors.

    Every (instance, keypoint) heatmap is one ranking group of H*W logits whose labels are the
    target heatmap: label > ``pos_thr`` are positives. Spatial Rank pushes every positive above
    every negative (an average-precision style error), Spatial Sort orders the positives by their
    label value. For SimCC, each axis gives its own groups, (B*K, Wx) and (B*K, Wy); the result
    is the mean of the two axes.

    SimCC labels are untruncated Gaussians, non-zero until float32 underflows them about 14 sigma
    from the keypoint (so ``pos_thr=0`` would make ~170 of 384 bins positive for sigma=6), and
    with MMPose's ``normalize=True`` they peak at ``1 / (sigma * sqrt(2 pi))``, not 1. They are therefore divided
    by their per-group maximum before ranking, so that SimCC labels lie in [0, 1] like heatmap
    labels, and the default ``pos_thr`` for SimCC is :data:`SIMCC_POS_THR` = ``exp(-4.5)``
    ≈ 0.0111, the Gaussian's value at 3 sigma: positives are the bins within 3 sigma of the
    keypoint, the support MMPose's heatmap codecs give their (truncated) Gaussians. For heatmaps
    the labels are used as they are and the default ``pos_thr`` is 0 (every non-zero pixel).

    Note:
        - B: batch size (instances), K: keypoints, H, W: heatmap height and width,
          Wx, Wy: SimCC bins along x and y (``input_size * simcc_split_ratio``).
        - Groups: G = B*K (per axis for SimCC), each of M = H*W (or Wx, Wy) elements.
        - The gradient is not autograd's derivative of the (step-function) loss value: it is the
          error-driven update of :func:`rspose_tune.losses.spatial_rank_sort` (Rank & Sort style:
          each logit receives the ranking/sorting error it causes, normalised per group), scaled
          by ``coeff_rank`` and ``coeff_sort``. Groups with weight 0 get no gradient.

    Args:
        delta_rank (float, optional): Smoothing of the Spatial Rank step function (>= 0; 0 is the
            hard step). May be None only when ``coeff_rank`` is 0 (the delta is then meaningless).
        coeff_rank (float): Coefficient of ``loss_rank`` (>= 0). 0 switches it off.
        delta_sort (float, optional): Smoothing of the Spatial Sort step function (>= 0; 0 is the
            hard step). May be None only when ``coeff_sort`` is 0.
        coeff_sort (float): Coefficient of ``loss_sort`` (>= 0). 0 switches it off.
        pos_thr (float, optional): Labels above it are positives, in label units for heatmaps
            and in units of the per-group label maximum for SimCC. ``None`` (default) picks
            :data:`HEATMAP_POS_THR` (0) for heatmaps and :data:`SIMCC_POS_THR` for SimCC.
        use_target_weight (bool): Use ``target_weight`` (B, K) as group weights. If False every
            group has weight 1. Defaults to True.

    Returns (from :meth:`forward`):
        dict: ``loss_rank`` and/or ``loss_sort``, scalars already multiplied by their coefficient.
        A component whose coefficient is 0 is absent. When both are 0 the pure loss is not called;
        with only one at 0, :func:`rspose_tune.losses.spatial_rank_sort` (which has no switch for
        either part) still computes it in the same pass, and it is discarded (no value, no gradient).
    """

    def __init__(
        self,
        delta_rank: float | None = 0.4,
        coeff_rank: float = 1.0,
        delta_sort: float | None = 1.5,
        coeff_sort: float = 1.0,
        pos_thr: float | None = None,
        use_target_weight: bool = True,
    ) -> None:
        super().__init__()
        delta_rank, coeff_rank = check_component("rank", delta_rank, coeff_rank)
        delta_sort, coeff_sort = check_component("sort", delta_sort, coeff_sort)
        if pos_thr is not None and not _is_real(pos_thr):
            raise ValueError(f"The value of `pos_thr` is {pos_thr!r}, but must be None or a finite float")
        self.delta_rank = delta_rank
        self.coeff_rank = coeff_rank
        self.delta_sort = delta_sort
        self.coeff_sort = coeff_sort
        self.pos_thr = None if pos_thr is None else float(pos_thr)
        self.use_target_weight = bool(use_target_weight)

    def extra_repr(self) -> str:
        return (
            f"delta_rank={self.delta_rank}, coeff_rank={self.coeff_rank}, "
            f"delta_sort={self.delta_sort}, coeff_sort={self.coeff_sort}, pos_thr={self.pos_thr}, "
            f"use_target_weight={self.use_target_weight}"
        )

    def forward(
        self,
        output: Tensor | Sequence[Tensor],
        target: Tensor | Sequence[Tensor],
        target_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the scaled components.

        Args:
            output (Tensor | tuple[Tensor, Tensor]): Heatmap logits (B, K, H, W), or SimCC
                logits ``(pred_x (B, K, Wx), pred_y (B, K, Wy))``.
            target (Tensor | tuple[Tensor, Tensor]): Target heatmaps (B, K, H, W), or SimCC
                labels ``(gt_x (B, K, Wx), gt_y (B, K, Wy))``.
            target_weight (Tensor, optional): Keypoint weights (B, K); 0 excludes the group.

        Returns:
            dict[str, Tensor]: ``loss_rank`` and/or ``loss_sort`` (see the class docstring).
        """
        if self.coeff_rank == 0 and self.coeff_sort == 0:
            return {}
        weight = target_weight if self.use_target_weight else None
        if isinstance(output, Tensor):
            if not isinstance(target, Tensor):
                raise TypeError(
                    f"`target` must be a Tensor when `output` is one (heatmaps), got {type(target).__name__}"
                )
            rank, sort = self._groups(output, target, weight, normalise=False)
        else:
            if isinstance(target, Tensor) or len(output) != len(target) or len(output) == 0:
                raise ValueError(
                    "SimCC `output` and `target` must be sequences of the same length (x, y), got "
                    f"{len(output)} outputs and "
                    f"{'a Tensor' if isinstance(target, Tensor) else len(target)} targets"
                )
            parts = [self._groups(o, t, weight, normalise=True) for o, t in zip(output, target)]
            rank = torch.stack([p[0] for p in parts]).mean()
            sort = torch.stack([p[1] for p in parts]).mean()
        losses: dict[str, Tensor] = {}
        if self.coeff_rank != 0:
            losses["loss_rank"] = rank * self.coeff_rank
        if self.coeff_sort != 0:
            losses["loss_sort"] = sort * self.coeff_sort
        return losses

    def _groups(
        self, output: Tensor, target: Tensor, weight: Tensor | None, *, normalise: bool
    ) -> tuple[Tensor, Tensor]:
        logits, labels, weights = flatten_groups(output, target, weight)
        if normalise:
            labels = labels / labels.amax(dim=1, keepdim=True).clamp_min(torch.finfo(labels.dtype).tiny)
            pos_thr = SIMCC_POS_THR if self.pos_thr is None else self.pos_thr
        else:
            pos_thr = HEATMAP_POS_THR if self.pos_thr is None else self.pos_thr
        return _pure.spatial_rank_sort(
            logits,
            labels,
            weights,
            # a switched-off component's delta may be None; its value is then discarded
            delta_rank=_DEFAULT_DELTA if self.delta_rank is None else self.delta_rank,
            delta_sort=_DEFAULT_DELTA if self.delta_sort is None else self.delta_sort,
            pos_thr=pos_thr,
        )
