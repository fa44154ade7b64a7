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
from rspose_tune.spaces import loss_param

__all__ = ["HEATMAP_POS_THR", "POS_THR", "SIMCC_POS_THR", "RSPoseLoss", "check_component", "flatten_groups",
           "positives", "ranking_labels"]

#: Default positive threshold, for heatmaps and SimCC alike: every non-zero label is a positive
#: (the support the RSPose paper's Table 1 imbalance ratios imply). Defined once, as the default
#: of the ``pos_thr`` loss hyperparameter (:data:`rspose_tune.spaces.LOSS_PARAMS`).
_POS_THR = loss_param("pos_thr")
POS_THR = float(_POS_THR.default)
#: Former per-codec defaults, now both :data:`POS_THR` (kept so imports keep working).
HEATMAP_POS_THR = SIMCC_POS_THR = POS_THR

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


def ranking_labels(target: Tensor, *, simcc: bool) -> Tensor:
    """(G, M) labels as the loss ranks them and compares with ``pos_thr``, from (B, K, *S) targets.

    Heatmap labels are used as the codec gives them (MMPose's heatmap Gaussians peak at 1 at
    their centre); SimCC labels are divided by their per-group maximum, so that they also peak at
    1 (with ``normalize=True`` MMPose's SimCC labels peak at ``1 / (sigma sqrt(2 pi))``).
    """
    labels = target.reshape(target.shape[0] * target.shape[1], -1)
    if simcc:
        labels = labels / labels.amax(dim=1, keepdim=True).clamp_min(torch.finfo(labels.dtype).tiny)
    return labels


def positives(target: Tensor | Sequence[Tensor], pos_thr: float = POS_THR) -> Tensor | tuple[Tensor, ...]:
    """The positives :class:`RSPoseLoss` ranks: ``ranking_labels(...) > pos_thr``, per group.

    ``target`` is a heatmap target (B, K, H, W) or SimCC targets ``(gt_x, gt_y)``; returns a
    (B*K, H*W) boolean mask, or one (B*K, W_axis) mask per SimCC axis.
    """
    if isinstance(target, Tensor):
        return ranking_labels(target, simcc=False) > pos_thr
    return tuple(ranking_labels(t, simcc=True) > pos_thr for t in target)


@MODELS.register_module()
class RSPoseLoss(nn.Module):
    """RSPose Spatial Rank + Spatial Sort loss for heatmaps (B, K, H, W) and SimCC vectors.

    Every (instance, keypoint) heatmap is one ranking group of H*W logits whose labels are the
    target heatmap: labels > ``pos_thr`` are positives. Spatial Rank pushes every positive above
    every negative (an average-precision style error), Spatial Sort orders the positives by their
    label value. For SimCC, each axis gives its own groups, (B*K, Wx) and (B*K, Wy); the result
    is the mean of the two axes.

    **Positives.** ``pos_thr`` has one definition for both codecs: it is compared with the labels
    after the per-group normalisation of :func:`ranking_labels` (heatmaps as the codec gives them,
    SimCC divided by the group's maximum; both are Gaussians of peak 1 at the keypoint, which UDP's
    sub-pixel centre puts between pixels), so a pixel or bin at distance d from the keypoint is a
    positive when ``exp(-d^2 / (2 sigma^2)) > pos_thr`` and the codec gave it a
    non-zero label. The default, :data:`POS_THR` = 0, takes every non-zero label. What that selects
    is each codec's truncation, not a disc: MMPose's ``UDPHeatmap`` and ``MSRAHeatmap`` write the
    Gaussian into a square of ``2*3*sigma+1`` pixels a side (``arange(2*3*sigma+1)``), every
    pixel of it > 0, corners included (UDP's corner labels go down to 1.45e-6 at sigma 1.5);
    ``SimCCLabel`` does not truncate, its float32 labels underflow to 0 about 85 bins from the
    keypoint at sigma 6. Positives per keypoint, measured on MMPose's own codecs (keypoints
    inside the map, ``tests/mmpose_adapter/test_losses.py``; UDP varies with the sub-pixel offset):

    ======================================  =======  =================  ===============  =========
    codec (sigma)                           > 0      > exp(-4.5) (3σ)   > exp(-2) (2σ)   > 0.5
    ======================================  =======  =================  ===============  =========
    UDPHeatmap (1.5; the CPU demo)          100      61-69              26-32            8-12
    MSRAHeatmap (1.5)                       100      69                 25               9
    UDPHeatmap (2; ViTPose)                 169      108-116            47-52            16-21
    MSRAHeatmap (2; HRNet)                  169      109                45               21
    SimCCLabel (6, per axis: 384 x, 512 y)  171      35                 23               15
    SimCCLabel (RTMPose: 4.9 x, 5.66 y)     141/163  29/33              19/23            11/13
    ======================================  =======  =================  ===============  =========

    RTMPose's row (``RSPoseRTMCCHead``): x/y bins of 384/512, sigma in bins, ``normalize=False``
    (its labels already peak at 1).

    So ``pos_thr = 0`` gives a (2*3*sigma+1)^2 square for the heatmap codecs and ~171 bins per
    SimCC axis; ``exp(-4.5)`` ≈ 0.0111 gives the disc within 3 sigma. ``pos_thr`` must lie in
    [0, 1): at 1 or more nothing is a positive.

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
        pos_thr (float): Labels above it are positives, after the per-group normalisation of
            :func:`ranking_labels` (see "Positives" above); in [0, 1). Defaults to
            :data:`POS_THR` (0: every non-zero label) for heatmaps and SimCC; None also means it.
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
        pos_thr: float | None = POS_THR,
        use_target_weight: bool = True,
    ) -> None:
        super().__init__()
        delta_rank, coeff_rank = check_component("rank", delta_rank, coeff_rank)
        delta_sort, coeff_sort = check_component("sort", delta_sort, coeff_sort)
        if pos_thr is None:
            pos_thr = POS_THR
        problem = _POS_THR.problem(pos_thr)  # the one rule (spaces.LossParam.problem)
        if problem:
            raise ValueError(f"The value of `pos_thr` is {pos_thr!r}, but {problem}")
        self.delta_rank = delta_rank
        self.coeff_rank = coeff_rank
        self.delta_sort = delta_sort
        self.coeff_sort = coeff_sort
        self.pos_thr = float(pos_thr)
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
            rank, sort = self._groups(output, target, weight, simcc=False)
        else:
            if isinstance(target, Tensor) or len(output) != len(target) or len(output) == 0:
                raise ValueError(
                    "SimCC `output` and `target` must be sequences of the same length (x, y), got "
                    f"{len(output)} outputs and "
                    f"{'a Tensor' if isinstance(target, Tensor) else len(target)} targets"
                )
            parts = [self._groups(o, t, weight, simcc=True) for o, t in zip(output, target)]
            rank = torch.stack([p[0] for p in parts]).mean()
            sort = torch.stack([p[1] for p in parts]).mean()
        losses: dict[str, Tensor] = {}
        if self.coeff_rank != 0:
            losses["loss_rank"] = rank * self.coeff_rank
        if self.coeff_sort != 0:
            losses["loss_sort"] = sort * self.coeff_sort
        return losses

    def _groups(
        self, output: Tensor, target: Tensor, weight: Tensor | None, *, simcc: bool
    ) -> tuple[Tensor, Tensor]:
        logits, _, weights = flatten_groups(output, target, weight)
        return _pure.spatial_rank_sort(
            logits,
            ranking_labels(target, simcc=simcc),
            weights,
            # a switched-off component's delta may be None; its value is then discarded
            delta_rank=_DEFAULT_DELTA if self.delta_rank is None else self.delta_rank,
            delta_sort=_DEFAULT_DELTA if self.delta_sort is None else self.delta_sort,
            pos_thr=self.pos_thr,
        )
