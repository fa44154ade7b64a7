"""Import this module to use rspose_tune's MMPose modules from a plain MMPose run.

Exported configs carry ``custom_imports = dict(imports=['rspose_tune.mmpose_adapter.plugin'])``
so that mmpose's own ``tools/train.py`` finds ``RSPoseHeatmapHead``/``RSPoseSimCCHead``/``RSPoseRTMCCHead``/
``RSPoseLoss``. Importing it is the explicit request to set MMPose up (the mmcv.ops shim when
compiled ops are missing, then registration); ``import rspose_tune`` never does this.
"""

from rspose_tune.mmpose_adapter import setup_mmpose

setup_mmpose()
