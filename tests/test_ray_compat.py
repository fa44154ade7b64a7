"""Issue 17: every private or developer-only Ray API rspose_tune uses (rspose_tune._ray_compat),
checked against the installed Ray: the version pin, and each accessor on real Ray Tune objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rspose_tune import _ray_compat as rc


def test_the_installed_ray_is_the_one_the_compat_layer_was_written_for():
    assert rc.check_ray_version() == rc.TESTED_RAY
    with pytest.raises(rc.RayVersionError, match=r"ray 2\.99\.0 is installed.*ray==2\.60\.0"):
        rc.check_ray_version("2.99.0")


def test_importing_the_compat_layer_imports_no_ray():
    code = "import sys, rspose_tune._ray_compat; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def _probe(config):
    from ray import tune

    context = tune.get_context()
    fs, trial_path = rc.trial_storage(context)
    tune.report({"epoch": 1, "metric": 1.0, "trial_path": trial_path, "fs": type(fs).__name__,
                 "workdir": rc.trial_working_directory(context)})


@pytest.mark.slow
def test_each_accessor_on_a_real_tune_run(tmp_path, local_ray):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    seen = {}

    class Where(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen["location"] = rc.trial_location(trial)

    search_alg = BasicVariantGenerator(max_concurrent=1)
    tuner = tune.Tuner(
        tune.with_resources(_probe, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", callbacks=[Where()], verbose=0),
    )
    result = tuner.fit()[0]
    fs, experiment, name = seen["location"]
    assert type(fs).__name__ == "LocalFileSystem" and Path(experiment) == tmp_path / "exp" and name == "exp"
    assert Path(result.metrics["trial_path"]).parent == tmp_path / "exp" and result.metrics["fs"] == "LocalFileSystem"
    assert Path(result.metrics["workdir"]).is_dir()
    restored = tune.Tuner.restore(str(tmp_path / "exp"), trainable=tune.with_resources(_probe, {"cpu": 1}))
    assert isinstance(rc.restored_search_alg(restored), BasicVariantGenerator)


def test_classic_progress_table_keeps_a_users_choice(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    rc.use_classic_progress_table()
    import os

    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    rc.use_classic_progress_table()
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
