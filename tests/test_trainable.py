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
