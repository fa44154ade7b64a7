"""Issue 10: s3:// storage end to end (search, report, export, --resume) against moto's standalone
S3 server, started by the test on 127.0.0.1; the Optuna journal is in the bucket, never in memory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

BUCKET = "rspose-test"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """moto's S3 server on a free 127.0.0.1 port, a bucket, and the AWS_* variables pointing at it."""
    import pyarrow.fs as pafs

    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
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
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
        pafs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing", region="us-east-1",
                          allow_bucket_creation=True).create_dir(BUCKET)  # fmt: skip
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from rspose_tune.demo_data import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_train=48, n_val=12)


def _run(module: str, *args: str, env: dict, cwd, timeout: int = 900) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], env=full, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_s3_search_report_export_and_resume(s3_env, demo_data, tmp_path, monkeypatch):
    import optuna
    import pyarrow.fs as pafs

    from rspose_tune.results import read_results

    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    storage = f"s3://{BUCKET}/runs"
    proc = _run("rspose_tune.search", "--storage", storage, "--name", "s3run", "--data-root", str(demo_data),
                "--num-trials", "2", "--max-epochs", "2", "--grace-epochs", "1", "--reduction-factor", "2",
                "--max-concurrent", "2", "--no-dashboard", env=s3_env, cwd=tmp_path)  # fmt: skip
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
        optuna.storages.journal.JournalFileBackend(str(local))))  # fmt: skip
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
                 "--no-report", env=s3_env, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "search finished: 2 trials" in again.stdout


def test_searcher_journal_on_s3_is_uploaded_at_each_save_and_reopened(s3_env, tmp_path, monkeypatch):
    import pickle

    import optuna
    import pyarrow.fs as pafs

    from rspose_tune.searcher import PruningAwareOptunaSearch
    from rspose_tune.spaces import load_preset

    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    preset = load_preset("demo")
    uri = f"s3://{BUCKET}/unit/run/optuna.journal"
    searcher = PruningAwareOptunaSearch(preset.params, max_epochs=2, metric="metric", mode="max", journal_path=uri)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, "metric": 0.5})
    searcher.on_trial_complete("t1", {"epoch": 2, "metric": 0.7})
    searcher.suggest("t2")  # running at the snapshot
    searcher.save(str(tmp_path / "state.json"))  # what Ray calls at an experiment snapshot
    s3, where = pafs.FileSystem.from_uri(uri)
    assert s3.get_file_info(where).type == pafs.FileType.File
    # A new driver (another machine: nothing local) unpickles the searcher from tuner.pkl and restores it.
    again = pickle.loads(pickle.dumps(searcher))
    again.restore(str(tmp_path / "state.json"))
    states = {t.user_attrs["rspose:ray_trial_id"]: t.state for t in again.study.trials}
    assert states == {"t1": optuna.trial.TrialState.COMPLETE, "t2": optuna.trial.TrialState.FAIL}  # t2 interrupted
    assert again.journal_path == uri and searcher._journal_local != again._journal_local
