"""``RSPoseRTMCCHead``: MMPose's ``RTMCCHead`` (RTMPose) trained with RSPose (see
:mod:`rspose_tune.mmpose_adapter.heads`)."""

from __future__ import annotations

from mmpose.models.heads import RTMCCHead
from mmpose.registry import MODELS

from ._calibration import _CalibrationMixin
from ._instance_sort import _InstanceSortMixin
from ._shared import _RSPoseHeadInit
from ._simcc_common import _SimCCRSPoseMixin

__all__ = ["RSPoseRTMCCHead"]


@MODELS.register_module()
class RSPoseRTMCCHead(_RSPoseHeadInit, _CalibrationMixin, _InstanceSortMixin, _SimCCRSPoseMixin, RTMCCHead):
    """:class:`mmpose.models.heads.RTMCCHead` trained with RSPose (Spatial Rank, Spatial Sort,
    Instance Sort).

    Layers (large-kernel conv, MLP, GAU block, ``cls_x``/``cls_y``) and ``forward`` are the
    parent's; ``decode``, ``predict`` and ``loss`` are :class:`RSPoseSimCCHead`'s (one home:
    ``_simcc_common._SimCCRSPoseMixin``), per-axis calibration included. The decoder must be
    ``SimCCLabel``; RTMPose's un-normalised, two-sigma labels work as they are, since
    ``RSPoseLoss`` normalises each group before ``pos_thr`` (its docstring lists the supports).

    Args:
        *args, **kwargs: Everything :class:`RTMCCHead` takes (``in_channels``, ``out_channels``,
            ``input_size``, ``in_featuremap_size``, ``simcc_split_ratio``, ``final_layer_kernel_size``,
            ``gau_cfg``, ``decoder``).
        loss (dict): Config of the Spatial loss. Defaults to ``dict(type='RSPoseLoss')``.
        delta_inst (float, optional): Smoothing of Instance Sort's step function (>= 0); None
            only with ``coeff_inst=0``. Defaults to 3.0.
        coeff_inst (float): Coefficient of ``loss_inst`` (>= 0); 0 skips Instance Sort entirely.
            Defaults to 1.0.
    """
