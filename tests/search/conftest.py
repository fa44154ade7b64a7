"""Shared by the search CLI's tests."""

from __future__ import annotations

from rspose_tune import search


def _run(argv, capsys):
    code = search.main(argv)
    return code, capsys.readouterr().err


def train_exported_simcc_config(cfg, work_dir, name: str) -> dict:
    """One epoch of MMPose's Runner on an exported 1-D (SimCC/RTMCC) config, then validation: the
    head gathered per-axis calibration (x and y statistics of every keypoint); the metrics."""
    import torch
    from mmengine.runner import Runner

    cfg.work_dir = str(work_dir)
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=False)
    cfg.experiment_name = name
    runner = Runner.from_cfg(cfg)
    runner.train()
    head = runner.model.head
    assert head.peak_min.shape == (2, 17) and bool((head.peak_max >= head.peak_min).all())
    assert not torch.equal(head.peak_max[0], head.peak_max[1])
    metrics = runner.val()
    assert 0 <= metrics["coco/AP"] <= 1 and "rspose/spearman" in metrics
    return metrics
