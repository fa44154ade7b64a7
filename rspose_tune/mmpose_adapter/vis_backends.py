"""``RSPoseMLflowVisBackend``: mmengine's ``MLflowVisBackend`` with metric names MLflow accepts.

An exported config of a run tracked with ``--mlflow`` logs its training to the run's MLflow
experiment (:func:`rspose_tune.tracking.vis_backends`). mmengine's backend passes MMPose's metric
names through unchanged, and MLflow 3 refuses ``coco/AP (M)`` (parentheses), which ends the
training at its first validation; this one renames each metric by
:func:`rspose_tune._layout.mlflow_metric_name`, the rule the search's own MLflow logging uses, so
the export's curves line up with the search's.
"""

from __future__ import annotations

from mmengine.registry import VISBACKENDS
from mmengine.visualization import MLflowVisBackend

from rspose_tune._layout import mlflow_metric_name

__all__ = ["RSPoseMLflowVisBackend"]


@VISBACKENDS.register_module()
class RSPoseMLflowVisBackend(MLflowVisBackend):
    """``MLflowVisBackend`` whose scalars are named by :func:`~rspose_tune._layout.mlflow_metric_name`."""

    def add_scalar(self, name, value, step=0, **kwargs) -> None:
        super().add_scalar(mlflow_metric_name(name), value, step, **kwargs)

    def add_scalars(self, scalar_dict, step=0, file_path=None, **kwargs) -> None:
        super().add_scalars({mlflow_metric_name(k): v for k, v in scalar_dict.items()}, step, file_path, **kwargs)
