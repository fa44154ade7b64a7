"""``RSPoseHeatmapHead`` and ``RSPoseSimCCHead`` (rspose_tune.mmpose_adapter.heads): registration, a real
train step from each installed config, the six config arguments, argument errors, and a Runner
training on the bundled COCO images.

Real MMPose configs (shrunk for CPU) and the real top-down training pipeline on the bundled
images: tests/mmpose_adapter/conftest.py."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from tests.mmpose_adapter.conftest import (
    CONFIGS,
    DATASETS,
    build_dataset,
    build_model,
    head_losses,
    shrunk_config,
    train_pipeline,
)

pytestmark = pytest.mark.usefixtures("mmpose_ready")


def test_registered_in_mmpose_models():
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.heads import RSPoseHeatmapHead, RSPoseSimCCHead
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    assert MODELS.get("RSPoseLoss") is RSPoseLoss
    assert MODELS.get("RSPoseHeatmapHead") is RSPoseHeatmapHead
    assert MODELS.get("RSPoseSimCCHead") is RSPoseSimCCHead
    from mmpose.models.heads import HeatmapHead, SimCCHead

    assert issubclass(RSPoseHeatmapHead, HeatmapHead) and issubclass(RSPoseSimCCHead, SimCCHead)


def batch_of(samples):
    from mmengine.dataset import pseudo_collate

    return pseudo_collate([dict(inputs=torch.zeros(3, 256, 192, dtype=torch.uint8), data_samples=s) for s in samples])


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_train_step_from_installed_config(kind, coco_batches, data_dir):
    """UDP (ViTPose), MSRA (HRNet) and SimCC (ResNet) heads: one real train step, finite losses."""
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper

    cfg, _ = coco_batches[kind]
    model = build_model(cfg)
    ds = build_dataset(cfg, data_dir)
    np.random.seed(0)
    data = pseudo_collate([ds[i] for i in range(8)])
    before = [p.detach().clone() for p in model.backbone.parameters()]
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    out = model.train_step(data, wrapper)
    assert {"loss", "loss_rank", "loss_sort", "loss_inst", "acc_pose"} <= set(out)
    assert all(torch.isfinite(v).all() for v in out.values())
    total = out["loss_rank"] + out["loss_sort"] + out["loss_inst"]
    torch.testing.assert_close(out["loss"], total)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))


@pytest.mark.parametrize("kind", ["udp", "simcc", "rtmcc"])
@pytest.mark.parametrize(
    "head_kwargs, loss_kwargs, key",
    [
        ({}, dict(delta_rank=0.05), "loss_rank"),
        ({}, dict(coeff_rank=2.5), "loss_rank"),
        ({}, dict(delta_sort=0.2), "loss_sort"),
        ({}, dict(coeff_sort=2.5), "loss_sort"),
        (dict(delta_inst=0.01), {}, "loss_inst"),
        (dict(coeff_inst=2.5), {}, "loss_inst"),
    ],
)
def test_each_of_the_six_config_args_changes_the_head_loss(kind, head_kwargs, loss_kwargs, key, coco_batches):
    base = head_losses(kind, coco_batches)
    changed = head_losses(kind, coco_batches, head_kwargs, loss_kwargs)
    assert float(base[key]) != 0
    b, c = float(base[key]), float(changed[key])
    assert not math.isclose(b, c, rel_tol=1e-6), (b, c)
    if "coeff_inst" in head_kwargs or "coeff_rank" in loss_kwargs or "coeff_sort" in loss_kwargs:
        torch.testing.assert_close(changed[key], 2.5 * base[key])


def test_head_rejects_bad_arguments(coco_batches):
    from mmpose.registry import MODELS

    cfg, samples = coco_batches["udp"]
    head = dict(cfg.model.head)
    with pytest.raises(ValueError, match="all 0"):
        MODELS.build(dict(head, coeff_inst=0.0, loss=dict(type="RSPoseLoss", coeff_rank=0.0, coeff_sort=0.0)))
    with pytest.raises(ValueError, match="`delta_inst` is -1.0"):
        MODELS.build(dict(head, delta_inst=-1.0))
    with pytest.raises(ValueError, match="`coeff_inst` is nan"):
        MODELS.build(dict(head, coeff_inst=float("nan")))
    with pytest.raises(ValueError, match="`delta_inst` is None"):
        MODELS.build(dict(head, delta_inst=None))
    assert MODELS.build(dict(head, delta_inst=None, coeff_inst=0.0)).delta_inst is None
    with pytest.raises(ValueError, match=r"decoder.*got MegviiHeatmap"):
        MODELS.build(
            dict(head, decoder=dict(type="MegviiHeatmap", input_size=(192, 256), heatmap_size=(48, 64), kernel_size=11))
        )
    with pytest.raises(ValueError, match=r"decoder.*got None"):
        MODELS.build(dict(head, decoder=None))
    # ... but both are fine without Instance Sort
    MODELS.build(dict(head, decoder=None, coeff_inst=0.0))

    built = MODELS.build(head)
    with pytest.raises(ValueError, match="one instance per data sample"):
        built._original_coords(torch.zeros(3, 17, 2), samples[:2])
    multi = copy.deepcopy(samples[0])
    multi.gt_instances = multi.gt_instances.cat([multi.gt_instances, multi.gt_instances])
    with pytest.raises(ValueError, match=r"\(1, 17, 2\).*got \(2, 17, 2\)"):
        built._instance_similarity(torch.zeros(1, 17, 2), [multi], cfg.model.train_cfg)
    nometa = type(samples[0])(metainfo={k: v for k, v in samples[0].metainfo.items() if k != "input_center"})
    with pytest.raises(ValueError, match="input_center"):
        built._inverse_warp(nometa, use_udp=True)
    with pytest.raises(TypeError, match="must return a Tensor or a dict"):
        from rspose_tune.mmpose_adapter.heads._shared import _loss_dict

        _loss_dict((torch.zeros(()),))


def test_head_with_mse_loss_keeps_loss_kpt_and_adds_instance_sort(coco_batches):
    out = head_losses("udp", coco_batches, dict(loss=dict(type="KeypointMSELoss", use_target_weight=True)))
    assert {"loss_kpt", "loss_inst", "acc_pose"} <= set(out)


# --------------------------------------------------------------------------------------------
# End to end and benchmark
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_runner_training_on_bundled_coco_decreases_the_loss(tmp_path, data_dir):
    """A real mmengine Runner: tiny HRNet + RSPoseHeatmapHead (MSRA codec) on the bundled COCO
    images with the full augmenting training pipeline; all three RSPose losses on."""
    from mmengine.runner import Runner

    cfg = shrunk_config("msra")
    cfg.work_dir = str(tmp_path)
    ds = dict(DATASETS["coco"])
    ds.update(data_root=str(data_dir / "coco"), data_prefix=dict(img=""), data_mode="topdown",
              pipeline=train_pipeline(cfg))
    cfg.train_dataloader = dict(
        batch_size=6, num_workers=0, persistent_workers=False,
        sampler=dict(type="DefaultSampler", shuffle=True), dataset=ds,
    )
    epochs = 24
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=10_000)
    cfg.optim_wrapper = dict(optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.0), clip_grad=dict(max_norm=1.0))
    cfg.param_scheduler = []
    for key in ("val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"):
        cfg[key] = None
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=10_000)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.default_hooks.visualization = dict(type="PoseVisualizationHook", enable=False)
    cfg.randomness = dict(seed=0)
    cfg.log_level = "WARNING"
    runner = Runner.from_cfg(cfg)
    runner.train()

    iters_per_epoch = len(runner.train_dataloader)
    history = {}
    for key in ("loss", "loss_rank", "loss_sort", "loss_inst"):
        values, _ = runner.message_hub.get_scalar(f"train/{key}").data
        history[key] = np.asarray(values, dtype=np.float64)
        assert len(history[key]) == epochs * iters_per_epoch and np.isfinite(history[key]).all()
    per_epoch = {k: v.reshape(epochs, iters_per_epoch).mean(1) for k, v in history.items()}
    first, last = ({k: v[sl].mean() for k, v in per_epoch.items()} for sl in (slice(0, 3), slice(-3, None)))
    assert last["loss"] < first["loss"] - 0.05, per_epoch["loss"]
    assert last["loss_rank"] < first["loss_rank"] - 0.1, per_epoch["loss_rank"]
