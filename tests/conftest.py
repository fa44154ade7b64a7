"""Shared fixtures and helpers. Paths to the bundled real data (MMPose test suite; see tests/data/ATTRIBUTION.md).

Each test folder mirrors a package of the code (tests/report/ tests rspose_tune/report/, ...); its
conftest.py holds what that folder's tests share. What tests in several folders share is here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rspose_tune.searcher import PruningAwareOptunaSearch

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


# --------------------------------------------------------------------------------------------
# Helpers shared by tests in several folders
# --------------------------------------------------------------------------------------------

#: A known-good setting (Table E.8's ViT-B row) and two variants: B another setting, C with Instance Sort off.
KG = {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": 3.0, "coeff_inst": 0.25}
B = {**KG, "delta_rank": 0.7}
C = {**KG, "coeff_inst": None, "delta_inst": None}


def _stage_spec(**kw):
    """A run spec with confirm, baseline and warm-start stages (the run spec's and --resume's tests)."""
    from rspose_tune.runspec import RunSpec
    from rspose_tune.spaces import load_preset

    base = dict(run="r", storage="/s", preset=load_preset("demo"), num_trials=8, seed=0, max_epochs=10, grace_epochs=2,
                reduction_factor=3, gpus_per_trial=0.0, cpus_per_trial=1.0, workers_per_trial=1,
                dataloader_workers=None, scheduler="asha", sampler="tpe", n_startup_trials=2, confirm_top=2,
                confirm_seeds=(1, 2), baseline=True, baseline_seeds=(1, 2),
                warm_start=({"params": B, "source": "/runs/x trial t"},),
                tpe_options={"constant_liar": True, "multivariate": False})
    return RunSpec(**{**base, **kw})



#: The searcher's test space and budget (tests/test_searcher.py, tests/test_limiter.py).
MAX_T = 4

SPACE = {
    "delta_rank": {"low": 0.1, "high": 1.0},
    "coeff_rank": {"fixed": 1.0},
    "delta_sort": {"low": 0.1, "high": 3.0, "log": True},
    "coeff_sort": {"low": 0.1, "high": 4.0, "log": True, "allow_off": True},
    "delta_inst": {"low": 0.25, "high": 5.0, "log": True},
    "coeff_inst": {"low": 0.05, "high": 3.0, "log": True, "allow_off": True},
}


def make_searcher(space=SPACE, **kwargs) -> PruningAwareOptunaSearch:
    from rspose_tune.searcher import PruningAwareOptunaSearch

    args = {"max_epochs": MAX_T, "metric": "metric", "mode": "max", "n_startup_trials": 3, **kwargs}
    return PruningAwareOptunaSearch(space, **args)


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter: its last line of output (the import and shim tests)."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


BUCKET = "rspose-test"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """moto's S3 server on a free 127.0.0.1 port, a bucket, and the AWS_* variables pointing at it."""
    import pyarrow.fs as pafs

    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, port = time.monotonic() + 60, None
        while port is None and time.monotonic() < deadline:
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", log.read_text())
            port = match and match.group(1)
            assert server.poll() is None, log.read_text()
            time.sleep(0.2)
        assert port, f"moto did not start: {log.read_text()}"
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        pafs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing", region="us-east-1",
                          allow_bucket_creation=True).create_dir(BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def switchable_demo():
    """The demo preset with Spatial Sort and Instance Sort switchable (``allow_off``), as it was before
    issue 26's third round made them always on: the space the shipped demo tables were designed in."""
    import dataclasses

    from rspose_tune.spaces import load_preset

    preset = load_preset("demo")
    params = {**preset.params, **{n: dataclasses.replace(preset.params[n], allow_off=True)
                                  for n in ("coeff_sort", "coeff_inst")}}
    return dataclasses.replace(preset, params=params)
