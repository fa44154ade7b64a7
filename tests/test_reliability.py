"""Issue 5 reliability, through real Ray Tune + the real trainable + the Parquet callback."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from mmengine.hooks import Hook

pytestmark = pytest.mark.slow

PARAMS = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)


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
