"""rspose_tune.tracking: the --mlflow/--wandb checks before Ray starts, tracking.json and the export's
vis backends, and the MLflow callback continuing a trial's run after a restore (real MLflow file store)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rspose_tune.tracking import (
    Tracking,
    TrackingError,
    check_tracking,
    normalize_mlflow_uri,
    read_tracking,
    vis_backends,
    write_tracking,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_mlflow_uris_are_normalized(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_mlflow_uri("mlruns") == (tmp_path / "mlruns").as_uri()
    assert normalize_mlflow_uri(f"file://{tmp_path}/x") == (tmp_path / "x").as_uri()
    assert normalize_mlflow_uri("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"


@pytest.mark.parametrize("value, words", [
    ("", "needs a tracking URI"), ("ftp://host/x", "scheme 'ftp'"), ("http://:5000", "needs a host"),
    ("http://h:port", "not a number"), ("file://otherhost/x", "must be local"), ("s3://bucket/x", "scheme 's3'"),
])
def test_malformed_mlflow_values_name_the_flag(value, words):
    with pytest.raises(TrackingError, match="--mlflow") as info:
        check_tracking(value, None)
    assert words in str(info.value)


def test_unreachable_server_is_refused_quickly():
    import time

    start = time.monotonic()
    with pytest.raises(TrackingError, match="no MLflow tracking server answered"):
        check_tracking(f"http://127.0.0.1:{_closed_port()}", None, timeout_s=2)
    assert time.monotonic() - start < 10


def test_local_store_must_be_creatable(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(TrackingError, match="is a file"):
        check_tracking(str(tmp_path / "afile"), None)
    assert check_tracking(str(tmp_path / "new" / "mlruns"), None).mlflow == (tmp_path / "new" / "mlruns").as_uri()
    assert not (tmp_path / "new").exists()  # checked, not created


def test_wandb_project_and_key(monkeypatch):
    with pytest.raises(TrackingError, match="--wandb 'a/b'"):
        check_tracking(None, "a/b")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert check_tracking(None, "proj") == Tracking(wandb="proj")  # offline: no key needed
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert check_tracking(None, "proj").wandb == "proj"


def test_tracking_json_round_trip_and_vis_backends(tmp_path):
    assert read_tracking(str(tmp_path)) is None and vis_backends(None, run_name="r") == []
    write_tracking(str(tmp_path), Tracking(mlflow="http://h:1", wandb="p"), "run1")
    record = read_tracking(str(tmp_path))
    assert record["mlflow"] == {"tracking_uri": "http://h:1", "experiment": "run1"}
    assert vis_backends(record, run_name="demo_rspose") == [
        dict(type="RSPoseMLflowVisBackend", tracking_uri="http://h:1", exp_name="run1", run_name="demo_rspose"),
        dict(type="WandbVisBackend", init_kwargs=dict(project="p", group="run1", name="demo_rspose")),
    ]
    from mmengine.registry import VISBACKENDS

    import rspose_tune.mmpose_adapter.vis_backends  # noqa: F401  (what the export's custom_imports register)

    for backend in vis_backends(record, run_name="demo_rspose"):  # names the registry knows
        assert VISBACKENDS.get(backend["type"]) is not None, backend["type"]
    write_tracking(str(tmp_path), Tracking(), "run1")  # a --resume without the flags records that
    assert vis_backends(read_tracking(str(tmp_path)), run_name="x") == []


def test_search_cli_unreachable_mlflow_is_one_error_line_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rspose_tune.search", "--storage", str(tmp_path / "s"), "--name", "r",
                          "--mlflow", f"http://127.0.0.1:{_closed_port()}", "--no-dashboard"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --mlflow 'http://127.0.0.1:"), out.stderr
    assert "rspose_tune search:" not in out.stdout  # refused before the search started
    assert not (tmp_path / "s").exists()  # no storage folder, no run folder


def test_search_cli_malformed_mlflow_is_one_error_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rspose_tune.search", "--storage", str(tmp_path / "s"),
                          "--mlflow", "ftp://nowhere", "--dry-run"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: --mlflow"), out.stderr


class _Trial:
    """What Ray's MLflowLoggerCallback reads of a trial (a restored experiment has new Trial objects)."""

    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config

    def __str__(self):
        return f"trial_{self.trial_id}"


def test_mlflow_callback_continues_a_trials_run_after_a_restore(tmp_path):
    """A restored experiment (--resume) has new Trial objects and a callback unpickled without state:
    the trial's MLflow run is found by its trial_id tag and continued (real MLflow, file store)."""
    from mlflow import MlflowClient
    from ray import cloudpickle as pickle  # what Ray writes tuner.pkl with

    from rspose_tune.tracking import tracking_callbacks

    uri = (tmp_path / "mlruns").as_uri()
    config = {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": None,
              "coeff_inst": None, "pos_thr": 1e-6}
    (first,) = tracking_callbacks(Tracking(mlflow=uri), run="r", run_dir=str(tmp_path), backbone="demo", seed=0)
    pickled = pickle.dumps(first)  # as in tuner.pkl, before the experiment starts
    first.setup()
    trial = _Trial("abc_00000", config)
    first.log_trial_start(trial)
    for epoch in (1, 2):
        first.log_trial_result(epoch, trial, {"epoch": epoch, "coco/AP": 0.1 * epoch, "training_iteration": epoch})
    # the driver dies here; --resume restores the callback from tuner.pkl, with a new Trial object
    second = pickle.loads(pickled)
    second.setup()
    again = _Trial("abc_00000", config)
    second.log_trial_start(again)
    second.log_trial_result(3, again, {"epoch": 3, "coco/AP": 0.3, "training_iteration": 1})
    second.log_trial_end(again)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("r").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "coco/AP")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]  # step = epoch
    assert runs[0].data.params["coeff_inst"] == "None" and runs[0].data.tags["stage"] == "search"
    # another trial of the same experiment gets its own run
    other = _Trial("abc_00001", {**config, "stage": "confirm", "seed": 2})
    second.log_trial_start(other)
    second.log_trial_end(other)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("r").experiment_id])}
    assert set(runs) == {"abc_00000", "abc_00001"}
    assert runs["abc_00001"].data.tags["stage"] == "confirm" and runs["abc_00001"].data.tags["seed"] == "2"


def test_restored_tuner_gets_this_starts_tracking_callbacks(tmp_path):
    """--resume: Tuner.restore keeps the first start's callbacks; use_tracking_callbacks swaps the
    tracking ones for this start's and keeps the others."""
    from rspose_tune.tracking import tracking_callbacks, use_tracking_callbacks

    old = tracking_callbacks(Tracking(mlflow=(tmp_path / "a").as_uri()), run="r", run_dir=str(tmp_path),
                             backbone="demo", seed=0)
    keep = object()
    run_config = SimpleNamespace(callbacks=[keep, *old])
    tuner = SimpleNamespace(_local_tuner=SimpleNamespace(_run_config=run_config))
    new = tracking_callbacks(Tracking(wandb="p"), run="r", run_dir=str(tmp_path), backbone="demo", seed=0)
    use_tracking_callbacks(tuner, [keep, *new])
    assert run_config.callbacks == [keep, *new]
    use_tracking_callbacks(tuner, [])
    assert run_config.callbacks == [keep]
    json.dumps(run_config.callbacks[:0])


def test_mlflow_callback_logs_mmposes_metric_names_that_mlflow_refuses(tmp_path):
    """MMPose's COCO metric reports ``coco/AP (M)``, a name MLflow refuses (one such error ended the
    whole search): it is logged as ``coco/AP_M``, the rest unchanged (real MLflow, file store)."""
    from mlflow import MlflowClient

    from rspose_tune._layout import mlflow_metric_name
    from rspose_tune.tracking import tracking_callbacks

    assert [mlflow_metric_name(k) for k in ("coco/AP (M)", "coco/AR (L)", "coco/AP .5", "a[b]", "loss_rank")] == [
        "coco/AP_M", "coco/AR_L", "coco/AP .5", "a_b_", "loss_rank"]
    uri = (tmp_path / "mlruns").as_uri()
    (callback,) = tracking_callbacks(Tracking(mlflow=uri), run="r", run_dir=str(tmp_path), backbone="demo", seed=0)
    callback.setup()
    trial = _Trial("abc_00000", {"delta_rank": 0.4, "coeff_rank": 1.0})
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, {"epoch": 1, "coco/AP": 0.5, "coco/AP (M)": 0.25, "coco/AR (L)": 0.75,
                                         "node": "n1", "config": {"delta_rank": 0.4}})
    callback.log_trial_end(trial)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("r").experiment_id])
    assert run.data.metrics["coco/AP_M"] == 0.25 and run.data.metrics["coco/AR_L"] == 0.75
    assert run.data.metrics["coco/AP"] == 0.5 and run.info.status == "FINISHED"


_ACTOR_SCRIPT = r"""
import glob, json, os, queue, sys
from ray.air.integrations.wandb import _QueueItem, _WandbLoggingActor
from rspose_tune._tracking_callbacks import _EpochStepActor

cls = {"ray": _WandbLoggingActor, "ours": _EpochStepActor}[sys.argv[1]]
logdir = sys.argv[2]
q = queue.Queue()
for epoch in (1, 2):
    q.put((_QueueItem.RESULT, {"training_iteration": epoch, "epoch": epoch, "coco/AP": 0.1 * epoch}))
q.put((_QueueItem.END, None))
cls(logdir=logdir, queue=q, exclude=[], to_config=[], project="p", id="t1", dir=logdir).run()
def children_named(word):  # this process's children running `word` (Linux /proc; no psutil here)
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            ppid = int(open(stat).read().rsplit(")", 1)[1].split()[1])
            cmd = open(stat[:-4] + "cmdline", "rb").read().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we looked
        if ppid == os.getpid() and word in cmd:
            found.append(stat)
    return found
alive = children_named("wandb")
print(json.dumps({"core_alive": bool(alive)}))
os._exit(0)  # what ray.kill does to the actor: no atexit hook runs
"""


@pytest.mark.parametrize("actor, core_alive", [("ray", True), ("ours", False)])
def test_wandb_actor_returns_only_after_wandb_core_wrote_and_exited(tmp_path, actor, core_alive):
    """Ray kills a trial's W&B logging actor as soon as its ``run()`` returns, and ``wandb.finish()``
    returns before wandb-core has written the run: Ray's actor leaves the core still running (so a kill
    can lose the records: a header-only ``.wandb`` file in CI); ours returns after the core exited, and
    the file holds the run and both epochs."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, "-c", _ACTOR_SCRIPT, actor, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"core_alive": core_alive}
    if actor == "ours":
        from tests.search.test_tracking_e2e import read_wandb_records

        (path,) = (tmp_path / "wandb").glob("offline-run-*/run-t1.wandb")
        records = read_wandb_records(path)
        assert any(r.HasField("run") for r in records)
        assert sum(r.HasField("history") for r in records) == 2


def test_local_store_under_a_file_or_a_locked_folder_is_refused(tmp_path):
    import os

    (tmp_path / "afile").write_text("")
    with pytest.raises(TrackingError, match=rf"cannot use {tmp_path}/afile/mlruns as MLflow's file store "
                                            rf"\({tmp_path}/afile is a file\)"):
        check_tracking(str(tmp_path / "afile" / "mlruns"), None)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: every folder is writable")
        with pytest.raises(TrackingError, match=rf"\({locked} is not writable\)"):
            check_tracking(str(locked / "mlruns"), None)
    finally:
        locked.chmod(0o700)
