"""The GPU check's preflight (``python -m rspose_tune.bench gpu``, :mod:`rspose_tune.bench._gpu`): before
anything else every module of the bundle's closure is looked up, and the registries mmengine would
import lazily (and whose failures it swallows) are imported, so every missing module is named at once."""

from __future__ import annotations

import sys

__all__ = ["DEEP_IMPORTS", "REGISTRY_SCOPES", "deep_import_problems", "missing_modules", "preflight"]

#: mmengine imports a scope's ``registry`` module inside ``try/except`` and turns any failure into
#: "X is not in the registry" (a KeyError far from its cause). The check imports these scopes'
#: registries, and every location those registries would import lazily, up front, where an import
#: error shows its cause; plus the modules it runs itself.
REGISTRY_SCOPES = ("mmpose", "mmpretrain")
DEEP_IMPORTS = ("mmengine.runner", "mmcv.transforms", "mmpretrain.models", "mmpretrain.datasets", "mmdet.utils",
                "xtcocotools.coco", "pycocotools.coco", "rspose_tune.bench._losses", "rspose_tune.bench._step",
                "rspose_tune.demo_data", "rspose_tune.spaces", "rspose_tune.training")


# --------------------------------------------------------------------------------------------
# Preflight: every module the check needs, named at once
# --------------------------------------------------------------------------------------------
def preflight() -> list[str]:
    """What this Python cannot import, as readable items; empty when the check can run."""
    problems, missing = missing_modules()
    return problems + deep_import_problems(missing)


def missing_modules() -> tuple[list[str], list[str]]:
    """Every top-level module of the bundle's closure that cannot be found (nothing is imported).

    Returns ``(readable items, module names)``.
    """
    import importlib.util

    from rspose_tune.bench._bundle import CHECK_MODULES, MACHINE_PACKAGES

    problems: list[str] = []
    missing: list[str] = []
    for module, dist in CHECK_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
            where = "the machine's" if dist in MACHINE_PACKAGES else "in the bundle"
            problems.append(f"{module} ({dist}, {where})")
    return problems, missing


def deep_import_problems(missing: list[str]) -> list[str]:
    """Import the registries and modules that mmengine would import lazily and swallow (:data:`DEEP_IMPORTS`).

    Failures caused by a module already in ``missing`` are not repeated.
    """
    import importlib

    if "torch" in missing or "setuptools" in missing:
        return []  # nothing below imports without them
    if sys.version_info >= (3, 12):
        # mmengine's Runner (collect_env) imports distutils, which Python 3.12 removed; importing
        # setuptools puts its copy in place as `distutils` (3.11, this project's Python, has its own).
        import setuptools  # noqa: F401
    problems: list[str] = []
    deep: list[str] = []
    try:
        from rspose_tune.mmpose_adapter import setup_mmpose

        setup_mmpose()  # the mmcv.ops shim, mmpose.models, rspose_tune's registrations
        from mmengine.registry import Registry

        for scope in REGISTRY_SCOPES:
            deep.append(f"{scope}.registry")
            registry_module = importlib.import_module(f"{scope}.registry")
            deep += sorted({loc for v in vars(registry_module).values() if isinstance(v, Registry)
                            for loc in v._locations})
    except Exception as exc:  # noqa: BLE001 - reported as an import problem, with its cause
        problems.append(_import_problem("rspose_tune.mmpose_adapter.setup_mmpose()", exc, missing))
    for name in (*deep, *DEEP_IMPORTS):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            problems.append(_import_problem(name, exc, missing))
    return list(dict.fromkeys(p for p in problems if p))


def _import_problem(name: str, exc: BaseException, missing: list[str]) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if exc.name.split(".")[0] in missing:
            return ""  # already named
        return f"{name} (No module named {exc.name!r})"
    return f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
