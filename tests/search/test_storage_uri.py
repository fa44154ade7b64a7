"""s3:// storage end to end (search, report, export, --resume) against moto's standalone S3 server,
started by the test on 127.0.0.1 (the ``s3_env`` fixture, tests/conftest.py); the Optuna journal is
in the bucket, never in memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import BUCKET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from rspose_tune.demo_data import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_train=48, n_val=12)


def _run(module: str, *args: str, env: dict, cwd, timeout: int = 900) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], env=full, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_s3_search_report_export_and_resume(s3_env, demo_data, tmp_path, monkeypatch):
    import optuna
    import pyarrow.fs as pafs

    from rspose_tune.results import read_results

    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    storage = f"s3://{BUCKET}/runs"
    proc = _run("rspose_tune.search", "--storage", storage, "--name", "s3run", "--data-root", str(demo_data),
                "--num-trials", "2", "--max-epochs", "2", "--grace-epochs", "1", "--reduction-factor", "2",
                "--max-concurrent", "2", "--no-dashboard", env=s3_env, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    s3, _ = pafs.FileSystem.from_uri(storage)
    run = f"{BUCKET}/runs/s3run"
    files = {i.path[len(run) + 1:] for i in s3.get_file_info(pafs.FileSelector(run, recursive=True))}
    for name in ("run_spec.yaml", "optuna.journal", "tuner.pkl", "finished.json", "report/curves.png",
                 "export/demo_rspose.py"):
        assert name in files, sorted(files)
    assert not (tmp_path / "results").exists()  # nothing written to the local default storage
    rows = read_results(f"{storage}/s3run")
    assert rows["trial_id"].nunique() == 2 and "completed" in set(rows["status"])
    # The journal in the bucket holds the whole study: every trial finished, states as in the rows.
    local = tmp_path / "optuna.journal"
    with s3.open_input_stream(f"{run}/optuna.journal") as src:
        local.write_bytes(src.read())
    study = optuna.load_study(study_name="rspose", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(local))))
    states = {t.user_attrs["rspose:ray_trial_id"]: t.state.name for t in study.trials}
    last = rows.sort_values("epoch").groupby("trial_id").last()
    assert states == {tid: {"completed": "COMPLETE", "pruned": "PRUNED"}[s] for tid, s in last["status"].items()}
    # report and export read the bucket from another working directory
    report = _run("rspose_tune.report", storage, "--no-plots", env=s3_env, cwd=tmp_path)
    assert report.returncode == 0 and "| demo " in report.stdout, report.stderr[-3000:]
    out = tmp_path / "exported.py"
    export = _run("rspose_tune.export", storage, "--backbone", "demo", "--out", str(out), env=s3_env, cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    assert f"data_root='{demo_data}'" in out.read_text()
    # --resume needs only --name and --storage; it restores from the bucket (nothing left to run)
    again = _run("rspose_tune.search", "--resume", "--storage", storage, "--name", "s3run", "--no-dashboard",
                 "--no-report", env=s3_env, cwd=tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "search finished: 2 trials" in again.stdout
