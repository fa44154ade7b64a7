"""Pure-torch RSPose losses (imports torch only).

- :func:`spatial_rank_sort` - Spatial Rank and Spatial Sort over ranking groups (heatmaps,
  SimCC vectors), returned separately with their own error-driven gradients.
- :func:`instance_sort` - Instance Sort: instance confidences sorted by keypoint similarity.
"""

from ._rank_sort import NonFiniteError, instance_sort, spatial_rank_sort

__all__ = ["NonFiniteError", "instance_sort", "spatial_rank_sort"]
