"""rspose_tune.training._config: a trial's config built and saved beside its results, trained by a real
mmengine Runner with the report hook (same seed, same first-epoch losses)."""

from __future__ import annotations

import json
import math

import pytest

PARAMS = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)


def _train(preset, tmp_path, *, seed, max_epochs=1):
    from mmengine.runner import Runner

    from rspose_tune.training import TuneReportHook, prepare_trial_config

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
