"""``RSPoseHeatmapHead``, ``RSPoseSimCCHead`` and ``RSPoseRTMCCHead``: MMPose top-down heads trained with RSPose.

Registered in MMPose's ``MODELS`` registry by :func:`rspose_tune.mmpose_adapter.setup_mmpose`.
All keep their parent's layers, ``forward`` and ``predict``; only ``loss`` changes:

- ``loss_rank``, ``loss_sort``: Spatial Rank / Spatial Sort from the ``loss`` module
  (``dict(type='RSPoseLoss', ...)`` by default), already scaled by their coefficients;
- ``loss_inst``: Instance Sort, computed here because it needs the data samples: per keypoint
  type, the instances of the batch are sorted by the keypoint similarity (KS, COCO's OKS term) of
  their decoded arg-max, using the decoder's own confidence;
- ``acc_pose``: the parent's accuracy.

Where each part is explained: how Instance Sort gets original-image coordinates in
:mod:`._instance_sort`, the sub-pixel refinement for KS in :mod:`._geometry`, the confidence
calibration of prediction (paper App. C) in :mod:`._calibration` and the calibrated decoding in
:mod:`._codecs`; docs/losses.md ("Confidence calibration") gives the user's view and the measurements.

Modules: :mod:`._geometry` (KS, the area factor, arg-max refinement), :mod:`._calibration`
(statistics and calibration), :mod:`._codecs` (calibrated decoding for the codecs),
:mod:`._instance_sort` (Instance Sort and its coordinate mapping), :mod:`._heatmap_head` and
:mod:`._simcc_head`, :mod:`._rtmcc_head` (one head each; importing them registers the heads in
``MODELS``); the two 1-D heads share :mod:`._simcc_common` (loss, calibrated decoding, prediction).

"""

from __future__ import annotations

from ._geometry import BBOX_AREA_FACTOR, keypoint_similarity, parabola_offset, refine_argmax_1d, refine_argmax_2d
from ._calibration import MissingCalibrationError, minmax_calibrate
from ._codecs import decode_calibrated_heatmaps, decode_calibrated_simcc
from ._instance_sort import RSPOSE_PACK_META_KEYS
from ._heatmap_head import RSPoseHeatmapHead  # registers RSPoseHeatmapHead in MODELS
from ._simcc_head import RSPoseSimCCHead  # registers RSPoseSimCCHead in MODELS
from ._rtmcc_head import RSPoseRTMCCHead  # registers RSPoseRTMCCHead in MODELS

__all__ = [
    "BBOX_AREA_FACTOR",
    "RSPOSE_PACK_META_KEYS",
    "MissingCalibrationError",
    "RSPoseHeatmapHead",
    "RSPoseRTMCCHead",
    "RSPoseSimCCHead",
    "decode_calibrated_heatmaps",
    "decode_calibrated_simcc",
    "keypoint_similarity",
    "minmax_calibrate",
]
