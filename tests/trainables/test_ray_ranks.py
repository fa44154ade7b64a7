"""trainables._ray_ranks: multi-rank trials on Ray's machinery (placement-group bundles, rank actors, gloo on CPU).

Fast: ranks on one node see each other's GPUs. Slow, through real Ray, real mmengine and the demo:
ASHA stopping a 2-rank trial frees everything; a killed rank fails the trial over from its
checkpoint; a divergence on another rank is not retried. (How resources split into ranks:
tests/test_resources.py; a 2-rank trial with DataLoader worker processes, through the CLI:
tests/search/test_distributed.py.)"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from mmengine.hooks import Hook

PARAMS = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)


def test_ranks_on_one_node_see_each_others_gpus():
    from trainables._ray_ranks import share_node_gpus

    placements = [
        {"node": "a", "gpus": ["3"]}, {"node": "a", "gpus": ["10"]}, {"node": "b", "gpus": ["0"]},
        {"node": "a", "gpus": ["2"]},
    ]
    assert share_node_gpus(placements) == [("2,3,10", 1), ("2,3,10", 2), ("0", 0), ("2,3,10", 0)]
    assert share_node_gpus([{"node": "a", "gpus": []}, {"node": "a", "gpus": []}]) == [("", 0), ("", 0)]


# ---------------------------------------------------------------------------------------------
# Through real Ray
# ---------------------------------------------------------------------------------------------
class FakeMetricForBadSetting(Hook):
    """Gives the setting with ``coeff_sort == bad`` a metric below any AP (demo AP after one
    epoch may be 0 for every setting, and ASHA keeps ties)."""

    priority = "NORMAL"  # before TuneReportHook (LOW) reads the metrics

    def __init__(self, bad: float):
        self.bad = bad

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics is not None and runner.cfg["rspose_tune"]["params"]["coeff_sort"] == self.bad:
            metrics["coco/AP"] = -1.0


class KillRankOnce(Hook):
    """SIGKILLs rank ``rank``'s process in the middle of epoch index ``epoch`` (first attempt only)."""

    def __init__(self, marker: str, rank: int, epoch: int):
        self.marker, self.rank, self.epoch = marker, rank, epoch

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.rank == self.rank and runner.epoch == self.epoch and batch_idx == 1 and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class RecordRank0Epochs(Hook):
    """Appends ``<pid> <epoch index>`` to ``log`` when rank 0 starts an epoch (one line per epoch)."""

    def __init__(self, log: str):
        self.log = log

    def before_train_epoch(self, runner) -> None:
        if runner.rank == 0:
            with open(self.log, "a") as fh:
                fh.write(f"{os.getpid()} {runner.epoch}\n")


class NanOnRank(Hook):
    """Makes rank ``rank``'s loss non-finite from epoch index ``epoch`` on (its weights poisoned before
    each iteration); the other ranks' own losses stay finite until the poisoned gradients reach them."""

    def __init__(self, rank: int, epoch: int):
        self.rank, self.epoch = rank, epoch

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.rank == self.rank and runner.epoch >= self.epoch:
            for param in runner.model.parameters():
                param.data.fill_(float("nan"))


def _process_titles() -> dict[int, str]:
    """pid -> command line of this machine's processes (Ray sets ``ray::Class.method`` titles)."""
    titles = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # the process ended while we looked
                continue
    return titles


def _leftovers(timeout_s: float = 20.0):
    """Rank processes still running, placement groups not removed, and whether every CPU is free
    again (polls: kills and resource accounting are asynchronous)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        ranks = [pid for pid, cmd in _process_titles().items() if "RankActor" in cmd]
        groups = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
        cpus_free = ray.available_resources().get("CPU", 0.0) == ray.cluster_resources()["CPU"]
        if (not ranks and not groups and cpus_free) or time.monotonic() > deadline:
            return ranks, groups, cpus_free
        time.sleep(0.5)


@pytest.mark.slow
def test_asha_stopping_a_two_rank_trial_frees_its_ranks_and_the_next_trial_runs(demo_preset, tmp_path, local_ray):
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from rspose_tune._resources import trial_resources
    from trainables.mmpose_trainable import train_rspose

    bad = 0.123
    trainable = tune.with_parameters(train_rspose, preset=demo_preset, max_epochs=2,
                                     hooks=[FakeMetricForBadSetting(bad)])
    tuner = tune.Tuner(
        # 2 ranks x 1 CPU on a 2-CPU Ray: one trial at a time, so the third waits for the second's resources.
        tune.with_resources(trainable, trial_resources(workers=2, cpus=2, gpus=0)),
        param_space={**PARAMS, "coeff_sort": tune.grid_search([2.0, bad, 1.0])},
        tune_config=tune.TuneConfig(
            metric="metric", mode="max",
            scheduler=ASHAScheduler(time_attr="epoch", max_t=2, grace_period=1, reduction_factor=2),
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="asha", verbose=0),
    )
    grid = tuner.fit()
    by_coeff = {r.config["coeff_sort"]: r for r in grid}
    assert all(r.error is None for r in grid)
    assert list(by_coeff[bad].metrics_dataframe["epoch"]) == [1]  # stopped by ASHA at its first rung
    assert list(by_coeff[1.0].metrics_dataframe["epoch"])[0] == 1  # the next trial got the resources
    assert set(by_coeff[1.0].metrics_dataframe["world_size"]) == {2}
    ranks, groups, cpus_free = _leftovers()
    assert ranks == [] and groups == [] and cpus_free, (ranks, groups, ray.available_resources())


@pytest.mark.slow
def test_killed_rank_fails_the_trial_over_from_its_checkpoint(demo_preset, tmp_path, local_ray):
    from ray import tune

    from rspose_tune._resources import trial_resources
    from trainables.mmpose_trainable import train_rspose

    marker, log = str(tmp_path / "killed"), str(tmp_path / "epochs.log")
    trainable = tune.with_parameters(train_rspose, preset=demo_preset, max_epochs=3,
                                     hooks=[KillRankOnce(marker, rank=1, epoch=1), RecordRank0Epochs(log)])
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources(workers=2, cpus=2, gpus=0)),
        param_space=PARAMS,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"), name="kill", verbose=0,
            failure_config=tune.FailureConfig(max_failures=1),
            sync_config=tune.SyncConfig(sync_artifacts=True),
        ),
    )
    result = tuner.fit()[0]
    assert Path(marker).exists(), "rank 1 was never killed"
    assert result.error is None, result.error
    # Rank 0's epochs per process: the first attempt trained epochs 0 and 1 (killed in 1); the
    # retry is a new process that starts at epoch 1 (checkpoint after epoch 0), not from scratch.
    attempts: dict[str, list[int]] = {}
    for line in Path(log).read_text().split("\n"):
        if line:
            pid, epoch = line.split()
            attempts.setdefault(pid, []).append(int(epoch))
    assert list(attempts.values()) == [[0, 1], [1, 2]], attempts
    meta = json.loads((Path(result.path) / "trial.json").read_text())
    assert meta["resumed_from_epoch"] == 1 and meta["world_size"] == 2


@pytest.mark.slow
def test_a_divergence_on_another_rank_is_not_retried(demo_preset, tmp_path, local_ray):
    """Issue 17: rank 1 diverging reached rank 0 as RankFailedError, and FailureConfig retried the trial."""
    from ray import tune

    from rspose_tune._resources import trial_resources
    from trainables.mmpose_trainable import DIVERGED_FILE, train_rspose

    log = str(tmp_path / "epochs.log")
    trainable = tune.with_parameters(train_rspose, preset=demo_preset, max_epochs=2,
                                     hooks=[NanOnRank(rank=1, epoch=0), RecordRank0Epochs(log)])
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources(workers=2, cpus=2, gpus=0)),
        param_space=PARAMS,
        tune_config=tune.TuneConfig(num_samples=1, metric="metric", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="nan-rank1", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),  # the search's policy
    )
    result = tuner.fit()[0]
    assert result.error is not None and "a diverged trial is not retried" in str(result.error), result.error
    assert "rank 1" in str(result.error) and "non-finite" in str(result.error)
    assert len(Path(log).read_text().split("\n")) == 2, Path(log).read_text()  # one attempt trained: epoch 0
    assert "rank 1" in json.loads((Path(result.path) / DIVERGED_FILE).read_text())["reason"]
