"""Instance Sort of the RSPose heads: the keypoint similarity of each instance's decoded arg-max
in original-image pixels, and Instance Sort on it (:func:`rspose_tune.losses.instance_sort`).

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
from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix
from torch import Tensor

from rspose_tune import losses as _pure

from ..losses import RSPoseLoss, check_component
from ._geometry import BBOX_AREA_FACTOR, keypoint_similarity

__all__ = ["RSPOSE_PACK_META_KEYS"]

#: ``PackPoseInputs``'s default ``meta_keys`` plus ``bbox_rotation``, which Instance Sort needs to
#: map predictions back to the original image when ``RandomBBoxTransform`` rotates.
RSPOSE_PACK_META_KEYS = (
    "id", "img_id", "img_path", "category_id", "crowd_index", "ori_shape", "img_shape",
    "input_size", "input_center", "input_scale", "flip", "flip_direction", "flip_indices",
    "raw_ann_info", "dataset_name", "bbox_rotation",
)

_SUPPORTED_CODECS = "['UDPHeatmap' (heatmap_type='gaussian'), 'MSRAHeatmap', 'SimCCLabel']"


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
