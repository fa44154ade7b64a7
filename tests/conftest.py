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


@pytest.fixture(scope="session")
def demo_preset(tmp_path_factory):
    """The shipped ``demo`` preset pointed at a small generated dataset (48 train, 12 val images)."""
    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.spaces import load_preset

    root = generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_train=48, n_val=12, seed=0)
    return load_preset("demo", data_root=root)


@pytest.fixture(scope="module")
def local_ray(request):
    """A local 2-CPU Ray for one test module; its hooks/classes travel by value to the workers."""
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
