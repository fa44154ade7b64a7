"""Shared fixtures. Paths to the bundled real data (MMPose test suite; see tests/data/ATTRIBUTION.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# Two cores: keep torch from oversubscribing them when Ray or dataloaders add processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def mmpose_ready():
    """MMPose registries with the mmcv.ops shim (when needed) and rspose_tune's modules."""
    from rspose_tune.mmpose_adapter import setup_mmpose

    setup_mmpose()
    return True


@pytest.fixture(scope="session")
def mmpose_base():
    """Stock MMPose registries only (the shim when needed), without rspose_tune's modules."""
    from mmengine.registry import init_default_scope

    from rspose_tune.mmpose_adapter import install_mmcv_ops_shim

    install_mmcv_ops_shim()
    import mmpose.models  # noqa: F401

    init_default_scope("mmpose")
    return True
