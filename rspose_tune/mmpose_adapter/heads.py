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
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmengine.logging import print_log
from mmpose.codecs import MSRAHeatmap, SimCCLabel, UDPHeatmap
from mmpose.evaluation.functional import pose_pck_accuracy, simcc_pck_accuracy
from mmpose.models.heads import HeatmapHead, SimCCHead
from mmpose.registry import MODELS
from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor

from rspose_tune import losses as _pure

from .losses import RSPoseLoss, check_component

__all__ = [
    "BBOX_AREA_FACTOR",
    "RSPOSE_PACK_META_KEYS",
    "RSPoseHeatmapHead",
    "RSPoseSimCCHead",
    "keypoint_similarity",
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
class RSPoseHeatmapHead(_InstanceSortMixin, HeatmapHead):
    """:class:`mmpose.models.heads.HeatmapHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers, ``forward`` and ``predict`` are the parent's. Works with the ``UDPHeatmap`` (ViTPose)
    and ``MSRAHeatmap`` (SimpleBaseline, HRNet) codecs, which must be given as ``decoder``.

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

    def loss(self, feats: tuple[Tensor, ...], batch_data_samples: Sequence, train_cfg: Mapping | None = None) -> dict:
        """Compute ``loss_rank``, ``loss_sort``, ``loss_inst`` (each scaled) and ``acc_pose``.

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
        if self.coeff_inst > 0:
            confidence, index = heatmaps.flatten(2).max(dim=2)  # (B, K); grad → arg-max pixel
            coords = refine_argmax_2d(heatmaps.detach(), index)
            losses["loss_inst"] = self._instance_sort(
                confidence, coords, keypoint_weights, batch_data_samples, train_cfg
            )

        if train_cfg.get("compute_acc", True):
            _, avg_acc, _ = pose_pck_accuracy(
                output=to_numpy(heatmaps),
                target=to_numpy(gt_heatmaps),
                mask=to_numpy(keypoint_weights) > 0,
            )
            losses["acc_pose"] = torch.tensor(avg_acc, device=gt_heatmaps.device)
        return losses


@MODELS.register_module()
class RSPoseSimCCHead(_InstanceSortMixin, SimCCHead):
    """:class:`mmpose.models.heads.SimCCHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers, ``forward`` and ``predict`` are the parent's; the decoder must be ``SimCCLabel``.
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
        loss (dict): Config of the Spatial loss. Defaults to ``dict(type='RSPoseLoss')`` (SimCC
            default ``pos_thr``: :data:`rspose_tune.mmpose_adapter.losses.SIMCC_POS_THR`).
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

    def loss(self, feats: tuple[Tensor, ...], batch_data_samples: Sequence, train_cfg: Mapping | None = None) -> dict:
        """Compute ``loss_rank``, ``loss_sort``, ``loss_inst`` (each scaled) and ``acc_pose``.

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
        if self.coeff_inst > 0:
            max_x, arg_x = pred_x.max(dim=2)
            max_y, arg_y = pred_y.max(dim=2)
            confidence = torch.minimum(max_x, max_y)  # (B, K); grad → arg-max bin(s)
            coords = torch.stack(
                [refine_argmax_1d(pred_x.detach(), arg_x), refine_argmax_1d(pred_y.detach(), arg_y)], dim=-1
            )
            losses["loss_inst"] = self._instance_sort(
                confidence, coords, keypoint_weights, batch_data_samples, train_cfg
            )

        _, avg_acc, _ = simcc_pck_accuracy(
            output=to_numpy((pred_x, pred_y)),
            target=to_numpy((gt_x, gt_y)),
            simcc_split_ratio=self.simcc_split_ratio,
            mask=to_numpy(keypoint_weights) > 0,
        )
        losses["acc_pose"] = torch.tensor(avg_acc, device=gt_x.device)
        return losses
