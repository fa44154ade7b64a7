"""What both RSPose heads share besides the mixins: their constructor and the Spatial loss module's
output as a dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def _loss_dict(result: Any) -> dict[str, Tensor]:
    if isinstance(result, Tensor):
        return {"loss_kpt": result}
    if isinstance(result, Mapping):
        return dict(result)
    raise TypeError(
        f"The head's `loss` module must return a Tensor or a dict of Tensors, got {type(result).__name__}"
    )


class _RSPoseHeadInit:
    """The constructor of both heads (first base of each: the parent head takes everything else).

    ``_calibration_axes``: 1 for heatmaps, 2 for SimCC (x, y), the rows of the calibration buffers.
    """

    _calibration_axes: int

    def __init__(
        self,
        *args: Any,
        loss: Mapping | None = None,
        delta_inst: float | None = 3.0,
        coeff_inst: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, loss=dict(type="RSPoseLoss") if loss is None else loss, **kwargs)  # type: ignore[call-arg]
        self._init_instance_sort(delta_inst, coeff_inst)  # type: ignore[attr-defined]
        self._init_calibration(self._calibration_axes, self.out_channels)  # type: ignore[attr-defined]
