"""rspose_tune.mmpose_adapter.configs: the installed MMPose configs build shrunk and train one epoch on the
bundled data (real MMPose, real evaluation, CPU); a preset's stock-loss and RSPose configs."""

from __future__ import annotations

import pytest

from tests.conftest import KG

CONFIGS = {
    "vitpose-b": "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
    "simcc-res50": "mmpose::body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py",
    "hrnet-w32": "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_installed_configs_build_shrunk_and_forward(name, mmpose_base):
    import torch
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.configs import load_base_config, shrink_model

    cfg = load_base_config(CONFIGS[name])
    shrink_model(cfg)
    assert "init_cfg" not in cfg.model.backbone  # no pretrained download
    model = MODELS.build(cfg.model)
    model.init_weights()
    w, h = cfg.codec["input_size"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w), None, mode="tensor")
    if isinstance(out, tuple):  # SimCC: (x-vectors, y-vectors)
        assert out[0].shape[:2] == (2, 17) and out[0].shape[-1] == int(w * cfg.codec["simcc_split_ratio"])
    else:
        hw, hh = cfg.codec["heatmap_size"]
        assert out.shape == (2, 17, hh, hw)


def _train_one_epoch(cfg, tmp_path):
    from mmengine.runner import Runner

    cfg.work_dir = str(tmp_path)
    cfg.train_cfg["max_epochs"] = 1
    cfg.train_cfg["val_interval"] = 1
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[key]["batch_size"] = 4
        cfg[key]["num_workers"] = 0
        cfg[key]["persistent_workers"] = False
    cfg.default_hooks["checkpoint"] = dict(type="CheckpointHook", interval=-1, save_best=None)
    cfg.default_hooks.pop("visualization", None)
    cfg.param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=True)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.val_loop.run()


@pytest.mark.slow
def test_runner_trains_one_epoch_on_bundled_coco(tmp_path, data_dir, mmpose_base):
    from rspose_tune.mmpose_adapter.configs import load_base_config, set_dataset, shrink_model

    cfg = load_base_config(CONFIGS["hrnet-w32"])
    shrink_model(cfg)
    set_dataset(cfg, root=data_dir / "coco", train_ann="test_coco.json", val_ann="test_coco.json",
                train_img="", val_img="")
    metrics = _train_one_epoch(cfg, tmp_path)
    assert "coco/AP" in metrics and 0.0 <= metrics["coco/AP"] <= 1.0


@pytest.mark.slow
def test_runner_trains_one_epoch_on_bundled_crowdpose(tmp_path, data_dir, mmpose_base):
    from rspose_tune.mmpose_adapter.configs import load_base_config, set_dataset, shrink_model

    cfg = load_base_config(
        "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_hrnet-w32_8xb64-210e_crowdpose-256x192.py"
    )
    shrink_model(cfg)
    set_dataset(cfg, root=data_dir / "crowdpose", train_ann="test_crowdpose.json",
                val_ann="test_crowdpose.json", train_img="", val_img="")
    metrics = _train_one_epoch(cfg, tmp_path)
    assert "crowdpose/AP" in metrics and 0.0 <= metrics["crowdpose/AP"] <= 1.0


def test_stock_config_keeps_the_base_loss(demo_preset, mmpose_ready):
    from rspose_tune.mmpose_adapter.configs import build_config

    stock = build_config(demo_preset, None, seed=3, max_epochs=2)
    assert stock.model.head.type == "HeatmapHead" and stock.model.head.loss.type == "KeypointMSELoss"
    assert stock.rspose_tune.stock_loss and stock.randomness.seed == 3
    ours = build_config(demo_preset, KG, max_epochs=2)
    assert ours.model.head.type == "RSPoseHeatmapHead" and ours.model.head.loss.type == "RSPoseLoss"
    assert stock.train_dataloader.dataset.data_root == ours.train_dataloader.dataset.data_root


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


@pytest.mark.parametrize(("change", "match"), [
    ({"pos_thr": 1.0}, r"^loss parameter `pos_thr` must be < 1 \(labels peak at 1, so nothing would be a positive\), "
                       r"got 1.0$"),  # the one rule (spaces.LossParam.problem)
    ({"delta_rank": -1.0}, r"^loss parameter `delta_rank` must be finite and >= 0, got -1.0$"),
    ({"coeff_inst": float("nan")}, r"^loss parameter `coeff_inst` must be finite and >= 0, got nan$"),
    ({"coeff_rank": 0.0, "coeff_sort": None}, r"both 0: the heatmap would get no loss"),
    ({"pos_thrx": 0.1}, r"unknown loss parameter\(s\) \['pos_thrx'\]"),
])
def test_loss_parameters_are_read_as_a_loss_setting(change, match, mmpose_ready):
    from rspose_tune.mmpose_adapter.configs import ConfigBuildError, _check_params

    assert _check_params({**KG, "coeff_inst": None}) == {**KG, "coeff_inst": 0.0, "delta_inst": 0.0, "pos_thr": 0.0}
    with pytest.raises(ConfigBuildError, match=match):
        _check_params({**KG, **change})


def test_demo_rtmcc_stock_and_rspose_configs(mmpose_ready, tmp_path):
    """RTMPose's head, labels and stock loss on a small CSPNeXt; the demo-simcc recipe and space."""
    from mmengine.config import Config
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.configs import build_config
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo-rtmcc", data_root=str(tmp_path))
    simcc = load_preset("demo-simcc", data_root=str(tmp_path))
    assert preset.params == simcc.params and preset.budget == simcc.budget and preset.known_good == simcc.known_good
    stock = build_config(preset, None)
    head = stock.model.head
    assert head.type == "RTMCCHead" and stock.model.backbone.type == "CSPNeXt"
    assert head.loss == dict(type="KLDiscretLoss", use_target_weight=True, beta=10.0, label_softmax=True)
    codec = head.decoder
    assert (codec.sigma, codec.normalize) == ((4.9, 5.66), False)
    assert [round(s * codec.simcc_split_ratio) for s in codec.input_size] == [384, 512]  # RTMPose's bins
    simcc_stock = build_config(simcc, None)
    for key in ("optim_wrapper", "param_scheduler", "train_cfg"):
        assert Config(dict(x=stock[key])).to_dict() == Config(dict(x=simcc_stock[key])).to_dict(), key
    rs = build_config(preset, dict(preset.known_good[0]))
    assert rs.model.head.type == "RSPoseRTMCCHead" and rs.model.head.loss.type == "RSPoseLoss"
    meta = next(t for t in rs.train_dataloader.dataset.pipeline if t["type"] == "PackPoseInputs")["meta_keys"]
    assert "bbox_rotation" in meta  # Instance Sort's rotation
    model = MODELS.build(rs.model)
    feats = model.extract_feat(__import__("torch").zeros(2, 3, 64, 48))
    assert feats[-1].shape[1:] == (64, 8, 6)  # (C, H, W): RTMPose's head input size at 256x192


#: The two RTMPose presets: (name, backbone width (the head's input channels), EMA, AdamW weight decay), as
#: MMPose configures them (rtmpose-t's config turns EMA off: "Turn off EMA while training the tiny model").
RTMPOSE = [("rtmpose-m", 768, True, 0.05), ("rtmpose-t", 384, False, 0.0)]


@pytest.mark.parametrize(("name", "channels", "ema", "weight_decay"), RTMPOSE)
def test_rtmpose_keeps_its_recipe_scales_it_and_keeps_the_weights_prefix(mmpose_ready, tmp_path, name, channels, ema,
                                                                         weight_decay):
    """MMPose's RTMPose recipe (EMA where it has one, stage-2 pipeline switch, cosine from 210) under the builder."""
    from rspose_tune.mmpose_adapter.configs import build_config
    from rspose_tune.spaces import load_preset

    weights = tmp_path / "cspnext.pth"
    weights.write_bytes(b"")
    preset = load_preset(name, data_root=str(tmp_path), weights=str(weights))
    cfg = build_config(preset, dict(preset.known_good[0]))
    assert cfg.model.head.type == "RSPoseRTMCCHead" and cfg.model.backbone.type == "CSPNeXt"
    assert cfg.model.head.in_channels == channels and cfg.optim_wrapper.optimizer.weight_decay == weight_decay
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint=str(weights.resolve()), prefix="backbone.")
    hooks = {h["type"]: h for h in cfg.custom_hooks}
    assert hooks["mmdet.PipelineSwitchHook"]["switch_epoch"] == 390
    if ema:
        assert hooks["EMAHook"]["ema_type"] == "ExpMomentumEMA"
        assert "CalibrationEMAHook" in hooks  # the EMA model keeps the raw head's calibration statistics
    else:
        assert "EMAHook" not in hooks and "CalibrationEMAHook" not in hooks  # no EMA model: nothing to copy into
    stage2_pack = next(s for s in hooks["mmdet.PipelineSwitchHook"]["switch_pipeline"] if s["type"] == "PackPoseInputs")
    assert "bbox_rotation" in stage2_pack["meta_keys"]  # stage 2 rotates (up to 60 degrees): Instance Sort needs it
    assert cfg.model.head.decoder.sigma == (4.9, 5.66) and cfg.model.head.decoder.normalize is False
    short = build_config(preset, None, max_epochs=42)  # the stock RTMCCHead, a tenth of the recipe
    assert short.model.head.type == "RTMCCHead" and short.model.head.loss.type == "KLDiscretLoss"
    assert "CalibrationEMAHook" not in {h["type"] for h in short.custom_hooks}  # a stock head has no statistics
    assert {h["type"]: h for h in short.custom_hooks}["mmdet.PipelineSwitchHook"]["switch_epoch"] == 39
    cosine = next(s for s in short.param_scheduler if s["type"] == "CosineAnnealingLR")
    assert (cosine["begin"], cosine["end"], cosine["T_max"]) == (21, 42, 21)
    assert next(s for s in short.param_scheduler if s["type"] == "LinearLR")["end"] == 1000  # iterations


@pytest.mark.parametrize("name", [r[0] for r in RTMPOSE])
def test_rtmpose_shrunk_model_trains_one_step_on_cpu(mmpose_ready, tmp_path, name):
    import torch
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.configs import build_config
    from rspose_tune.spaces import load_preset

    cfg = build_config(load_preset(name, data_root=str(tmp_path), weights="none"), None, shrink=True)
    cfg.model.backbone.pop("_scope_")  # mmpose's CSPNeXt: mmdet's needs compiled mmcv ops
    assert "init_cfg" not in cfg.model.backbone
    model = MODELS.build(cfg.model)
    pred_x, pred_y = model.head(model.extract_feat(torch.zeros(2, 3, 256, 192)))
    assert pred_x.shape == (2, 17, 384) and pred_y.shape == (2, 17, 512)
