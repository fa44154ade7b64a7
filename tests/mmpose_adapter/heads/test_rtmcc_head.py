"""``RSPoseRTMCCHead`` (RTMPose's ``RTMCCHead`` with the RSPose losses): registration, the shared 1-D
code, a real train step, and gradients through the GAU block and the CSPNeXt backbone.

The six config arguments and the calibration's checkpoint round trip are the SimCC head's tests,
parametrized with ``rtmcc`` (test_heads.py, test_calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.mmpose_adapter.conftest import build_dataset, build_model

pytestmark = pytest.mark.usefixtures("mmpose_ready")


def test_registered_and_shares_the_simcc_heads_code():
    from mmpose.models.heads import RTMCCHead
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.heads import RSPoseRTMCCHead, RSPoseSimCCHead
    from rspose_tune.mmpose_adapter.heads._simcc_common import _SimCCRSPoseMixin

    assert MODELS.get("RSPoseRTMCCHead") is RSPoseRTMCCHead and issubclass(RSPoseRTMCCHead, RTMCCHead)
    for name in ("loss", "predict", "decode"):
        assert getattr(RSPoseRTMCCHead, name) is getattr(_SimCCRSPoseMixin, name) is getattr(RSPoseSimCCHead, name)


def test_config_builder_swaps_rtmcc_head_for_the_rspose_one():
    from mmengine.config import Config

    from rspose_tune.mmpose_adapter.configs import apply_rspose_losses

    cfg = Config(dict(model=dict(head=dict(type="RTMCCHead", loss=dict(type="KLDiscretLoss", beta=10.0)))))
    apply_rspose_losses(cfg, dict(delta_rank=0.3, coeff_rank=1.0, delta_sort=1.2, coeff_sort=0.5,
                                  delta_inst=0.5, coeff_inst=0.1))
    assert cfg.model.head.type == "RSPoseRTMCCHead" and cfg.model.head.loss.type == "RSPoseLoss"
    assert "beta" not in cfg.model.head.loss and cfg.model.head.coeff_inst == 0.1


def test_train_step_gradients_reach_the_gau_block_and_the_backbone(coco_batches, data_dir):
    from mmengine.dataset import pseudo_collate

    cfg, _ = coco_batches["rtmcc"]
    model = build_model(cfg)
    ds = build_dataset(cfg, data_dir)
    np.random.seed(0)
    data = model.data_preprocessor(pseudo_collate([ds[i] for i in range(8)]), True)
    losses = model.loss(data["inputs"], data["data_samples"])
    assert {"loss_rank", "loss_sort", "loss_inst", "acc_pose"} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    for key in ("loss_rank", "loss_sort", "loss_inst"):
        model.zero_grad()
        losses = model.loss(data["inputs"], data["data_samples"])
        losses[key].backward()
        for part in (model.head.gau, model.head.mlp, model.backbone):
            grads = [p.grad for p in part.parameters() if p.requires_grad]
            assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), (key, type(part).__name__)
    assert torch.isfinite(model.head.peak_max).all() and model.head.peak_max.shape == (2, 17)
