"""The ``demo-simcc`` preset (issue 16): a CPU SimCC demo whose 1D path runs end to end.

The preset is data: the demo's generated data and tiny backbone, a SimCC head on the paper's
384x512 bins at sigma 6, KLDiscretLoss as the stock loss."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_demo_simcc_stock_and_rspose_configs(mmpose_ready, tmp_path):
    from mmengine.config import Config

    from rspose_tune.mmpose_adapter.configs import build_config
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo-simcc", data_root=str(tmp_path))
    assert preset.data.generated == "demo" and preset.budget.max_epochs == 10 and preset.resources.gpus == 0
    stock = build_config(preset, None)  # the baseline: the base config's own head and loss
    assert stock.model.head.type == "SimCCHead" and stock.model.head.loss.type == "KLDiscretLoss"
    assert stock.model.backbone.type == "DemoTinyNet"
    codec = stock.model.head.decoder
    assert codec.type == "SimCCLabel" and codec.sigma == 6.0
    bins = [round(s * codec.simcc_split_ratio) for s in codec.input_size]
    assert bins == [384, 512]  # MMPose's SimCC COCO 256x192 bins
    rs = build_config(preset, dict(preset.known_good[0]))
    assert rs.model.head.type == "RSPoseSimCCHead" and rs.model.head.loss.type == "RSPoseLoss"
    # the demo's recipe, untouched
    demo = build_config(load_preset("demo", data_root=str(tmp_path)), None)
    for key in ("optim_wrapper", "param_scheduler", "train_cfg"):
        assert Config(dict(x=stock[key])).to_dict() == Config(dict(x=demo[key])).to_dict(), key
    assert stock.model.backbone == demo.model.backbone
    assert stock.train_dataloader.batch_size == demo.train_dataloader.batch_size


@pytest.mark.slow
def test_demo_simcc_search_with_baseline_then_export_trains(tmp_path, mmpose_ready):
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.results import read_results

    data = generate_demo_dataset(tmp_path / "data", n_train=32, n_val=8, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "rspose_tune.search", "--backbone", "demo-simcc", "--storage", str(tmp_path / "runs"),
         "--name", "simcc", "--data-root", str(data), "--num-trials", "2", "--max-epochs", "2", "--grace-epochs", "1",
         "--reduction-factor", "2", "--max-concurrent", "2", "--confirm-top", "0", "--baseline", "--no-dashboard"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)  # fmt: skip
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
    cfg.work_dir = str(tmp_path / "export_run")
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=False)
    cfg.experiment_name = "simcc_export"
    runner = Runner.from_cfg(cfg)
    runner.train()
    head = runner.model.head
    # per-axis calibration: x and y statistics of every keypoint, gathered in training
    assert head.peak_min.shape == (2, 17) and bool((head.peak_max >= head.peak_min).all())
    assert not torch.equal(head.peak_max[0], head.peak_max[1])
    metrics = runner.val()
    assert 0 <= metrics["coco/AP"] <= 1 and "rspose/spearman" in metrics
