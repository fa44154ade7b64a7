"""--mlflow and --wandb end to end: a real 2-trial demo search logging to an MLflow tracking server
started here on 127.0.0.1 and to W&B in offline mode, Ray's TensorBoard event files, and the
export's vis backends (rspose_tune/tracking.py, docs/tracking.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.search.test_e2e import _cli, demo_data  # noqa: F401 (demo_data: a fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free 127.0.0.1 port with a SQLite backend store in tmp; stopped by its pid."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
                               "--default-artifact-root", str(root / "artifacts"), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield uri
    finally:  # the server and its uvicorn worker: the process group it leads (its own session)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def read_wandb_records(path: Path) -> list:
    """The records of a W&B ``.wandb`` file, parsed with wandb's own ``Record`` protobuf.

    wandb 0.31 ships no Python reader for the file; it is a LevelDB log (a 7-byte header
    ``:W&B`` + magic 0xBEE1 + version, then 32 KiB blocks of chunks: crc32, length, type 1-4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    records, pos, pending, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_tfevents(path: Path) -> list:
    """The events of a TensorBoard event file (TFRecord framing), parsed with tensorboardX's ``Event`` proto."""
    from tensorboardX.proto import event_pb2

    data, pos, events = path.read_bytes(), 0, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[pos + 12:pos + 12 + length])
        events.append(event)
        pos += 12 + length + 4
    return events


@pytest.mark.slow
def test_search_logs_to_mlflow_server_and_wandb_offline_then_export_gets_vis_backends(tmp_path, demo_data, mlflow_server):
    from mlflow import MlflowClient
    from mmengine.config import Config

    from rspose_tune.results import read_results

    env_before = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_API_KEY")}
    os.environ["WANDB_MODE"] = "offline"  # no network, no API key
    os.environ.pop("WANDB_API_KEY", None)
    try:
        proc = _cli("--storage", str(tmp_path), "--name", "trk", "--data-root", str(demo_data), "--num-trials", "2",
                    "--max-epochs", "2", "--grace-epochs", "1", "--reduction-factor", "2", "--max-concurrent", "2",
                    "--no-dashboard", "--mlflow", mlflow_server, "--wandb", "rspose-test")
        out, _ = proc.communicate(timeout=900)
        (tmp_path / "search.out").write_text(out)  # the whole output, for a failure's post-mortem
    finally:
        for k, v in env_before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert proc.returncode == 0, out[-5000:]
    run_dir = tmp_path / "trk"
    rows = read_results(run_dir / "trials")
    epochs = rows.groupby("trial_id")["epoch"].apply(sorted).to_dict()  # what each trial trained
    assert len(epochs) == 2

    # MLflow: one experiment named after the run, one run per trial, params, tags and per-epoch metrics
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("trk")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert set(by_trial) == set(epochs)
    for trial_id, run in by_trial.items():
        tags, params = run.data.tags, run.data.params
        assert tags["stage"] == "search" and tags["seed"] == "0" and tags["backbone"] == "demo"
        assert {"delta_rank", "coeff_rank", "delta_sort", "coeff_sort", "delta_inst", "coeff_inst",
                "pos_thr", "stage", "seed", "backbone"} <= set(params)
        mine = rows[rows["trial_id"] == trial_id].set_index("epoch").sort_index()
        assert float(params["pos_thr"]) == pytest.approx(mine["pos_thr"].iloc[0])
        history = client.get_metric_history(run.info.run_id, "coco/AP")
        assert [m.step for m in history] == epochs[trial_id]  # step = epoch, one per validation
        assert [m.value for m in history] == pytest.approx(list(mine["metric"]))
        for key in ("coco/AR", "spearman", "loss", "epoch"):
            assert len(client.get_metric_history(run.info.run_id, key)) == len(epochs[trial_id]), key
        assert run.info.status == "FINISHED"

    # W&B offline: one offline run per trial under <run>/wandb/, holding every epoch's metrics
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, sorted((run_dir / "wandb").iterdir())
    seen = {}
    for folder in offline:
        records = read_wandb_records(next(folder.glob("run-*.wandb")))
        run_record = next(r.run for r in records if r.HasField("run"))
        assert run_record.project == "rspose-test" and run_record.run_group == "trk"
        history = []
        for r in records:
            if r.HasField("history"):
                items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
                history.append(items)
        seen[run_record.run_id] = ([h["_step"] for h in history], [h["coco/AP"] for h in history])
    assert set(seen) == set(epochs)
    for trial_id, (steps, aps) in seen.items():
        mine = rows[rows["trial_id"] == trial_id].set_index("epoch").sort_index()
        assert steps == epochs[trial_id] and aps == pytest.approx(list(mine["metric"]))

    # TensorBoard: Ray's TBXLoggerCallback event files in each trial folder, with the metric tags
    for trial_id in epochs:
        files = list((run_dir / f"trial_{trial_id}").glob("events.out.tfevents.*"))
        assert files, sorted(p.name for p in (run_dir / f"trial_{trial_id}").iterdir())
        values = [(e.step, v.tag) for f in files for e in read_tfevents(f) for v in e.summary.value]
        assert "ray/tune/coco/AP" in {tag for _, tag in values}, sorted({tag for _, tag in values})[:40]

    # The export (run by the search at its end) has both vis backends, the base's LocalVisBackend kept
    record = json.loads((run_dir / "tracking.json").read_text())
    assert record["mlflow"] == {"tracking_uri": mlflow_server, "experiment": "trk"}
    backends = Config.fromfile(str(run_dir / "export" / "demo_rspose.py")).visualizer.vis_backends
    types = [b["type"] for b in backends]
    assert types[0] == "LocalVisBackend" and "RSPoseMLflowVisBackend" in types and "WandbVisBackend" in types
    ml = next(b for b in backends if b["type"] == "RSPoseMLflowVisBackend")
    assert ml["tracking_uri"] == mlflow_server and ml["exp_name"] == "trk"
    wb = next(b for b in backends if b["type"] == "WandbVisBackend")
    assert wb["init_kwargs"]["project"] == "rspose-test"
    plain = subprocess.run([sys.executable, "-m", "rspose_tune.export", str(tmp_path), "--run", "trk",
                            "--out", str(tmp_path / "plain.py"), "--no-tracking-export"],
                           capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert [b["type"] for b in Config.fromfile(str(tmp_path / "plain.py")).visualizer.vis_backends] == ["LocalVisBackend"]


# --mlflow PATH (MLflow's file store), the driver killed mid-search, then --resume: in the
# kill-and-resume test of tests/search/test_e2e.py (one killed-and-resumed search for both).
