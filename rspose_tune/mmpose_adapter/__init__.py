"""MMPose adapter: the only layer that imports MMPose.

Call :func:`setup_mmpose` before building any MMPose model or config. It applies the narrow
``mmcv.ops`` shim when mmcv has no compiled ops (see :mod:`._mmcv_shim`), imports MMPose's
registries and registers rspose_tune's losses, heads and demo modules into them. Importing this
package does none of that by itself.
"""

from __future__ import annotations

from ._mmcv_shim import MissingMMCVOpsError, has_compiled_mmcv_ops, install_mmcv_ops_shim

__all__ = ["MissingMMCVOpsError", "has_compiled_mmcv_ops", "install_mmcv_ops_shim", "setup_mmpose"]

_READY = False


def setup_mmpose() -> None:
    """Make ``mmpose.models`` importable and register rspose_tune's modules. Idempotent."""
    global _READY
    if _READY:
        return
    install_mmcv_ops_shim()
    import mmpose.models  # noqa: F401  (fills mmpose's MODELS registry)
    from mmengine.registry import init_default_scope

    init_default_scope("mmpose")
    from . import _register  # noqa: F401  (registers RSPose losses/heads/demo modules)

    _READY = True
