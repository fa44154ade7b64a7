"""Issue 4: the MMPose trainable (real mmengine Runner; real Ray Tune for the end-to-end cases)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mmengine.hooks import Hook

PARAMS = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)


def _train(preset, tmp_path, *, seed, max_epochs=1):
    from mmengine.runner import Runner

    from trainables.mmpose_trainable import TuneReportHook, prepare_trial_config

    reports = []
    cfg = prepare_trial_config(preset, PARAMS, tmp_path, seed=seed, max_epochs=max_epochs)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(TuneReportHook(preset.metric, "t0", report=lambda result, ckpt: reports.append(result), checkpoint=False))
    runner.train()
    return reports


@pytest.mark.slow
def test_same_seed_same_first_epoch_losses_and_config_saved(demo_preset, tmp_path):
    from mmengine.config import Config

    a = _train(demo_preset, tmp_path / "a", seed=7)
    b = _train(demo_preset, tmp_path / "b", seed=7)
    c = _train(demo_preset, tmp_path / "c", seed=8)
    keys = ("loss", "loss_rank", "loss_sort", "loss_inst")
    assert [a[0][k] for k in keys] == [b[0][k] for k in keys]
    assert a[0]["loss"] != c[0]["loss"]
    report = a[0]
    assert report["epoch"] == 1 and report["metric_name"] == "coco/AP" and report["world_size"] == 1
    assert report["metric"] == report["coco/AP"] and report["ar"] == report["coco/AR"]
    assert all(math.isfinite(report[k]) for k in keys)
    assert math.isnan(report["spearman"]) or -1 <= report["spearman"] <= 1  # NaN: all confidences equal
    saved = Config.fromfile(str(tmp_path / "a" / "resolved_config.py"))
    assert saved.model.head.type == "RSPoseHeatmapHead"
    assert saved.model.head.loss.delta_sort == 1.5 and saved.model.head.coeff_inst == 0.25
    assert saved.randomness.seed == 7
    assert json.loads((tmp_path / "a" / "trial.json").read_text())["seed"] == 7


def test_report_hook_rejects_non_finite_loss():
    from trainables.mmpose_trainable import LossDivergedError, TuneReportHook

    class FakeRunner:
        epoch, iter = 0, 4

    hook = TuneReportHook("coco/AP", "t0", report=lambda *a, **k: None)
    hook.after_train_iter(FakeRunner(), 0, outputs={"loss": 1.0, "loss_rank": 0.5})
    with pytest.raises(LossDivergedError, match=r"loss_rank became nan at epoch 1, iteration 5"):
        hook.after_train_iter(FakeRunner(), 1, outputs={"loss": 1.0, "loss_rank": float("nan")})


class RecordEpochs(Hook):
    """Appends each started epoch (0-based) to a file; fails once at ``fail_at`` (fault injection)."""

    def __init__(self, log: str, fail_at: int | None = None):
        self.log, self.fail_at = log, fail_at

    def before_train_epoch(self, runner) -> None:
        with open(self.log, "a") as fh:
            fh.write(f"{runner.epoch}\n")

    def after_train_epoch(self, runner) -> None:
        marker = Path(self.log + ".failed")
        if self.fail_at is not None and runner.epoch == self.fail_at and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("injected failure mid-trial")


@pytest.mark.slow
def test_failed_trial_resumes_from_checkpoint_at_next_epoch(demo_preset, tmp_path, local_ray):
    from ray import tune

    from trainables.mmpose_trainable import train_rspose

    log = str(tmp_path / "epochs.log")
    trainable = tune.with_parameters(
        train_rspose, preset=demo_preset, max_epochs=3, hooks=[RecordEpochs(log, fail_at=1)]
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=PARAMS,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"), name="resume", verbose=0,
            failure_config=tune.FailureConfig(max_failures=1),
            sync_config=tune.SyncConfig(sync_artifacts=True),  # as the search sets it: trial files to storage
        ),
    )
    result = tuner.fit()[0]
    assert result.error is None
    # epoch 0 trained and checkpointed; epoch 1 trained then failed; the retry resumed at epoch 1.
    assert Path(log).read_text().split() == ["0", "1", "1", "2"]
    epochs = list(result.metrics_dataframe["epoch"])  # Ray keeps the rows since the last restore
    assert epochs[-2:] == [2, 3] and len(set(epochs)) == len(epochs)
    assert result.checkpoint is not None
    trial_dir = Path(result.path)
    assert (trial_dir / "resolved_config.py").is_file()


def test_checkpoint_from_another_trial_is_refused(tmp_path):
    from trainables._checkpoint import CHECKPOINT_FILE, CheckpointMismatchError, verify_checkpoint_dir, write_manifest

    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a real checkpoint")
    write_manifest(tmp_path, trial_id="abc", epoch=1)
    assert verify_checkpoint_dir(tmp_path, trial_id="abc")["epoch"] == 1
    with pytest.raises(CheckpointMismatchError, match="written by trial 'abc', not 'xyz'"):
        verify_checkpoint_dir(tmp_path, trial_id="xyz")
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"tampered")
    with pytest.raises(CheckpointMismatchError, match="changed since it was written"):
        verify_checkpoint_dir(tmp_path, trial_id="abc")


def test_the_newest_complete_checkpoint_in_the_trial_folder_wins_over_an_older_one_from_tune(tmp_path):
    """A driver killed between a trial's checkpoint and its next experiment-state snapshot is
    restored with an older checkpoint (or none): the trial's storage folder has the newest."""
    import pyarrow.fs as pafs
    from ray import tune

    from trainables._checkpoint import (CHECKPOINT_FILE, CheckpointMismatchError, newest_checkpoint,
                                        write_manifest)

    trial = tmp_path / "trial_t1"

    def put(name, trial_id, epoch, data):
        folder = trial / name
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_FILE).write_bytes(data)
        write_manifest(folder, trial_id=trial_id, epoch=epoch)
        return folder

    old = put("checkpoint_000000", "t1", 1, b"epoch 1")
    put("checkpoint_000001", "t1", 2, b"epoch 2")
    put("checkpoint_000002", "t1", 3, b"epoch 3")
    (trial / "checkpoint_000002" / CHECKPOINT_FILE).write_bytes(b"epo")  # its upload cut short
    put("checkpoint_000003", "other", 9, b"another trial's")
    fs = pafs.LocalFileSystem()

    def pick(given):
        dest = tmp_path / f"dest{len(list(tmp_path.glob('dest*')))}"
        checkpoint, local, epoch = newest_checkpoint(given, fs, str(trial), trial_id="t1", dest_dir=dest)
        return checkpoint, (local.read_bytes() if local else None), epoch

    checkpoint, data, epoch = pick(tune.Checkpoint.from_directory(str(old)))
    assert (epoch, data) == (2, b"epoch 2") and checkpoint.path.endswith("checkpoint_000001")
    assert pick(None)[1:] == (b"epoch 2", 2)  # Tune passed none at all
    # Epoch 2's result never reached the driver (no row): epoch 1's checkpoint, and epoch 2 again.
    checkpoint, local, epoch = newest_checkpoint(None, fs, str(trial), trial_id="t1", dest_dir=tmp_path / "r",
                                                 recorded=lambda e: e <= 1)  # fmt: skip
    assert (epoch, local.read_bytes()) == (1, b"epoch 1")
    (trial / "checkpoint_000001" / CHECKPOINT_FILE).write_bytes(b"tampered")
    with pytest.raises(CheckpointMismatchError, match="changed since"):  # Tune's own must verify
        pick(tune.Checkpoint.from_directory(str(trial / "checkpoint_000001")))
    assert pick(None)[1:] == (b"epoch 1", 1)
    assert newest_checkpoint(None, fs, str(tmp_path / "none"), trial_id="t1", dest_dir=tmp_path / "d") == (
        None, None, None)  # fmt: skip


def test_trial_checkpoint_loads_with_weights_only(tmp_path):
    """The saved format needs only the numpy allowlist, never weights_only=False."""
    import numpy as np
    import torch

    from trainables._checkpoint import safe_checkpoint_loading, strip_unsafe_state

    from mmengine.logging import HistoryBuffer

    ckpt = {
        "meta": {"epoch": 1, "dataset_meta": {"sigmas": np.array([0.026, 0.025], dtype=np.float32)}},
        "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"iter": np.int64(3)}, "resumed_keys": {}},
    }
    path = tmp_path / "c.pth"
    torch.save(ckpt, path)
    with pytest.raises(Exception, match="getattr|HistoryBuffer"):
        with safe_checkpoint_loading():
            torch.load(path, weights_only=True)
    strip_unsafe_state(ckpt)
    torch.save(ckpt, path)
    with safe_checkpoint_loading():
        loaded = torch.load(path, weights_only=True)
    assert loaded["meta"]["dataset_meta"]["sigmas"].tolist() == pytest.approx([0.026, 0.025])
    assert loaded["message_hub"]["log_scalars"] == {}


@pytest.mark.slow
def test_two_rank_data_parallel_trial_on_cpu_gloo_with_dataloader_workers(demo_preset, tmp_path, local_ray):
    """Two placement-group bundles = two gloo ranks (the trial + a Ray actor), each with
    DataLoader worker processes (a daemonic rank process could not start them)."""
    from ray import tune

    from trainables.mmpose_trainable import train_rspose, trial_resources

    trainable = tune.with_parameters(train_rspose, preset=demo_preset, max_epochs=2, num_workers=1)
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources(workers=2, cpus=2, gpus=0)),
        param_space=PARAMS,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="ddp", verbose=0),
    )
    result = tuner.fit()[0]
    assert result.error is None, result.error
    frame = result.metrics_dataframe
    assert list(frame["epoch"]) == [1, 2]
    assert frame["loss"].notna().all() and result.checkpoint is not None
    assert list(frame["world_size"]) == [2, 2]
    assert all(len(nodes.split(",")) == 2 for nodes in frame["nodes"])


def _fake_trial_context(monkeypatch, tmp_path, checkpoint):
    """tune.get_context()/get_checkpoint() of a 1-rank trial, and a train_rank that only records."""
    from types import SimpleNamespace

    import pyarrow.fs as pafs
    from ray import tune

    import trainables._rank as rank_module
    import trainables.mmpose_trainable as mt

    storage = SimpleNamespace(trial_working_directory=str(tmp_path / "work"), trial_fs_path=str(tmp_path / "store"),
                              storage_filesystem=pafs.LocalFileSystem())  # fmt: skip
    context = SimpleNamespace(get_trial_id=lambda: "t1", get_storage=lambda: storage,
                              get_trial_resources=lambda: SimpleNamespace(bundles=[{"CPU": 1}]))  # fmt: skip
    seen = {}
    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(mt, "_ensure_generated_data", lambda preset: None)
    monkeypatch.setattr(mt, "prepare_trial_config", lambda *a, meta, **k: seen.setdefault("meta", meta))
    monkeypatch.setattr(rank_module, "train_rank",
                        lambda cfg, *, resume_from, **k: seen.setdefault("resume", Path(resume_from).read_bytes()))
    return seen


def test_resume_downloads_the_checkpoint_once(tmp_path, monkeypatch):
    """Before: the resumed epoch and the checkpoint file were two downloads of a remote checkpoint."""
    from types import SimpleNamespace

    from ray import tune

    from trainables._checkpoint import CHECKPOINT_FILE, write_manifest
    from trainables.mmpose_trainable import train_rspose

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / CHECKPOINT_FILE).write_bytes(b"weights")
    write_manifest(ckpt, trial_id="t1", epoch=4)

    class CountingCheckpoint(tune.Checkpoint):
        downloads = 0

        def as_directory(self):
            CountingCheckpoint.downloads += 1
            return super().as_directory()

    seen = _fake_trial_context(monkeypatch, tmp_path, CountingCheckpoint.from_directory(str(ckpt)))
    train_rspose(dict(PARAMS), preset=SimpleNamespace(metric="coco/AP"))
    assert CountingCheckpoint.downloads == 1
    assert seen["meta"]["resumed_from_epoch"] == 4 and seen["resume"] == b"weights"


@pytest.mark.slow
def test_a_diverged_trial_is_not_trained_again_by_the_failure_policy(demo_preset, tmp_path, local_ray):
    """The search's policy (FailureConfig(max_failures=2)): before, both retries trained again."""
    from ray import tune

    from trainables.mmpose_trainable import DIVERGED_FILE, train_rspose

    log = str(tmp_path / "epochs.log")
    trainable = tune.with_parameters(train_rspose, preset=demo_preset, max_epochs=3,
                                     hooks=[RecordEpochs(log), NanAtEpoch(1)])  # fmt: skip
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=PARAMS,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="nan", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),  # fmt: skip
    )
    result = tuner.fit()[0]
    assert result.error is not None and "non-finite" in str(result.error)
    assert "a diverged trial is not retried" in str(result.error)  # the retries refused at once
    assert Path(log).read_text().split() == ["0", "1"]  # trained once: epoch 0, diverged in epoch 1
    assert (Path(result.path) / DIVERGED_FILE).is_file()


class NanAtEpoch(Hook):
    """Makes the loss NaN from epoch ``epoch`` (0-based) on: weights poisoned before each iteration."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.epoch >= self.epoch:
            for param in runner.model.parameters():
                param.data.fill_(float("nan"))
