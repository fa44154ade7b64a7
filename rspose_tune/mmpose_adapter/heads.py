"""``RSPoseHeatmapHead`` and ``RSPoseSimCCHead``: MMPose top-down heads trained with RSPose.

Registered in MMPose's ``MODELS`` registry by :func:`rspose_tune.mmpose_adapter.setup_mmpose`.
Both keep their parent's layers, ``forward`` and ``predict``; only ``loss`` changes:

- ``loss_rank``, ``loss_sort``: Spatial Rank / Spatial Sort from the ``loss`` module
  (``dict(type='RSPoseLoss', ...)`` by default), already scaled by their coefficients;
- ``loss_inst``: Instance Sort, computed here because it needs the data samples: per keypoint
  type, the instances of the batch are sorted by the keypoint similarity (KS, COCO's OKS term) of
  their decoded arg-max, using the decoder's own confidence;
- ``acc_pose``: the parent's accuracy.

How KS gets original-image coordinates (top-down, MMPose 1.3.2): ``PackPoseInputs`` puts the
ground-truth keypoints in ORIGINAL-image coordinates into ``gt_instances.keypoints`` (after
``RandomFlip``, which flips them together with the bbox centre), and ``input_center``,
``input_scale``, ``input_size`` into the metainfo. The arg-max is mapped heatmap → input with
the codec's ``decode`` factor (UDP: ``(input_size - 1) / (heatmap_size - 1)``, MSRA:
``input_size / heatmap_size``, SimCC: ``1 / simcc_split_ratio``), then input → original with the
inverse of the exact affine warp ``TopdownAffine`` applied (``get_udp_warp_matrix`` for UDP,
``get_warp_matrix`` otherwise). Without rotation this equals MMPose's own
``TopdownPoseEstimator.add_pred_to_datasample``. ``RandomBBoxTransform`` also rotates (by default
with probability 0.6), but ``PackPoseInputs`` does not pack ``bbox_rotation`` unless it is in its
``meta_keys``: add it (``meta_keys=RSPOSE_PACK_META_KEYS``) to the training pipeline, otherwise
a rotation of 0 is assumed and a warning is logged once.

For KS only, the arg-max is refined to sub-pixel by the vertex of the parabola through it and its
two neighbours per axis (:func:`refine_argmax_2d`, :func:`refine_argmax_1d`; MMPose's decoders
refine too): on the integer 64x48 grid alone (4 input pixels per step) a perfect heatmap scores
KS ≈ 0.8 on the face keypoints of medium persons, with it KS > 0.99. The confidence and its
gradient stay at the integer arg-max.

Prediction (paper App. C): the ranking losses see only differences of logits, so a constant added
to one keypoint channel changes no loss and no gradient and nothing pins the logits' level.
MMPose's stock decoders read that level: a peak <= 0 becomes position -1, and the score that
CocoMetric thresholds (``keypoint_score_thr``), averages across keypoint types and uses for
OKS-NMS is the raw peak. The RSPose heads therefore predict from *calibrated* maps:

- statistics: per keypoint type k (and per SimCC axis), the minimum and maximum of the peak
  logit (heatmap maximum; SimCC per-axis maximum) over every training instance of the current
  training epoch, labelled or not (the same mixture a test set has), gathered in ``loss`` from
  logits it computes anyway (no extra forward; a (B, K) reduction per step). The window restarts
  at each new epoch (``MessageHub`` info ``epoch``, which mmengine's ``RuntimeInfoHook`` sets),
  so validation after epoch e and every checkpoint saved after it use exactly epoch e's range:
  logits drift during training, so earlier epochs would stretch the range. Without a Runner
  (no ``epoch`` info) the window is everything since the head was built or loaded. Under
  data parallelism the per-batch extremes are all-reduced, so every rank holds the same range.
  They live in buffers ``peak_min``/``peak_max`` (A, K) and ``peak_epoch`` (), saved in every
  checkpoint and loaded by ``tools/test.py`` and exported models;
- calibration: ``(logit - peak_min[k]) / (peak_max[k] - peak_min[k])`` per channel (and axis),
  before flip-test averaging; a constant offset per channel (or per SimCC axis) moves logits
  and statistics together, so the calibrated maps do not change;
- decoding (:func:`decode_calibrated_heatmaps`, :func:`decode_calibrated_simcc`): position =
  arg-max (the raw logits' arg-max), refined by the codec's usual refinement (DARK-UDP, DARK or
  the quarter-pixel shift; SimCC DARK) applied to the calibrated map shifted so its peak is 1
  and floored at 0 (never -1, whatever the sign); confidence = calibrated peak clipped to [0, 1].
  Everything downstream (CocoMetric's instance score, ``keypoint_score_thr``, OKS-NMS, the
  Spearman metric of :mod:`.metrics`) sees only these confidences.
"""

from __future__ import annotations

import math

from rspose_tune.errors import RSPoseTuneError

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from mmengine.logging import MessageHub, print_log
from mmengine.structures import InstanceData, PixelData
from mmpose.codecs import MSRAHeatmap, SimCCLabel, UDPHeatmap
from mmpose.codecs.utils import refine_keypoints, refine_keypoints_dark, refine_keypoints_dark_udp, refine_simcc_dark
from mmpose.evaluation.functional import pose_pck_accuracy, simcc_pck_accuracy
from mmpose.models.heads import HeatmapHead, SimCCHead
from mmpose.models.utils.tta import flip_heatmaps, flip_vectors
from mmpose.registry import MODELS
from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor

from rspose_tune import losses as _pure

from .losses import RSPoseLoss, check_component

__all__ = [
    "BBOX_AREA_FACTOR",
    "RSPOSE_PACK_META_KEYS",
    "MissingCalibrationError",
    "RSPoseHeatmapHead",
    "RSPoseSimCCHead",
    "decode_calibrated_heatmaps",
    "decode_calibrated_simcc",
    "keypoint_similarity",
    "minmax_calibrate",
]

#: ``PackPoseInputs``'s default ``meta_keys`` plus ``bbox_rotation``, which Instance Sort needs to
#: map predictions back to the original image when ``RandomBBoxTransform`` rotates.
RSPOSE_PACK_META_KEYS = (
    "id", "img_id", "img_path", "category_id", "crowd_index", "ori_shape", "img_shape",
    "input_size", "input_center", "input_scale", "flip", "flip_direction", "flip_indices",
    "raw_ann_info", "dataset_name", "bbox_rotation",
)  # fmt: skip

#: Object area = this factor x bbox area when the annotation has no ``area`` (CrowdPose, MPII);
#: the same factor MMPose's datasets and metrics use.
BBOX_AREA_FACTOR = 0.53

_SUPPORTED_CODECS = "['UDPHeatmap' (heatmap_type='gaussian'), 'MSRAHeatmap', 'SimCCLabel']"


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


# --------------------------------------------------------------------------------------------
# Confidence calibration (paper App. C) and offset-invariant decoding
# --------------------------------------------------------------------------------------------


class MissingCalibrationError(RSPoseTuneError, RuntimeError):
    """An RSPose head was asked to predict before it gathered any confidence statistics."""


def minmax_calibrate(logits: Tensor, peak_min: Tensor, peak_max: Tensor) -> Tensor:
    """Map logits (B, K, ...) per keypoint type to ``(logits - peak_min[k]) / (peak_max[k] - peak_min[k])``.

    ``peak_min``/``peak_max`` (K,) are the range of the training peaks of each keypoint type.
    Where the range is empty (``peak_max <= peak_min``: a window of one value), only the offset
    is removed. A calibrated peak is the keypoint's confidence (clipped to [0, 1] by the
    decoders); the calibrated map is unchanged by any constant added to a channel's logits and
    its statistics alike.
    """
    k = logits.shape[1]
    if peak_min.shape != (k,) or peak_max.shape != (k,):
        raise ValueError(
            f"`peak_min` and `peak_max` must have shape (K,) = ({k},) for logits of shape "
            f"{tuple(logits.shape)}, got {tuple(peak_min.shape)} and {tuple(peak_max.shape)}"
        )
    view = (1, k) + (1,) * (logits.dim() - 2)
    span = peak_max - peak_min
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (logits - peak_min.to(logits).view(view)) / span.to(logits).view(view)


def _refinement_input(calibrated: np.ndarray) -> np.ndarray:
    """The map handed to a codec's refinement: the calibrated map shifted so that its peak is 1
    (per instance and keypoint; the last axes are the map), floored at 0.

    The codecs' refinements blur, clip to [1e-3, 50] and take logarithms, so they need a
    positive peak; the shift gives them one whatever the calibrated level, and keeps the
    calibrated scale (one unit = the training range of the peaks)."""
    axes = tuple(range(2, calibrated.ndim))
    out = calibrated - calibrated.max(axis=axes, keepdims=True) + 1.0
    return np.maximum(out, 0.0).astype(np.float32)


def decode_calibrated_heatmaps(heatmaps: np.ndarray, codec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and confidences from calibrated heatmaps, never -1 for a low peak.

    Note:
        - B: instances, K: keypoints, H, W: heatmap height and width.

    Args:
        heatmaps: (B, K, H, W) calibrated heatmaps (:func:`minmax_calibrate`).
        codec: the head's decoder: ``UDPHeatmap`` (``heatmap_type='gaussian'``, DARK-UDP
            refinement) or ``MSRAHeatmap`` (DARK if ``unbiased``, else the quarter-pixel shift).

    Returns:
        keypoints (B, K, 2) in input-image pixels: the arg-max with the codec's refinement (on
        :func:`_refinement_input`) and scale; scores (B, K): calibrated peaks clipped to [0, 1].
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"`heatmaps` must have shape (B, K, H, W), got {heatmaps.shape}")
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    index = flat.argmax(axis=2)
    scores = np.clip(flat.max(axis=2), 0.0, 1.0).astype(np.float32)
    locs = np.stack([index % w, index // w], axis=-1).astype(np.float32)  # (B, K, 2)
    refine_in = _refinement_input(heatmaps)
    keypoints = np.empty_like(locs)
    for i in range(b):
        kpts = locs[i : i + 1].copy()  # (1, K, 2)
        maps = refine_in[i].copy()  # the refinements blur in place
        if isinstance(codec, UDPHeatmap) and codec.heatmap_type == "gaussian":
            kpts = refine_keypoints_dark_udp(kpts, maps, blur_kernel_size=codec.blur_kernel_size)
            kpts = kpts / [w - 1, h - 1] * np.asarray(codec.input_size)
        elif isinstance(codec, MSRAHeatmap):
            if codec.unbiased:
                kpts = refine_keypoints_dark(kpts, maps, blur_kernel_size=codec.blur_kernel_size)
            else:
                kpts = refine_keypoints(kpts, maps)
            kpts = kpts * codec.scale_factor
        else:
            raise ValueError(
                "RSPoseHeatmapHead decodes calibrated heatmaps with the `UDPHeatmap` "
                "(heatmap_type='gaussian') or `MSRAHeatmap` codec, got "
                f"{type(codec).__name__ if codec is not None else None} as `decoder`"
            )
        keypoints[i] = kpts[0]
    return keypoints, scores


def _simcc_blur(sigma: float) -> int:
    """SimCCLabel.decode's DARK blur kernel size for ``sigma``."""
    blur = int((sigma * 20 - 7) // 3)
    return blur - int(blur % 2 == 0)


def decode_calibrated_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, codec: Any
) -> tuple[np.ndarray, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Keypoints and confidences from calibrated SimCC vectors, never -1 for a low peak.

    Note:
        - B: instances, K: keypoints, Wx, Wy: bins along x and y.

    Args:
        simcc_x, simcc_y: (B, K, Wx), (B, K, Wy) calibrated vectors (each axis with its own
            statistics, :func:`minmax_calibrate`).
        codec: the head's ``SimCCLabel`` decoder (DARK refinement when ``use_dark``).

    Returns:
        keypoints (B, K, 2), input-image pixels: the arg-max per axis with the codec's
        refinement (on :func:`_refinement_input`) over ``simcc_split_ratio``; scores (B, K):
        ``min(max_x, max_y)`` of the calibrated vectors clipped to [0, 1] (with
        ``decode_visibility``, ``(scores, visibility)`` as the codec returns, the visibility
        from the codec's softmax of the calibrated vectors).
    """
    if not isinstance(codec, SimCCLabel):
        raise ValueError(
            "RSPoseSimCCHead decodes calibrated SimCC vectors with the `SimCCLabel` codec, got "
            f"{type(codec).__name__ if codec is not None else None} as `decoder`"
        )
    if simcc_x.ndim != 3 or simcc_y.shape[:2] != simcc_x.shape[:2] or simcc_y.ndim != 3:
        raise ValueError(
            f"`simcc_x` and `simcc_y` must have shapes (B, K, Wx) and (B, K, Wy), got "
            f"{simcc_x.shape} and {simcc_y.shape}"
        )
    locs = np.stack([simcc_x.argmax(axis=2), simcc_y.argmax(axis=2)], axis=-1).astype(np.float32)
    scores = np.clip(np.minimum(simcc_x.max(axis=2), simcc_y.max(axis=2)), 0.0, 1.0).astype(np.float32)
    if codec.use_dark:
        locs[..., 0] = refine_simcc_dark(locs[..., 0], _refinement_input(simcc_x), _simcc_blur(codec.sigma[0]))
        locs[..., 1] = refine_simcc_dark(locs[..., 1], _refinement_input(simcc_y), _simcc_blur(codec.sigma[1]))
    keypoints = locs / codec.simcc_split_ratio
    if codec.decode_visibility:
        from mmpose.codecs.utils import get_simcc_maximum

        _, visibility = get_simcc_maximum(
            simcc_x * codec.decode_beta * codec.sigma[0],
            simcc_y * codec.decode_beta * codec.sigma[1],
            apply_softmax=True,
        )
        return keypoints, (scores, visibility)
    return keypoints, scores


def _training_epoch() -> int | None:
    """The Runner's current training epoch (``RuntimeInfoHook``), or None outside a Runner."""
    epoch = MessageHub.get_current_instance().get_info("epoch")
    return None if epoch is None else int(epoch)


_CALIBRATION_BUFFERS = ("peak_min", "peak_max", "peak_epoch")


class _CalibrationMixin:
    """Per-keypoint min-max confidence statistics of the training peaks (see module docstring).

    Buffers (saved in every checkpoint, plain tensors): ``peak_min``, ``peak_max`` (A, K) with
    A = 1 (heatmap) or 2 (SimCC x, y), NaN until the first training step; ``peak_epoch`` (),
    the training epoch they come from (-1: none; also -1 for a window outside a Runner).
    """

    peak_min: Tensor
    peak_max: Tensor
    peak_epoch: Tensor
    _window: tuple | None

    def _init_calibration(self, num_axes: int, num_keypoints: int) -> None:
        nan = torch.full((num_axes, num_keypoints), float("nan"))
        self.register_buffer("peak_min", nan.clone())  # type: ignore[attr-defined]
        self.register_buffer("peak_max", nan.clone())  # type: ignore[attr-defined]
        self.register_buffer("peak_epoch", torch.tensor(-1, dtype=torch.long))  # type: ignore[attr-defined]
        self._window = None  # not saved: the first step after building or loading starts a window

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        """Weights without statistics load, even strictly (a checkpoint from before they existed,
        a stock head's weights): the statistics stay unset and ``predict`` says so."""
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name in _CALIBRATION_BUFFERS:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    @torch.no_grad()
    def _gather_peak_statistics(self, peaks: Tensor) -> None:
        """Fold the training peaks (A, B, K) of one batch into the current window's range."""
        peaks = peaks.detach().float()
        if peaks.dim() != 3 or peaks.shape[0] != self.peak_min.shape[0] or peaks.shape[2] != self.peak_min.shape[1]:
            raise ValueError(
                f"peaks must have shape (A, B, K) = ({self.peak_min.shape[0]}, B, {self.peak_min.shape[1]}), "
                f"got {tuple(peaks.shape)}"
            )
        # one all-reduce (MAX) of (-min, max): every data-parallel rank folds in the same range. A
        # rank with an empty batch still joins it (with MAX's identity, -inf), or the others would
        # wait for it forever.
        if peaks.shape[1] == 0:
            extremes = peaks.new_full((2, peaks.shape[0], peaks.shape[2]), -math.inf)
        else:
            extremes = torch.stack([-peaks.amin(dim=1), peaks.amax(dim=1)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        if torch.isneginf(extremes).all():
            return  # no rank had a peak this step
        batch_min, batch_max = -extremes[0], extremes[1]
        epoch = _training_epoch()
        window = ("epoch", epoch) if epoch is not None else ("head", id(self))
        if window != self._window:
            self._window = window
            self.peak_min.copy_(batch_min)
            self.peak_max.copy_(batch_max)
            self.peak_epoch.fill_(-1 if epoch is None else epoch)
        else:
            torch.minimum(self.peak_min, batch_min, out=self.peak_min)
            torch.maximum(self.peak_max, batch_max, out=self.peak_max)

    def _calibrate(self, logits: Tensor, axis: int = 0) -> Tensor:
        """:func:`minmax_calibrate` with this head's statistics of ``axis`` (0; SimCC: 0 x, 1 y)."""
        lo, hi = self.peak_min[axis], self.peak_max[axis]
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise MissingCalibrationError(
                f"{type(self).__name__} has no confidence statistics (peak_min/peak_max are not set): "
                "they are gathered in training and saved in checkpoints. Train the model, or load a "
                "checkpoint of an RSPose head trained with them (a checkpoint from before they existed "
                "lacks the keys `head.peak_min`/`head.peak_max`)"
            )
        return minmax_calibrate(logits, lo, hi)


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@functools.lru_cache(maxsize=16)
def _sigmas_from_file(path: str) -> tuple[float, ...]:
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    return tuple(float(s) for s in parse_pose_metainfo({"from_file": path})["sigmas"])


def _sigmas_from_mapping(mapping: Any) -> np.ndarray | None:
    """``sigmas`` from a dict with ``sigmas`` or ``metainfo`` (itself with ``sigmas`` or ``from_file``)."""
    if not isinstance(mapping, Mapping):
        return None
    if mapping.get("sigmas") is not None:
        return np.asarray(mapping["sigmas"], dtype=np.float32)
    meta = mapping.get("metainfo")
    if isinstance(meta, Mapping):
        if meta.get("sigmas") is not None:
            return np.asarray(meta["sigmas"], dtype=np.float32)
        if meta.get("from_file") is not None:
            return np.asarray(_sigmas_from_file(str(meta["from_file"])), dtype=np.float32)
    return None


class _InstanceSortMixin:
    """Instance Sort shared by the heatmap and SimCC heads (needs ``self.decoder``)."""

    delta_inst: float | None
    coeff_inst: float
    decoder: Any
    _warned_rotation: bool

    def _init_instance_sort(self, delta_inst: float | None, coeff_inst: float) -> None:
        self.delta_inst, self.coeff_inst = check_component("inst", delta_inst, coeff_inst)
        self._warned_rotation = False
        loss_module = self.loss_module  # type: ignore[attr-defined]
        if self.coeff_inst == 0 and isinstance(loss_module, RSPoseLoss):
            if loss_module.coeff_rank == 0 and loss_module.coeff_sort == 0:
                raise ValueError(
                    "`coeff_rank`, `coeff_sort` and `coeff_inst` are all 0, but at least one must be "
                    "> 0 (otherwise the head has no loss to train)"
                )
        if self.coeff_inst > 0:
            self._input_factor()  # fail at build time for an unsupported decoder

    def _input_factor(self) -> tuple[np.ndarray, bool]:
        """(heatmap/SimCC index → input pixel factor per axis (x, y), whether the warp is UDP)."""
        codec = self.decoder
        if isinstance(codec, UDPHeatmap) and codec.heatmap_type == "gaussian":
            size = np.asarray(codec.input_size, dtype=np.float64)
            hm = np.asarray(codec.heatmap_size, dtype=np.float64)
            return (size - 1) / (hm - 1), True
        if isinstance(codec, MSRAHeatmap):
            return np.asarray(codec.scale_factor, dtype=np.float64), False
        if isinstance(codec, SimCCLabel):
            return np.full(2, 1.0 / codec.simcc_split_ratio), False
        raise ValueError(
            f"Instance Sort (coeff_inst={self.coeff_inst}) needs the head's `decoder` to be one of "
            f"{_SUPPORTED_CODECS} to map predictions to image pixels, got "
            f"{type(codec).__name__ if codec is not None else None}; set `decoder=codec` in the head "
            "config or set `coeff_inst=0`"
        )

    def _sigmas(self, train_cfg: Mapping, samples: Sequence, num_keypoints: int) -> np.ndarray:
        sources = (
            ("train_cfg", train_cfg),
            ("test_cfg", getattr(self, "test_cfg", None)),
            ("data sample metainfo", samples[0].metainfo if samples else None),
        )
        for name, mapping in sources:
            sigmas = _sigmas_from_mapping(mapping)
            if sigmas is not None:
                if sigmas.shape != (num_keypoints,):
                    raise ValueError(
                        f"The keypoint `sigmas` from the {name} have shape {sigmas.shape}, but the head "
                        f"predicts K={num_keypoints} keypoints; they must have shape ({num_keypoints},)"
                    )
                return sigmas
        raise ValueError(
            f"Instance Sort (coeff_inst={self.coeff_inst}) needs the dataset's keypoint `sigmas`, but none "
            "were found. Set one of: `model.train_cfg=dict(metainfo=dict(from_file="
            "'configs/_base_/datasets/coco.py'))`, `model.train_cfg=dict(sigmas=[...])`, the same keys "
            "in `model.test_cfg`, or `sigmas` in the data samples' metainfo; or set `coeff_inst=0`"
        )

    @staticmethod
    def _area(sample: Any) -> float:
        gt = sample.gt_instances
        if "area" in gt:
            return float(_as_numpy(gt.area).reshape(-1)[0])
        raw = sample.metainfo.get("raw_ann_info")
        if isinstance(raw, Mapping) and raw.get("area") is not None:
            return float(raw["area"])
        if "bboxes" not in gt:
            raise ValueError(
                "Instance Sort needs the object area: `area` in gt_instances or in metainfo "
                "`raw_ann_info`, or `bboxes` in gt_instances (area = 0.53 x bbox area); the data "
                f"sample has none (gt_instances keys: {sorted(gt.keys())})"
            )
        x1, y1, x2, y2 = _as_numpy(gt.bboxes).reshape(-1, 4)[0]
        return max(float((x2 - x1) * (y2 - y1)) * BBOX_AREA_FACTOR, 1.0)

    def _inverse_warp(self, sample: Any, use_udp: bool) -> np.ndarray:
        meta = sample.metainfo
        try:
            center = np.asarray(meta["input_center"], dtype=np.float32).reshape(2)
            scale = np.asarray(meta["input_scale"], dtype=np.float32).reshape(2)
            size = tuple(int(s) for s in np.asarray(meta["input_size"]).reshape(2))
        except KeyError as err:
            raise ValueError(
                f"Instance Sort needs `input_center`, `input_scale` and `input_size` in the data "
                f"sample metainfo (TopdownAffine + PackPoseInputs), but {err} is missing"
            ) from err
        if "bbox_rotation" in meta:
            rot = float(np.asarray(meta["bbox_rotation"]).reshape(-1)[0])
        else:
            rot = 0.0
            if not self._warned_rotation:
                self._warned_rotation = True
                print_log(
                    "RSPose Instance Sort: the data samples have no `bbox_rotation` in their metainfo, "
                    "so predictions are mapped to the original image assuming no rotation. If the "
                    "training pipeline rotates (RandomBBoxTransform's default), keypoint similarities "
                    "are wrong: pass `meta_keys=rspose_tune.mmpose_adapter.heads.RSPOSE_PACK_META_KEYS` "
                    "to PackPoseInputs.",
                    logger="current",
                    level=logging.WARNING,
                )
        if use_udp:
            warp = get_udp_warp_matrix(center, scale, rot, output_size=size)
        else:
            warp = get_warp_matrix(center, scale, rot, output_size=size)
        full = np.concatenate([np.asarray(warp, dtype=np.float64), [[0.0, 0.0, 1.0]]], axis=0)
        return np.linalg.inv(full)[:2]

    def _original_coords(self, coords: Tensor, samples: Sequence) -> Tensor:
        """Map ``coords`` (I, K, 2) in heatmap/SimCC index units to original-image pixels (I, K, 2).

        index → input pixels with the codec's ``decode`` factor, then input → original with the
        inverse of ``TopdownAffine``'s warp (centre, scale, rotation) of each data sample.
        """
        if len(samples) != coords.shape[0]:
            raise ValueError(
                f"Instance Sort expects one instance per data sample (top-down), got {coords.shape[0]} "
                f"predicted instances for {len(samples)} data samples"
            )
        factor, use_udp = self._input_factor()
        device = coords.device
        warps = torch.as_tensor(np.stack([self._inverse_warp(s, use_udp) for s in samples]), dtype=torch.float32)
        warps = warps.to(device, non_blocking=True)
        coords_in = coords.float() * torch.as_tensor(factor, dtype=torch.float32).to(device, non_blocking=True)
        return torch.einsum("iab,ikb->ika", warps[:, :, :2], coords_in) + warps[:, None, :, 2]

    def _instance_similarity(
        self, coords: Tensor, samples: Sequence, train_cfg: Mapping
    ) -> tuple[Tensor, Tensor]:
        """KS (I, K) of decoded arg-max ``coords`` (I, K, 2, heatmap/SimCC index units) and the
        ground truth's visibility (I, K)."""
        k = coords.shape[1]
        pred = self._original_coords(coords, samples)
        sigmas = self._sigmas(train_cfg, samples, k)
        gts, vis, areas = [], [], []
        for sample in samples:
            gt = sample.gt_instances
            kpts = _as_numpy(gt.keypoints).astype(np.float32)
            if kpts.shape[0] != 1 or kpts.shape[1:] != (k, 2):
                raise ValueError(
                    f"Instance Sort expects gt_instances.keypoints of shape (1, {k}, 2) per data sample "
                    f"(top-down), got {kpts.shape}"
                )
            gts.append(kpts[0])
            if "keypoints_visible" in gt:
                vis.append(_as_numpy(gt.keypoints_visible).reshape(1, k)[0] > 0)
            else:
                vis.append(np.ones(k, dtype=bool))
            areas.append(self._area(sample))
        device = coords.device
        as_t = functools.partial(torch.as_tensor, dtype=torch.float32)
        ks = keypoint_similarity(
            pred,
            as_t(np.stack(gts)).to(device, non_blocking=True),
            as_t(np.asarray(areas)).to(device, non_blocking=True),
            as_t(sigmas).to(device, non_blocking=True),
        )
        visible = torch.as_tensor(np.stack(vis)).to(device, non_blocking=True)
        return ks, visible

    def _instance_sort(
        self, confidence: Tensor, coords: Tensor, keypoint_weights: Tensor, samples: Sequence, train_cfg: Mapping
    ) -> Tensor:
        with torch.no_grad():
            ks, visible = self._instance_similarity(coords.detach(), samples, train_cfg)
            valid = (keypoint_weights > 0) & visible
        return _pure.instance_sort(confidence, ks, valid.to(confidence.dtype), delta=self.delta_inst) * self.coeff_inst


def _loss_dict(result: Any) -> dict[str, Tensor]:
    if isinstance(result, Tensor):
        return {"loss_kpt": result}
    if isinstance(result, Mapping):
        return dict(result)
    raise TypeError(
        f"The head's `loss` module must return a Tensor or a dict of Tensors, got {type(result).__name__}"
    )


@MODELS.register_module()
class RSPoseHeatmapHead(_CalibrationMixin, _InstanceSortMixin, HeatmapHead):
    """:class:`mmpose.models.heads.HeatmapHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers and ``forward`` are the parent's. Works with the ``UDPHeatmap`` (ViTPose) and
    ``MSRAHeatmap`` (SimpleBaseline, HRNet) codecs, which must be given as ``decoder``.
    ``predict``/``decode`` use calibrated heatmaps (module docstring): positions and scores do
    not depend on a constant added to a channel's logits; ``loss`` gathers the statistics
    (buffers ``peak_min``/``peak_max`` (1, K), ``peak_epoch``).

    Instance Sort: per keypoint type k, the valid instances of the batch are sorted by
    KS_k = ``exp(-d^2 / (2 area (2 sigma_k)^2))`` of their heatmap arg-max (sub-pixel refined; COCO's
    OKS term, ``d`` in original-image pixels, see the module docstring), with the heatmap maximum
    as confidence.
    ``sigma_k`` comes from the dataset metainfo: ``train_cfg``/``test_cfg`` keys ``sigmas`` or
    ``metainfo=dict(from_file=...)``, or ``sigmas`` in the data samples' metainfo. ``area`` is the
    annotation's (``gt_instances.area``, else COCO's ``raw_ann_info['area']``), else 0.53 x bbox
    area. Keypoints with ``keypoint_weights == 0`` or ``keypoints_visible == 0`` are excluded.

    Note:
        - B: batch size (= instances, top-down), K: keypoints, H, W: heatmap height and width.
        - Heatmaps (B, K, H, W) are ranking logits. ``loss_rank``/``loss_sort`` come from the
          ``loss`` module (B*K groups of H*W pixels, weights ``keypoint_weights`` (B, K)).
        - Instance Sort uses confidences (B, K) = heatmap maxima; its error-driven gradient
          (:func:`rspose_tune.losses.instance_sort`) reaches only the arg-max pixel of each heatmap.
          KS targets (B, K) carry no gradient.

    Args:
        *args, **kwargs: Everything :class:`HeatmapHead` takes (``in_channels``, ``out_channels``,
            ``deconv_out_channels``, ..., ``decoder``, ``init_cfg``).
        loss (dict): Config of the Spatial loss. Defaults to ``dict(type='RSPoseLoss')``, whose
            ``delta_rank``, ``coeff_rank``, ``delta_sort``, ``coeff_sort``, ``pos_thr`` are set there.
        delta_inst (float, optional): Smoothing of Instance Sort's step function (>= 0); None
            only with ``coeff_inst=0``. Defaults to 3.0.
        coeff_inst (float): Coefficient of ``loss_inst`` (>= 0); 0 skips Instance Sort entirely.
            Defaults to 1.0.
    """

    def __init__(
        self,
        *args: Any,
        loss: Mapping | None = None,
        delta_inst: float | None = 3.0,
        coeff_inst: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, loss=dict(type="RSPoseLoss") if loss is None else loss, **kwargs)
        self._init_instance_sort(delta_inst, coeff_inst)
        self._init_calibration(1, self.out_channels)

    def decode(self, batch_outputs: Tensor) -> list:
        """Calibrate the heatmap logits (B, K, H, W) and decode them (no -1 for a low peak)."""
        return self._decode_calibrated(self._calibrate(batch_outputs))

    def _decode_calibrated(self, heatmaps: Tensor) -> list:
        keypoints, scores = decode_calibrated_heatmaps(to_numpy(heatmaps), self.decoder)
        return [InstanceData(keypoints=k[None], keypoint_scores=s[None]) for k, s in zip(keypoints, scores)]

    def predict(self, feats: Any, batch_data_samples: Sequence, test_cfg: Mapping | None = None) -> Any:
        """The parent's ``predict`` on calibrated heatmaps: each forward pass (and its flipped
        twin, with ``flip_test``) is calibrated before averaging, so channel swaps of the flip
        mix calibrated values only. ``output_heatmaps`` returns the calibrated heatmaps."""
        test_cfg = {} if test_cfg is None else test_cfg
        if test_cfg.get("flip_test", False):
            if not isinstance(feats, (list, tuple)) or len(feats) != 2:
                raise ValueError("flip_test needs `feats` = [features, features of the flipped image]")
            _feats, _feats_flip = feats
            flipped = flip_heatmaps(
                self._calibrate(self.forward(_feats_flip)),
                flip_mode=test_cfg.get("flip_mode", "heatmap"),
                flip_indices=batch_data_samples[0].metainfo["flip_indices"],
                shift_heatmap=test_cfg.get("shift_heatmap", False),
            )
            heatmaps = (self._calibrate(self.forward(_feats)) + flipped) * 0.5
        else:
            heatmaps = self._calibrate(self.forward(feats))
        preds = self._decode_calibrated(heatmaps)
        if test_cfg.get("output_heatmaps", False):
            return preds, [PixelData(heatmaps=hm) for hm in heatmaps.detach()]
        return preds

    def loss(self, feats: tuple[Tensor, ...], batch_data_samples: Sequence, train_cfg: Mapping | None = None) -> dict:
        """Compute ``loss_rank``, ``loss_sort``, ``loss_inst`` (each scaled) and ``acc_pose``,
        and fold the batch's heatmap maxima into the confidence statistics.

        Args:
            feats (tuple[Tensor]): Multi-stage features.
            batch_data_samples (list[PoseDataSample]): B top-down data samples with
                ``gt_fields.heatmaps`` (K, H, W) and ``gt_instance_labels.keypoint_weights`` (1, K).
            train_cfg (dict, optional): ``compute_acc`` (default True) and optionally ``sigmas`` /
                ``metainfo`` for Instance Sort.
        """
        train_cfg = {} if train_cfg is None else train_cfg
        heatmaps = self.forward(feats)
        gt_heatmaps = torch.stack([d.gt_fields.heatmaps for d in batch_data_samples])
        keypoint_weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in batch_data_samples])

        losses = _loss_dict(self.loss_module(heatmaps, gt_heatmaps, keypoint_weights))
        confidence, index = heatmaps.flatten(2).max(dim=2)  # (B, K); grad → arg-max pixel
        self._gather_peak_statistics(confidence[None])
        if self.coeff_inst > 0:
            coords = refine_argmax_2d(heatmaps.detach(), index)
            losses["loss_inst"] = self._instance_sort(
                confidence, coords, keypoint_weights, batch_data_samples, train_cfg
            )

        if train_cfg.get("compute_acc", True):
            # peak shifted to 1: the PCK decoder would put a keypoint with a peak <= 0 at -1
            level = confidence.detach()[..., None, None] - 1.0
            _, avg_acc, _ = pose_pck_accuracy(
                output=to_numpy(heatmaps.detach() - level),
                target=to_numpy(gt_heatmaps),
                mask=to_numpy(keypoint_weights) > 0,
            )
            losses["acc_pose"] = torch.tensor(avg_acc, device=gt_heatmaps.device)
        return losses


@MODELS.register_module()
class RSPoseSimCCHead(_CalibrationMixin, _InstanceSortMixin, SimCCHead):
    """:class:`mmpose.models.heads.SimCCHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers and ``forward`` are the parent's; the decoder must be ``SimCCLabel``. ``predict``/
    ``decode`` use calibrated vectors, each axis with its own statistics (buffers
    ``peak_min``/``peak_max`` (2, K): x, y; module docstring), so a constant added to a channel's
    x or y logits changes neither positions nor scores.
    Instance Sort is as in :class:`RSPoseHeatmapHead`, with the SimCC decoder's confidence
    ``min(max_x, max_y)`` and arg-max ``(argmax_x, argmax_y) / simcc_split_ratio`` (input pixels).

    Note:
        - B: batch size (= instances), K: keypoints, Wx, Wy: SimCC bins along x and y
          (``input_size * simcc_split_ratio``).
        - ``loss_rank``/``loss_sort``: B*K groups per axis (see :class:`RSPoseLoss`), weights
          ``keypoint_weights`` (B, K).
        - Instance Sort confidences (B, K) = ``min(max_x, max_y)``; the error-driven gradient
          reaches the arg-max bin of the axis with the smaller maximum (both on a tie).

    Args:
        *args, **kwargs: Everything :class:`SimCCHead` takes (``in_channels``, ``out_channels``,
            ``input_size``, ``in_featuremap_size``, ``simcc_split_ratio``, ..., ``decoder``).
        loss (dict): Config of the Spatial loss. Defaults to ``dict(type='RSPoseLoss')`` (default
            ``pos_thr``: :data:`rspose_tune.mmpose_adapter.losses.POS_THR`, every non-zero bin).
        delta_inst (float, optional): Smoothing of Instance Sort's step function (>= 0); None
            only with ``coeff_inst=0``. Defaults to 3.0.
        coeff_inst (float): Coefficient of ``loss_inst`` (>= 0); 0 skips Instance Sort entirely.
            Defaults to 1.0.
    """

    def __init__(
        self,
        *args: Any,
        loss: Mapping | None = None,
        delta_inst: float | None = 3.0,
        coeff_inst: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, loss=dict(type="RSPoseLoss") if loss is None else loss, **kwargs)
        self._init_instance_sort(delta_inst, coeff_inst)
        self._init_calibration(2, self.out_channels)

    def decode(self, batch_outputs: tuple[Tensor, Tensor]) -> list:
        """Calibrate the SimCC logits ((B, K, Wx), (B, K, Wy)) per axis and decode them."""
        pred_x, pred_y = batch_outputs
        return self._decode_calibrated(self._calibrate(pred_x, 0), self._calibrate(pred_y, 1))

    def _decode_calibrated(self, pred_x: Tensor, pred_y: Tensor) -> list:
        keypoints, scores = decode_calibrated_simcc(to_numpy(pred_x), to_numpy(pred_y), self.decoder)
        visibility = None
        if isinstance(scores, tuple):
            scores, visibility = scores
        preds = []
        for i in range(len(keypoints)):
            pred = InstanceData(keypoints=keypoints[i][None], keypoint_scores=scores[i][None])
            if visibility is not None:
                pred.keypoints_visible = visibility[i][None]
            preds.append(pred)
        return preds

    def predict(self, feats: Any, batch_data_samples: Sequence, test_cfg: Mapping | None = None) -> Any:
        """The parent's ``predict`` on calibrated vectors (each pass calibrated before flip-test
        averaging). ``output_heatmaps`` returns the outer product of the calibrated vectors
        (unlike the parent, not softmax-normalised)."""
        test_cfg = {} if test_cfg is None else test_cfg
        if test_cfg.get("flip_test", False):
            if not isinstance(feats, (list, tuple)) or len(feats) != 2:
                raise ValueError("flip_test needs `feats` = [features, features of the flipped image]")
            _feats, _feats_flip = feats
            x, y = self.forward(_feats)
            fx, fy = self.forward(_feats_flip)
            fx, fy = flip_vectors(
                self._calibrate(fx, 0), self._calibrate(fy, 1), flip_indices=batch_data_samples[0].metainfo["flip_indices"]
            )
            pred_x = (self._calibrate(x, 0) + fx) * 0.5
            pred_y = (self._calibrate(y, 1) + fy) * 0.5
        else:
            x, y = self.forward(feats)
            pred_x, pred_y = self._calibrate(x, 0), self._calibrate(y, 1)
        preds = self._decode_calibrated(pred_x, pred_y)
        if test_cfg.get("output_heatmaps", False):
            b, k, _ = pred_x.shape
            maps = torch.matmul(pred_y.reshape(b, k, -1, 1), pred_x.reshape(b, k, 1, -1))
            return preds, [PixelData(heatmaps=hm) for hm in maps.detach()]
        return preds

    def loss(self, feats: tuple[Tensor, ...], batch_data_samples: Sequence, train_cfg: Mapping | None = None) -> dict:
        """Compute ``loss_rank``, ``loss_sort``, ``loss_inst`` (each scaled) and ``acc_pose``,
        and fold the batch's per-axis maxima into the confidence statistics.

        Args:
            feats (tuple[Tensor]): Multi-stage features.
            batch_data_samples (list[PoseDataSample]): B top-down data samples with
                ``gt_instance_labels.keypoint_x_labels`` (1, K, Wx), ``keypoint_y_labels``
                (1, K, Wy) and ``keypoint_weights`` (1, K).
            train_cfg (dict, optional): Optionally ``sigmas`` / ``metainfo`` for Instance Sort.
        """
        train_cfg = {} if train_cfg is None else train_cfg
        pred_x, pred_y = self.forward(feats)
        labels = [d.gt_instance_labels for d in batch_data_samples]
        gt_x = torch.cat([lab.keypoint_x_labels for lab in labels])
        gt_y = torch.cat([lab.keypoint_y_labels for lab in labels])
        keypoint_weights = torch.cat([lab.keypoint_weights for lab in labels])

        losses = _loss_dict(self.loss_module((pred_x, pred_y), (gt_x, gt_y), keypoint_weights))
        max_x, arg_x = pred_x.max(dim=2)
        max_y, arg_y = pred_y.max(dim=2)
        self._gather_peak_statistics(torch.stack([max_x, max_y]))
        if self.coeff_inst > 0:
            confidence = torch.minimum(max_x, max_y)  # (B, K); grad → arg-max bin(s)
            coords = torch.stack(
                [refine_argmax_1d(pred_x.detach(), arg_x), refine_argmax_1d(pred_y.detach(), arg_y)], dim=-1
            )
            losses["loss_inst"] = self._instance_sort(
                confidence, coords, keypoint_weights, batch_data_samples, train_cfg
            )

        # peaks shifted to 1: the PCK decoder would put a keypoint with a peak <= 0 at -1
        shifted = (pred_x.detach() - max_x.detach()[..., None] + 1.0, pred_y.detach() - max_y.detach()[..., None] + 1.0)
        _, avg_acc, _ = simcc_pck_accuracy(
            output=to_numpy(shifted),
            target=to_numpy((gt_x, gt_y)),
            simcc_split_ratio=self.simcc_split_ratio,
            mask=to_numpy(keypoint_weights) > 0,
        )
        losses["acc_pose"] = torch.tensor(avg_acc, device=gt_x.device)
        return losses
