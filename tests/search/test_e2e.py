"""The search CLI end to end on a local Ray: the demo preset (search, report, export; --resume after a
kill) and the demo-simcc preset (a CPU SimCC demo whose 1D path runs end to end: a search with the
stock-loss baseline, then its export trains)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.search.conftest import train_exported_simcc_config

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


def kill_driver_after_first_row(proc: subprocess.Popen, run_dir: Path, settled=None) -> float:
    """SIGKILL the search ``proc`` (started with ``start_new_session=True``: the driver and everything it
    started) once ``run_dir`` has its first epoch-1 Parquet row, mid-search; the time of the kill.
    ``settled(rows)``, if given, must also hold (``rows``: the Parquet row files so far), e.g. the
    driver's other callbacks have handled every result that has a row."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        rows = list((run_dir / "trials").glob("*-e*.parquet"))
        if any(r.name.endswith("-e000001.parquet") for r in rows) and (settled is None or settled(rows)):
            break
        time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    killed_at = time.time()
    proc.wait()
    return killed_at


def _cut_newest_intermediate_values(run_dir: Path, ray_ids) -> None:
    """Delete, in the run's Optuna journal, the newest intermediate value of each of ``ray_ids``'s trials."""
    from optuna.storages.journal._storage import JournalOperation

    numbers = {t._trial_id for t in _study(run_dir).trials if t.user_attrs.get("rspose:ray_trial_id") in ray_ids}
    path = run_dir / "optuna.journal"
    ops = [json.loads(line) for line in path.read_text().splitlines()]
    newest = {}
    for i, op in enumerate(ops):
        if op["op_code"] == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE and op["trial_id"] in numbers:
            newest[op["trial_id"]] = i
    assert sorted(newest) == sorted(numbers), (newest, numbers)  # each had reported an epoch
    path.write_text("".join(json.dumps(op) + "\n" for i, op in enumerate(ops) if i not in newest.values()))


def _study(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    return optuna.load_study(study_name="rspose", storage=storage)


@pytest.mark.slow
def test_search_cli_runs_reports_and_exports(tmp_path, demo_data):
    import optuna
    from mmengine.config import Config

    from rspose_tune.results import read_metadata, read_results

    # file:// storage, started from another working directory: the run spec holds absolute paths
    work = tmp_path / "cwd"
    work.mkdir()
    proc = _cli("--storage", f"file://{tmp_path}", "--name", "e2e", "--data-root", str(demo_data), *FAST, cwd=work)
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
    loss = cfg.model.head.loss
    if math.isnan(last.loc[best, "delta_sort"]):  # Spatial Sort switched off in the best setting
        assert loss.coeff_sort == 0
    else:
        assert loss.delta_sort == pytest.approx(last.loc[best, "delta_sort"])
        assert loss.coeff_sort == pytest.approx(last.loc[best, "coeff_sort"])
    # pos_thr, searched by the demo preset (log range 1e-6 .. 0.7), goes everywhere the six go:
    assert rows["pos_thr"].notna().all() and rows["pos_thr"].between(1e-6, 0.7).all()  # the Parquet column
    assert first["pos_thr"] == 1e-6 and last["pos_thr"].nunique() >= 2  # known-good's, then sampled ones
    assert all("pos_thr" in t.params for t in study_trials if t.user_attrs.get("rspose:known_good") is None)
    assert meta["search_space"]["params"]["pos_thr"] == {"name": "pos_thr", "low": 1e-6, "high": 0.7, "log": True,
                                                         "fixed": None, "allow_off": False}
    from rspose_tune.report._table import _fmt

    header = next(line for line in out.splitlines() if line.startswith("| Backbone |"))
    demo_row = next(line for line in out.splitlines() if line.startswith("| demo "))
    column = [c.strip() for c in header.strip("|").split("|")].index("Pos. thr")  # the report column
    assert [c.strip() for c in demo_row.strip("|").split("|")][column] == _fmt(last.loc[best, "pos_thr"])
    assert loss.pos_thr == pytest.approx(last.loc[best, "pos_thr"])  # the exported config's loss
    assert (run_dir / "report" / "curves.png").stat().st_size > 1000
    assert (run_dir / "run_spec.yaml").is_file() and (run_dir / "finished.json").is_file()
    assert str(demo_data) in cfg.train_dataloader.dataset.data_root  # the run's data, not ./data/...
    # export reads the run spec: from any working directory it points at the run's data
    other = tmp_path / "other"
    other.mkdir()
    again = subprocess.run([sys.executable, "-m", "rspose_tune.export", str(tmp_path), "--run", "e2e", "--backbone",
                            "demo", "--out", str(other / "x.py")], cwd=other, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert Config.fromfile(str(other / "x.py")).train_dataloader.dataset.data_root == str(demo_data)


@pytest.mark.slow
def test_driver_killed_then_resume_finishes_interrupted_trials_from_their_checkpoints(tmp_path, demo_data,
                                                                                     monkeypatch):
    """The driver SIGKILLed mid-search, then ``--resume``: interrupted trials continue from their
    checkpoints, the Optuna history is kept. The same search logs to MLflow's file store (``--mlflow
    PATH``, given again on ``--resume``: it may change there, so it is not in the run spec): still one
    MLflow run per trial, and each run's coco/AP history has a step for every epoch the trial has a
    row of (the epochs before and after the kill in one run). One killed-and-resumed search for both
    (they were two tests, each killing and resuming its own search)."""
    import optuna
    from mlflow import MlflowClient

    from rspose_tune.results import read_results

    run_dir = tmp_path / "resume"
    store = tmp_path / "mlruns"
    # fifo: no trial is stopped early, so a trial running at the kill must continue after --resume
    args = ["--storage", str(tmp_path), "--name", "resume", "--data-root", str(demo_data), "--num-trials", "2",
            "--max-epochs", "4", "--scheduler", "fifo", "--max-concurrent", "2", "--no-dashboard", "--no-report",
            "--confirm-top", "0", "--no-baseline", "--mlflow", str(store)]
    # Killed once MLflow's file store has a coco/AP step for every row: a kill between a result's row
    # and its MLflow step (the driver's next callback) would lose that step for good.
    def mlflow_steps() -> int:
        return sum(len(f.read_text().splitlines()) for f in store.glob("*/*/metrics/coco/AP"))

    killed_at = kill_driver_after_first_row(_cli(*args, start_new_session=True), run_dir,
                                            settled=lambda rows: mlflow_steps() >= len(rows))
    before = read_results(run_dir / "trials")
    assert (before["status"] == "running").any(), before  # some trial was interrupted
    interrupted = set(before[before["status"] == "running"]["trial_id"]) - set(
        before[before["status"] != "running"]["trial_id"])
    assert interrupted, before
    history = {t.number: t.params for t in _study(run_dir).trials}
    # As a journal on an object store can be (uploaded with Ray's snapshots only), make the journal
    # older than the rows: each interrupted trial's newest intermediate value is cut from it. The
    # trial resumes from the checkpoint of that epoch (it has a row) and reports the next one; its
    # Optuna re-run must take the cut epoch from the rows.
    _cut_newest_intermediate_values(run_dir, interrupted)

    # the spec has the rest (--mlflow is this start's, not the run's)
    resumed = _cli("--resume", "--storage", str(tmp_path), "--name", "resume", "--no-dashboard", "--mlflow", str(store))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-4000:]
    rows = read_results(run_dir / "trials")
    last = rows.sort_values("epoch").groupby("trial_id").last()
    assert (last["status"] == "completed").all() and (last["epoch"] == 4).all()
    for trial_id in interrupted:
        # The trial's rows show where it restarted: rows of epochs it trained again after --resume
        # are rewritten (new timestamp). From its checkpoint, epoch 1 (at least) keeps its old row;
        # from scratch, every epoch would be new.
        mine = rows[rows["trial_id"] == trial_id].set_index("epoch").sort_index()
        new = [int(e) for e in mine.index if mine.loc[e, "timestamp"].timestamp() > killed_at]
        assert new and new == list(range(min(new), 5)), mine[["timestamp", "wall_s"]]
        assert min(new) >= 2, f"trial {trial_id} trained epoch 1 again: {mine[['timestamp', 'wall_s']]}"
        old = before[before["trial_id"] == trial_id].set_index("epoch")
        for epoch in range(1, min(new)):  # the same rows as before the kill
            assert mine.loc[epoch, "timestamp"] == old.loc[epoch, "timestamp"]
    trials = _study(run_dir).trials
    assert all(trials[n].params == p for n, p in history.items())  # history kept
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    # each interrupted trial's Optuna re-run finished COMPLETE with its intermediate values
    by_ray = {}
    for t in trials:
        by_ray.setdefault(t.user_attrs.get("rspose:ray_trial_id"), []).append(t)
    for trial_id in interrupted:
        final = max(by_ray[trial_id], key=lambda t: t.number)
        assert final.state == optuna.trial.TrialState.COMPLETE and max(final.intermediate_values) == 4
        mine = rows[rows["trial_id"] == trial_id].set_index("epoch")["metric"].sort_index()
        assert final.intermediate_values == pytest.approx(mine.to_dict()), (final.intermediate_values, mine)
    assert (run_dir / "finished.json").is_file()

    # MLflow's file store: one run per trial, its coco/AP history a step per epoch row, before and after the kill
    epochs = rows.groupby("trial_id")["epoch"].apply(sorted).to_dict()
    assert len(epochs) == 2 and all(e == [1, 2, 3, 4] for e in epochs.values()), epochs
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x reads its file store only so
    client = MlflowClient(tracking_uri=store.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    by_trial = {}
    for run in runs:
        by_trial.setdefault(run.data.tags["trial_id"], []).append(run)
    assert sorted(by_trial) == sorted(epochs) and all(len(r) == 1 for r in by_trial.values()), by_trial
    for trial_id, (run,) in by_trial.items():
        history = client.get_metric_history(run.info.run_id, "coco/AP")
        assert sorted({m.step for m in history}) == epochs[trial_id], [(m.step, m.value) for m in history]
        mine = rows[rows["trial_id"] == trial_id].set_index("epoch")
        newest = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}  # a retrained epoch: its last
        assert [newest[e] for e in epochs[trial_id]] == pytest.approx(list(mine.loc[epochs[trial_id], "metric"]))
        assert run.info.status == "FINISHED"
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow"]["tracking_uri"] == store.as_uri()


@pytest.mark.slow
def test_demo_simcc_search_with_baseline_then_export_trains(tmp_path, mmpose_ready):
    from mmengine.config import Config

    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.results import read_results

    data = generate_demo_dataset(tmp_path / "data", n_train=32, n_val=8, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "rspose_tune.search", "--backbone", "demo-simcc", "--storage", str(tmp_path / "runs"),
         "--name", "simcc", "--data-root", str(data), "--num-trials", "2", "--max-epochs", "2", "--grace-epochs", "1",
         "--reduction-factor", "2", "--max-concurrent", "2", "--confirm-top", "0", "--baseline", "--no-dashboard"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "simcc"
    rows = read_results(run_dir)
    last = rows.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    assert set(last["backbone"]) == {"demo-simcc"}
    search, base = last[last["stage"] == "search"], last[last["stage"] == "baseline"]
    assert len(search) == 2 and len(base) == 1 and (base["status"] == "completed").all()
    assert last["metric"].notna().all() and last["metric"].between(0, 1).all()
    # each trial trained what it says: RSPose SimCC head vs the stock SimCC head + KLDiscretLoss
    configs = {p.parent.name: Config.fromfile(str(p)) for p in run_dir.rglob("resolved_config.py")}
    assert len(configs) == 3, sorted(configs)
    base_cfg = next(c for name, c in configs.items() if base.index[0] in name)
    assert base_cfg.model.head.type == "SimCCHead" and base_cfg.model.head.loss.type == "KLDiscretLoss"
    for trial_id in search.index:
        cfg = next(c for name, c in configs.items() if trial_id in name)
        assert cfg.model.head.type == "RSPoseSimCCHead" and cfg.model.head.loss.type == "RSPoseLoss"
    assert "Stock-loss baseline" in out.stdout and "Δ coco/AP" in out.stdout
    # the export: a standalone config of the best setting that MMPose's Runner trains and validates
    exported = run_dir / "export" / "demo-simcc_rspose.py"
    assert f"wrote {exported}" in out.stdout
    cfg = Config.fromfile(str(exported))
    assert cfg.model.head.type == "RSPoseSimCCHead" and cfg.model.head.decoder.simcc_split_ratio == 8.0
    train_exported_simcc_config(cfg, tmp_path / "export_run", "simcc_export")  # per-axis calibration
