"""A narrow stand-in for ``mmcv.ops`` when mmcv was installed without compiled ops.

``mmcv-lite`` ships the Python files of ``mmcv.ops`` but not the compiled ``mmcv._ext``
extension, so ``import mmcv.ops`` fails. mmpose 1.3.2 imports exactly one name from it
unconditionally (``MultiScaleDeformableAttention``, for the EDPose head, in
``mmpose/models/heads/transformer_heads/``), which breaks ``import mmpose.models`` even for
models that never touch deformable attention. Every other ``mmcv.ops`` import in mmpose is
inside ``try``/lazy blocks and keeps its own fallback.

:func:`install_mmcv_ops_shim` registers a module that provides only that name, as a class
whose construction raises :class:`MissingMMCVOpsError`. It does nothing when the real
``mmcv._ext`` is importable (full mmcv, e.g. installed with openmim on a CUDA machine).
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import importlib.util
import sys
import types

__all__ = ["MissingMMCVOpsError", "has_compiled_mmcv_ops", "install_mmcv_ops_shim"]

SHIM_MODULE_ATTR = "__rspose_tune_shim__"

#: The only names mmpose 1.3.2 imports from ``mmcv.ops`` outside a try/except block.
SHIMMED_NAMES = ("MultiScaleDeformableAttention",)


class MissingMMCVOpsError(RSPoseTuneError, RuntimeError):
    """Raised when a model needs a compiled ``mmcv.ops`` operator that is not installed."""


def has_compiled_mmcv_ops() -> bool:
    """Whether the compiled extension ``mmcv._ext`` (full mmcv) is importable."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except ModuleNotFoundError:  # mmcv itself is missing
        return False


def _missing_op(name: str) -> type:
    def __init__(self, *args, **kwargs):  # noqa: ANN001 - mirrors any op signature
        raise MissingMMCVOpsError(
            f"`mmcv.ops.{name}` needs full mmcv with compiled ops, but only mmcv-lite is "
            "installed (no `mmcv._ext`). Models using it (e.g. EDPose, deformable attention) "
            "cannot run here. Install full mmcv 2.1.0 built for your torch/CUDA, for example "
            "`pip install -U openmim && mim install 'mmcv==2.1.0'` (see docs/stack.md, 'GPU clusters')."
        )

    return type(name, (), {"__init__": __init__, "__module__": "mmcv.ops"})


def install_mmcv_ops_shim() -> bool:
    """Register the ``mmcv.ops`` stand-in if compiled ops are missing.

    Returns:
        True if the shim is (now) active, False if real compiled ops exist and nothing was done.
    """
    if has_compiled_mmcv_ops():
        return False
    existing = sys.modules.get("mmcv.ops")
    if existing is not None:
        return bool(getattr(existing, SHIM_MODULE_ATTR, False))
    import mmcv  # the package itself (mmcv-lite) must exist

    shim = types.ModuleType("mmcv.ops", doc="rspose_tune stand-in: mmcv built without ops.")
    setattr(shim, SHIM_MODULE_ATTR, True)
    shim.__all__ = list(SHIMMED_NAMES)
    for name in SHIMMED_NAMES:
        setattr(shim, name, _missing_op(name))
    sys.modules["mmcv.ops"] = shim
    mmcv.ops = shim
    return True
