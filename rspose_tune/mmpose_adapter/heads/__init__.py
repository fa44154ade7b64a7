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
  Spearman metric of :mod:`rspose_tune.mmpose_adapter.metrics`) sees only these confidences.

Modules: :mod:`._geometry` (KS, the area factor, arg-max refinement), :mod:`._calibration`
(statistics and calibration), :mod:`._codecs` (calibrated decoding for the codecs),
:mod:`._instance_sort` (Instance Sort and its coordinate mapping), :mod:`._heatmap_head` and
:mod:`._simcc_head` (one head each; importing them registers the heads in ``MODELS``).
"""

from __future__ import annotations

from ._geometry import BBOX_AREA_FACTOR, keypoint_similarity, parabola_offset, refine_argmax_1d, refine_argmax_2d
from ._calibration import MissingCalibrationError, minmax_calibrate
from ._codecs import decode_calibrated_heatmaps, decode_calibrated_simcc
from ._instance_sort import RSPOSE_PACK_META_KEYS
from ._heatmap_head import RSPoseHeatmapHead  # registers RSPoseHeatmapHead in MODELS
from ._simcc_head import RSPoseSimCCHead  # registers RSPoseSimCCHead in MODELS

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
