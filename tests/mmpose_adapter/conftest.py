"""Shared by the MMPose adapter's tests: the installed configs of the three codecs (and RTMPose's
RTMCC head, ``rtmcc``) shrunk for CPU with the RSPose heads, the real top-down training pipeline on the bundled COCO / CrowdPose / MPII images,
and ``coco_batches`` (24 augmented COCO samples per codec, built once per test module)."""

from __future__ import annotations

import copy
import os.path as osp

import numpy as np
import pytest
import torch

CONFIGS = {
    "udp": "body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
    "msra": "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
    "simcc": "body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py",
}
#: RTMPose-m (CSPNeXt + RTMCCHead, un-normalised two-sigma SimCC labels) besides the three codecs.
HEAD_CONFIGS = {**CONFIGS, "rtmcc": "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"}
DATASETS = {
    "coco": dict(type="CocoDataset", data_root="coco", ann_file="test_coco.json"),
    "crowdpose": dict(type="CrowdPoseDataset", data_root="crowdpose", ann_file="test_crowdpose.json"),
    "mpii": dict(type="MpiiDataset", data_root="mpii", ann_file="test_mpii.json"),
}
META_FILES = {"coco": "coco.py", "crowdpose": "crowdpose.py", "mpii": "mpii.py"}


def mim_path(*parts: str) -> str:
    import mmpose

    return osp.join(osp.dirname(mmpose.__file__), ".mim", "configs", *parts)


def shrunk_config(kind: str, num_keypoints: int = 17, meta: str = "coco"):
    """The installed config of ``kind`` with the RSPose head and a backbone small enough for CPU."""
    from mmengine.config import Config

    cfg = Config.fromfile(mim_path(HEAD_CONFIGS[kind]))
    model = cfg.model
    model.backbone.pop("init_cfg", None)  # no pretrained download
    if kind == "udp":
        model.backbone.arch = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128)
        model.backbone.drop_path_rate = 0.0
        model.head.update(type="RSPoseHeatmapHead", in_channels=64, deconv_out_channels=(32, 32))
    elif kind == "msra":
        extra = model.backbone.extra
        extra.stage1.update(num_blocks=(1,), num_channels=(8,))
        extra.stage2.update(num_blocks=(1, 1), num_channels=(8, 16))
        extra.stage3.update(num_modules=1, num_blocks=(1, 1, 1), num_channels=(8, 16, 32))
        extra.stage4.update(num_modules=1, num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 32, 64))
        model.head.update(type="RSPoseHeatmapHead", in_channels=8)
    elif kind == "rtmcc":  # mmpose's own CSPNeXt (mmdet's needs compiled mmcv ops), tiny widths
        model.backbone.pop("_scope_")
        model.backbone.update(deepen_factor=0.167, widen_factor=0.125, norm_cfg=dict(type="BN"))
        model.head.update(type="RSPoseRTMCCHead", in_channels=128, gau_cfg=dict(model.head.gau_cfg, hidden_dims=64, s=32))
        # without mmdet's HSV augmentation and Albumentation (neither importable here)
        cfg.train_pipeline = [t for t in cfg.train_pipeline if t["type"] not in ("mmdet.YOLOXHSVRandomAug", "Albumentation")]
    else:
        model.backbone.update(depth=18, base_channels=16, stem_channels=16)
        model.head.update(type="RSPoseSimCCHead", in_channels=128, deconv_out_channels=(16, 16, 16))
    model.head.out_channels = num_keypoints
    model.head.loss = dict(type="RSPoseLoss")
    model.train_cfg = dict(metainfo=dict(from_file=mim_path("_base_", "datasets", META_FILES[meta])))
    return cfg


def train_pipeline(cfg, *, with_rotation_meta: bool = True) -> list:
    from rspose_tune.mmpose_adapter.heads import RSPOSE_PACK_META_KEYS

    pipeline = copy.deepcopy(cfg.train_pipeline)
    if with_rotation_meta:
        pipeline[-1] = dict(type="PackPoseInputs", meta_keys=RSPOSE_PACK_META_KEYS)
    return pipeline


def build_dataset(cfg, data_dir, name: str = "coco", *, with_rotation_meta: bool = True):
    from mmpose.registry import DATASETS as REGISTRY

    ds = dict(DATASETS[name])
    ds.update(
        data_root=str(data_dir / ds["data_root"]),
        data_prefix=dict(img=""),
        data_mode="topdown",
        pipeline=train_pipeline(cfg, with_rotation_meta=with_rotation_meta),
    )
    return REGISTRY.build(ds)


def samples_of(dataset, n: int, seed: int = 0) -> list:
    np.random.seed(seed)
    return [dataset[i % len(dataset)]["data_samples"] for i in range(n)]


def build_model(cfg):
    from mmpose.registry import MODELS

    torch.manual_seed(0)
    return MODELS.build(cfg.model)


@pytest.fixture(scope="module")
def coco_batches(data_dir):
    """Per kind: (config, 24 augmented COCO samples through the real training pipeline)."""
    out = {}
    for kind in HEAD_CONFIGS:
        cfg = shrunk_config(kind)
        out[kind] = (cfg, samples_of(build_dataset(cfg, data_dir), 24))
    return out


def head_losses(kind, coco_batches, head_kwargs=None, loss_kwargs=None, n=16):
    """Losses of the head of ``kind`` on fixed features of ``n`` real samples."""
    cfg, samples = coco_batches[kind]
    cfg = copy.deepcopy(cfg)
    cfg.model.head.update(head_kwargs or {})
    cfg.model.head.loss.update(loss_kwargs or {})
    model = build_model(cfg)
    torch.manual_seed(5)
    inputs = torch.randn(n, 3, 256, 192)
    feats = model.extract_feat(inputs)
    return model.head.loss(feats, samples[:n], train_cfg=cfg.model.train_cfg)
