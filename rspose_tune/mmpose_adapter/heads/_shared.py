"""What both RSPose heads share besides the mixins: the Spatial loss module's output as a dict."""

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
