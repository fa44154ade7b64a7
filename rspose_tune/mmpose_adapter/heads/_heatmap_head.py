"""``RSPoseHeatmapHead``: MMPose's ``HeatmapHead`` trained with RSPose (see
:mod:`rspose_tune.mmpose_adapter.heads`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.structures import InstanceData, PixelData
from mmpose.evaluation.functional import pose_pck_accuracy
from mmpose.models.heads import HeatmapHead
from mmpose.models.utils.tta import flip_heatmaps
from mmpose.registry import MODELS
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor

from ._calibration import _CalibrationMixin
from ._codecs import decode_calibrated_heatmaps
from ._geometry import refine_argmax_2d
from ._instance_sort import _InstanceSortMixin
from ._shared import _RSPoseHeadInit, _loss_dict

__all__ = ["RSPoseHeatmapHead"]


@MODELS.register_module()
class RSPoseHeatmapHead(_RSPoseHeadInit, _CalibrationMixin, _InstanceSortMixin, HeatmapHead):
    """:class:`mmpose.models.heads.HeatmapHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers and ``forward`` are the parent's. Works with the ``UDPHeatmap`` (ViTPose) and
    ``MSRAHeatmap`` (SimpleBaseline, HRNet) codecs, which must be given as ``decoder``.
    ``predict``/``decode`` use calibrated heatmaps (package docstring): positions and scores do
    not depend on a constant added to a channel's logits; ``loss`` gathers the statistics
    (buffers ``peak_min``/``peak_max`` (1, K), ``peak_epoch``).

    Instance Sort: per keypoint type k, the valid instances of the batch are sorted by
    KS_k = ``exp(-d^2 / (2 area (2 sigma_k)^2))`` of their heatmap arg-max (sub-pixel refined; COCO's
    OKS term, ``d`` in original-image pixels, see the package docstring), with the heatmap maximum
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

    _calibration_axes = 1  # the constructor is _RSPoseHeadInit's (Args above)

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
