"""What the 1-D (SimCC) RSPose heads share: Spatial Rank/Sort over each SimCC axis, Instance Sort,
the per-axis confidence statistics, calibrated decoding and prediction. Used by
:class:`RSPoseSimCCHead` and :class:`RSPoseRTMCCHead`, whose parents' ``loss`` build the same
targets and whose ``forward`` returns ``(pred_x, pred_y)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.structures import InstanceData, PixelData
from mmpose.evaluation.functional import simcc_pck_accuracy
from mmpose.models.utils.tta import flip_vectors
from mmpose.utils.tensor_utils import to_numpy
from torch import Tensor

from ._codecs import decode_calibrated_simcc
from ._geometry import refine_argmax_1d
from ._shared import _loss_dict


class _SimCCRSPoseMixin:
    """``decode``, ``predict`` and ``loss`` of a 1-D RSPose head (before the parent head in the
    bases, after ``_RSPoseHeadInit``, ``_CalibrationMixin`` and ``_InstanceSortMixin``).
    The parent provides ``forward`` -> ``(pred_x, pred_y)``, ``decoder`` (``SimCCLabel``),
    ``simcc_split_ratio`` and ``loss_module``."""

    _calibration_axes = 2  # x, y

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
