"""trainables.mmpose_trainable: the MMPose trainable (real mmengine Runner; real Ray Tune for the
end-to-end cases), and its reliability through real Ray Tune + the Parquet callback (a killed worker
retried from its checkpoint, a NaN-loss trial ending as an error while the search goes on)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from mmengine.hooks import Hook

PARAMS = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)


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


def _fake_trial_context(monkeypatch, tmp_path, checkpoint):
    """tune.get_context()/get_checkpoint() of a 1-rank trial, and a train_rank that only records."""
    from types import SimpleNamespace

    import pyarrow.fs as pafs
    from ray import tune

    import rspose_tune.training as training
    import trainables.mmpose_trainable as mt

    storage = SimpleNamespace(trial_working_directory=str(tmp_path / "work"), trial_fs_path=str(tmp_path / "store"),
                              storage_filesystem=pafs.LocalFileSystem())
    context = SimpleNamespace(get_trial_id=lambda: "t1", get_storage=lambda: storage,
                              get_trial_resources=lambda: SimpleNamespace(bundles=[{"CPU": 1}]))
    seen = {}
    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(mt, "_ensure_generated_data", lambda preset: None)
    monkeypatch.setattr(mt, "prepare_trial_config", lambda *a, meta, **k: seen.setdefault("meta", meta))
    monkeypatch.setattr(training, "train_rank",
                        lambda cfg, *, resume_from, **k: seen.setdefault("resume", Path(resume_from).read_bytes()))
    return seen


def test_resume_downloads_the_checkpoint_once(tmp_path, monkeypatch):
    """Before: the resumed epoch and the checkpoint file were two downloads of a remote checkpoint."""
    from types import SimpleNamespace

    from ray import tune

    from rspose_tune.training import CHECKPOINT_FILE, write_manifest
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
                                     hooks=[RecordEpochs(log), NanAtEpoch(1)])
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=PARAMS,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="nan", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
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


# --------------------------------------------------------------------------------------------
# Reliability: real Ray Tune + the real trainable + the Parquet callback
# --------------------------------------------------------------------------------------------


class KillWorkerOnce(Hook):
    """SIGKILLs the trial's own process in the middle of epoch ``epoch`` (first attempt only)."""

    def __init__(self, marker: str, epoch: int):
        self.marker, self.epoch = marker, epoch

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.epoch == self.epoch and batch_idx == 1 and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class RecordAttempts(Hook):
    """Appends one JSON line per training process to ``path``: its pid, the epoch its Runner
    started from (after loading a checkpoint: the checkpoint's epoch) and each epoch it trained."""

    def __init__(self, path: str):
        self.path = path

    def _write(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), **record}) + "\n")

    def before_train(self, runner) -> None:  # after Runner.load_or_resume
        self._write(start_epoch=int(runner.epoch))

    def before_train_epoch(self, runner) -> None:
        self._write(epoch=int(runner.epoch) + 1)


def attempts(path: Path) -> list[dict]:
    """Per process, in order: {"start_epoch": N, "epochs": [...]} from a RecordAttempts file."""
    out: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        entry = out.setdefault(record["pid"], {"start_epoch": None, "epochs": []})
        if "start_epoch" in record:
            entry["start_epoch"] = record["start_epoch"]
        else:
            entry["epochs"].append(record["epoch"])
    return list(out.values())


class PoisonWeights(Hook):
    """Makes the model's weights NaN at epoch 2 for trials whose coeff_sort equals ``coeff_sort``."""

    def __init__(self, coeff_sort: float):
        self.coeff_sort = coeff_sort

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.epoch == 1 and runner.cfg["rspose_tune"]["params"]["coeff_sort"] == self.coeff_sort:
            for param in runner.model.parameters():
                param.data.fill_(float("nan"))


def _tune(preset, tmp_path, name, hooks, param_space, max_failures):
    from ray import tune

    from rspose_tune.results import read_results
    from rspose_tune.results_callback import ParquetResultsCallback
    from trainables.mmpose_trainable import train_rspose

    trainable = tune.with_parameters(train_rspose, preset=preset, max_epochs=3, hooks=hooks)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name=name, verbose=0,
            callbacks=[ParquetResultsCallback(backbone="demo", max_epochs=3, run=name)],
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    grid = tuner.fit()
    return grid, read_results(tmp_path / name / "trials")


@pytest.mark.slow
def test_killed_worker_is_retried_from_checkpoint_without_gaps_or_duplicates(demo_preset, tmp_path, local_ray):
    marker = str(tmp_path / "killed")
    record = tmp_path / "attempts.jsonl"
    hooks = [RecordAttempts(str(record)), KillWorkerOnce(marker, epoch=1)]  # killed in epoch 2
    grid, rows = _tune(demo_preset, tmp_path, "kill", hooks, PARAMS, max_failures=2)
    assert Path(marker).exists(), "the worker was never killed"
    assert grid[0].error is None
    first, retry = attempts(record)
    assert first == {"start_epoch": 0, "epochs": [1, 2]}  # SIGKILLed during epoch 2
    # The retry loaded epoch 1's checkpoint and trained only the epochs after it.
    assert retry == {"start_epoch": 1, "epochs": [2, 3]}
    assert sorted(rows["epoch"]) == [1, 2, 3]  # no gap, no duplicate (trial_id, epoch)
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    assert list(rows.sort_values("epoch")["status"]) == ["running", "running", "completed"]


@pytest.mark.slow
def test_nan_loss_trial_ends_as_error_and_search_goes_on(demo_preset, tmp_path, local_ray):
    from ray import tune

    space = {**PARAMS, "coeff_sort": tune.grid_search([0.5, 0.123])}
    grid, rows = _tune(demo_preset, tmp_path, "nan", [PoisonWeights(0.123)], space, max_failures=0)
    by_coeff = {round(c, 3): g for c, g in rows.groupby("coeff_sort")}
    bad, good = by_coeff[0.123], by_coeff[0.5]
    assert list(good.sort_values("epoch")["status"])[-1] == "completed"
    last_bad = bad.sort_values("epoch").iloc[-1]
    assert last_bad["status"] == "error"
    assert "nan" in last_bad["error"].lower()
