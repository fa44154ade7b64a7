"""``RSPoseSimCCHead``: MMPose's ``SimCCHead`` trained with RSPose (see
:mod:`rspose_tune.mmpose_adapter.heads`)."""

from __future__ import annotations

from mmpose.models.heads import SimCCHead
from mmpose.registry import MODELS

from ._calibration import _CalibrationMixin
from ._instance_sort import _InstanceSortMixin
from ._shared import _RSPoseHeadInit
from ._simcc_common import _SimCCRSPoseMixin

__all__ = ["RSPoseSimCCHead"]


@MODELS.register_module()
class RSPoseSimCCHead(_RSPoseHeadInit, _CalibrationMixin, _InstanceSortMixin, _SimCCRSPoseMixin, SimCCHead):
    """:class:`mmpose.models.heads.SimCCHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers and ``forward`` are the parent's; the decoder must be ``SimCCLabel``. ``predict``/
    ``decode`` use calibrated vectors, each axis with its own statistics (buffers
    ``peak_min``/``peak_max`` (2, K): x, y; package docstring), so a constant added to a channel's
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

    # the constructor is _RSPoseHeadInit's (Args above); decode/predict/loss _SimCCRSPoseMixin's
