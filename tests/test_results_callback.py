"""rspose_tune.results_callback: the Parquet callback finalises each trial's status (fake trials),
and a real Ray Tune + ASHA run writes every row once.

``result`` and the constants live here, not in a helper module: the Ray trainable below calls
``result`` on the workers, which get this module by value and could not import a helper module of
tests/; ``tests/test_results.py`` imports them from here."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from rspose_tune.results import read_metadata, read_results
from rspose_tune.results_callback import ParquetResultsCallback

MAX_T = 4
CONFIG = {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": 3.0, "coeff_inst": 0.25}
CONFIG_OFF = {**CONFIG, "delta_sort": None, "coeff_sort": 0.0, "delta_inst": 3.0, "coeff_inst": None}


def result(epoch: int, metric: float = 0.5, **extra) -> dict:
    out = {
        "epoch": epoch, "metric": metric, "metric_name": "coco/AP", "ar": 0.6, "loss": 1.0,
        "loss_rank": 0.5, "loss_sort": math.nan, "loss_inst": 0.1, "spearman": 0.7, "wall_s": 12.5,
        "node": "node-1", "gpu_type": "cpu", "coco/AP": metric, "coco/AR": 0.6, "timestamp": 1_700_000_000,
        "training_iteration": epoch, "config": {"x": 1},
    }
    out.update(extra)
    return out


# --------------------------------------------------------------------------------------------
# The callback (fake trials)
# --------------------------------------------------------------------------------------------


def fake_trial(trial_id: str, config=CONFIG, error_text: str | None = None, tmp_path: Path | None = None):
    error_file = None
    if error_text is not None:
        error_file = tmp_path / f"{trial_id}-error.txt"
        error_file.write_text(error_text)
    return SimpleNamespace(trial_id=trial_id, config=config, error_file=str(error_file) if error_file else None)


def callback(root: Path, **kwargs) -> ParquetResultsCallback:
    return ParquetResultsCallback(backbone="demo", max_epochs=MAX_T, run="run", root=root, **kwargs)


def feed(cb, trial, epochs):
    for epoch in epochs:
        cb.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result(epoch, metric=0.1 * epoch))


def test_callback_finalises_status(tmp_path):
    root = tmp_path / "trials"
    cb = callback(root, search_space={"delta_rank": {"low": 0.1, "high": 1.0}})
    full, early, boom, early_boom, never = (
        fake_trial("full"), fake_trial("early"),
        fake_trial("boom", error_text="Failure # 1\nTraceback (most recent call last):\n  x\nValueError: boom\n",
                   tmp_path=tmp_path),
        fake_trial("early_boom", config=CONFIG_OFF, error_text="Failure # 1\nRuntimeError: CUDA OOM\n",
                   tmp_path=tmp_path),
        fake_trial("never"),
    )
    feed(cb, full, range(1, MAX_T + 1))
    feed(cb, early, [1, 2])
    feed(cb, boom, [1])
    cb.on_trial_complete(iteration=9, trials=[], trial=full)
    cb.on_trial_complete(iteration=9, trials=[], trial=early)
    cb.on_trial_error(iteration=9, trials=[], trial=boom)
    cb.on_trial_error(iteration=9, trials=[], trial=early_boom)
    cb.on_trial_complete(iteration=9, trials=[], trial=never)

    frame = read_results(root)
    final = frame.groupby("trial_id").tail(1).set_index("trial_id")
    assert final.loc["full", "status"] == "completed" and final.loc["full", "epoch"] == MAX_T
    assert final.loc["early", "status"] == "pruned" and final.loc["early", "epoch"] == 2
    assert final.loc["boom", "status"] == "error" and final.loc["boom", "error"] == "ValueError: boom"
    assert final.loc["boom", "metric"] == pytest.approx(0.1)  # the last row keeps its metrics
    assert final.loc["early_boom", "epoch"] == 0 and final.loc["early_boom", "error"] == "RuntimeError: CUDA OOM"
    assert math.isnan(final.loc["early_boom", "coeff_sort"]) and math.isnan(final.loc["early_boom", "metric"])
    assert "never" not in final.index
    earlier = frame[frame.epoch < frame.groupby("trial_id").epoch.transform("max")]
    assert set(earlier.status) == {"running"}
    assert not frame.duplicated(["trial_id", "epoch"]).any()
    assert read_metadata(root)["search_space"] == {"delta_rank": {"low": 0.1, "high": 1.0}}


def test_callback_error_without_error_file(tmp_path):
    cb = callback(tmp_path)
    trial = fake_trial("t")
    cb.on_trial_error(iteration=1, trials=[], trial=trial)
    assert read_results(tmp_path).loc[0, "error"].startswith("unknown error")


def test_callback_finalises_after_driver_restart_and_drops_abandoned_rows(tmp_path):
    trial = fake_trial("t")
    first = callback(tmp_path)
    feed(first, trial, [1, 2, 3])  # driver dies; the trial's last checkpoint was epoch 1
    second = callback(tmp_path)  # fresh callback (resumed run), nothing in memory
    feed(second, trial, [2])
    second.on_trial_complete(iteration=1, trials=[], trial=trial)
    frame = read_results(tmp_path)
    assert frame.epoch.tolist() == [1, 2] and frame.status.tolist() == ["running", "pruned"]

    third = callback(tmp_path)  # completion seen only by yet another driver: read from disk
    other = fake_trial("u")
    feed(first, other, [1, 2, 3, 4])
    third.on_trial_complete(iteration=1, trials=[], trial=other)
    assert read_results(tmp_path).query("trial_id == 'u'").status.tolist()[-1] == "completed"


def test_an_error_row_before_the_first_result_goes_once_the_trial_reports(tmp_path):
    """A trial errored before its first result and then ran again (Ray 2.60: a dead node fails two
    of its tasks, the second failure ends it ERROR, ``--resume`` runs it again). Its epoch-0 error
    row goes with its first result, in this driver or, after a restart, in the next one (the soak's
    journal check met a row {0: NaN} of a trial that then completed)."""
    import pickle

    trial, other = fake_trial("t"), fake_trial("u")
    first = callback(tmp_path)
    first.on_trial_error(iteration=1, trials=[], trial=trial)
    assert read_results(tmp_path)[["epoch", "status"]].values.tolist() == [[0, "error"]]
    feed(first, trial, [1, 2])
    first.on_trial_complete(iteration=2, trials=[], trial=trial)
    first.on_trial_error(iteration=3, trials=[], trial=other)  # then the driver dies
    second = pickle.loads(pickle.dumps(first))  # Ray's tuner.pkl
    feed(second, other, [1])
    frame = read_results(tmp_path)
    assert sorted(zip(frame.trial_id, frame.epoch, frame.status)) == [
        ("t", 1, "running"), ("t", 2, "pruned"), ("u", 1, "running")]


def test_callback_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="clash with the built-in keys"):
        callback(tmp_path, extra_metadata={"versions": {}})
    with pytest.raises(ValueError, match="max_epochs"):
        ParquetResultsCallback(backbone="demo", max_epochs=0, root=tmp_path)
    cb = callback(tmp_path, extra_metadata={"preset_file": Path("/p/vit-h.yaml")})
    feed(cb, fake_trial("t"), [1])
    assert read_metadata(tmp_path)["preset_file"] == "/p/vit-h.yaml"


def test_callback_is_picklable(tmp_path):
    import pickle

    cb = pickle.loads(pickle.dumps(callback(tmp_path)))
    feed(cb, fake_trial("t"), [1])
    assert len(read_results(tmp_path)) == 1


# --------------------------------------------------------------------------------------------
# Real Ray Tune + ASHA
# --------------------------------------------------------------------------------------------


def _trainable(config):
    from ray import tune

    if config["delta_rank"] == 1.0:
        raise ValueError("synthetic failure before the first result")
    plateau = 1.0 - abs(config["delta_rank"] - 0.4)
    for epoch in range(1, MAX_T + 1):
        metrics = result(epoch, metric=plateau * (1.0 - 0.5**epoch))
        for ray_key in ("config", "training_iteration", "timestamp"):  # Ray fills these itself
            del metrics[ray_key]
        tune.report(metrics)


@pytest.mark.slow
def test_end_to_end_with_ray_tune_and_asha(local_ray, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    deltas = [0.4, 0.9, 0.45, 0.1, 0.35, 1.0, 0.6]
    space = {**CONFIG_OFF, "delta_rank": tune.grid_search(deltas)}
    tuner = tune.Tuner(
        _trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=ASHAScheduler(time_attr="epoch", max_t=MAX_T, grace_period=1, reduction_factor=2),
            metric="metric",
            mode="max",
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(
            name="e2e",
            storage_path=str(tmp_path),
            verbose=0,
            callbacks=[ParquetResultsCallback(backbone="demo", max_epochs=MAX_T, search_space={"delta_rank": deltas})],
        ),
    )
    results = tuner.fit()
    assert results.num_errors == 1

    folder = tmp_path / "e2e" / "trials"
    frame = pd.read_parquet(folder)
    assert len(frame) == sum(1 for _ in folder.glob("*.parquet")) and not list(folder.glob(".*"))
    assert not frame.duplicated(["trial_id", "epoch"]).any()
    assert set(frame.run) == {"e2e"} and set(frame.backbone) == {"demo"}
    final = frame.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    assert len(final) == len(deltas)
    assert set(final.status) == {"completed", "pruned", "error"}
    assert (final.status == "completed").eq(final.epoch == MAX_T).all()
    erred = final[final.status == "error"]
    assert len(erred) == 1 and erred.epoch.iloc[0] == 0 and "synthetic failure" in erred.error.iloc[0]
    assert erred.delta_rank.iloc[0] == 1.0 and math.isnan(erred.metric.iloc[0])
    assert frame.coeff_sort.isna().all() and frame.delta_sort.isna().all()  # sort component off
    assert frame.loss_sort.isna().all() and (frame[frame.epoch > 0].metric_name == "coco/AP").all()
    by_ray = {r.metrics["trial_id"]: r.metrics.get("epoch") for r in results if r.error is None}
    for trial_id, epoch in by_ray.items():
        assert final.loc[trial_id, "epoch"] == epoch
    meta = read_metadata(tmp_path / "e2e")
    assert meta["run"] == "e2e" and meta["search_space"] == {"delta_rank": deltas}
    assert read_results(tmp_path / "e2e").shape == frame.shape
