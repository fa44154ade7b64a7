"""Issue 5 end to end: the search CLI on a local Ray (demo preset), and --resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FAST = ["--num-trials", "4", "--max-epochs", "3", "--grace-epochs", "1", "--reduction-factor", "2",
        "--max-concurrent", "2", "--no-dashboard", "--verbose", "1"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from rspose_tune.demo_data import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_train=96, n_val=24)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "rspose_tune.search", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _study(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    return optuna.load_study(study_name="rspose", storage=storage)


def test_search_cli_runs_reports_and_exports(tmp_path, demo_data):
    import optuna
    from mmengine.config import Config

    from rspose_tune.results import read_metadata, read_results

    proc = _cli("--storage", str(tmp_path), "--name", "e2e", "--data-root", str(demo_data), *FAST)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    run_dir = tmp_path / "e2e"
    rows = read_results(run_dir / "trials")
    assert rows["trial_id"].nunique() == 4 and not rows.duplicated(["trial_id", "epoch"]).any()
    last = rows.sort_values("epoch").groupby("trial_id").last()
    assert set(last["status"]) <= {"completed", "pruned"} and "completed" in set(last["status"])
    assert ((last["status"] == "completed") == (last["epoch"] == 3)).all()
    # Optuna agrees: COMPLETE exactly for full-budget trials, PRUNED for the ones ASHA stopped.
    study_trials = _study(run_dir).trials
    states = {t.user_attrs["rspose:ray_trial_id"]: t.state for t in study_trials}
    for trial_id, row in last.iterrows():
        want = optuna.trial.TrialState.COMPLETE if row["status"] == "completed" else optuna.trial.TrialState.PRUNED
        assert states[trial_id] == want
    # The known-good point (Table E.8 ViT-B row) is the first trial proposed.
    assert study_trials[0].user_attrs.get("rspose:known_good") == 0
    first = last.loc[study_trials[0].user_attrs["rspose:ray_trial_id"]]
    assert (first["delta_rank"], first["delta_sort"], first["coeff_inst"]) == (0.4, 1.5, 0.25)
    meta = read_metadata(run_dir / "trials")
    assert meta["git_revision"] and meta["versions"]["ray"] == "2.60.0" and meta["budget"]["max_epochs"] == 3
    # Progress, the report table and the export are printed.
    assert "trial_" in out and "| Backbone |" in out and "| demo " in out
    exported = run_dir / "export" / "demo_rspose.py"
    assert f"wrote {exported}" in out
    cfg = Config.fromfile(str(exported))
    best = last[last["status"] == "completed"]["metric"].idxmax()
    assert cfg.model.head.loss.delta_sort == pytest.approx(last.loc[best, "delta_sort"])
    assert (run_dir / "report" / "curves.png").stat().st_size > 1000


def test_driver_killed_then_resume_finishes_and_keeps_history(tmp_path, demo_data):
    from rspose_tune.results import read_results

    run_dir = tmp_path / "resume"
    args = ["--storage", str(tmp_path), "--name", "resume", "--data-root", str(demo_data), *FAST, "--no-report"]
    proc = _cli(*args, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((run_dir / "trials").glob("*.parquet"))) < 3:
        time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, mid-search
    proc.wait()
    before = {t.number: t.params for t in _study(run_dir).trials}
    assert before, "nothing was recorded before the kill"

    resumed = _cli(*args, "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-4000:]
    rows = read_results(run_dir / "trials")
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    last = rows.sort_values("epoch").groupby("trial_id").last()
    assert rows["trial_id"].nunique() == 4 and set(last["status"]) <= {"completed", "pruned"}
    trials = _study(run_dir).trials
    assert all(trials[n].params == p for n, p in before.items())  # history kept
    assert not [t for t in trials if t.state.name == "RUNNING"]
    fresh = [t for t in trials if "rspose:rerun_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh)  # no repeated proposal
