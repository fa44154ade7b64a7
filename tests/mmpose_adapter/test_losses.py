"""Which pixels and bins are positives (``pos_thr``), counted on MMPose's own codecs' targets, and
``pos_thr`` going from a config through the real MMPose head into the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

EXP_3SIGMA, EXP_2SIGMA = math.exp(-4.5), math.exp(-2.0)


def _keypoints(input_size, n, seed=0):
    """``n`` random sub-pixel keypoints well inside an input of ``input_size`` (w, h)."""
    rng = np.random.default_rng(seed)
    w, h = input_size
    return np.stack([rng.uniform(0.3 * w, 0.7 * w, n), rng.uniform(0.3 * h, 0.7 * h, n)], 1).astype(np.float32)


def _counts(codec, thr, n=200):
    """Positives per keypoint (min, max) over ``n`` keypoints, as RSPoseLoss selects them."""
    from rspose_tune.mmpose_adapter.losses import positives

    out = []
    for kp in _keypoints(codec.input_size, n):
        enc = codec.encode(kp[None, None], np.ones((1, 1), np.float32))
        if "heatmaps" in enc:
            out.append(int(positives(torch.from_numpy(enc["heatmaps"])[None], thr).sum()))
        else:
            x, y = (torch.from_numpy(enc[k])[None] for k in ("keypoint_x_labels", "keypoint_y_labels"))
            out.extend(int(p.sum()) for p in positives((x, y), thr))
    return min(out), max(out)


# The table in RSPoseLoss's docstring ("Positives"), codec by codec: (min, max) per keypoint.
HEATMAPS = [
    ("UDPHeatmap", (48, 64), (24, 32), 1.5, {0.0: (100, 100), EXP_3SIGMA: (61, 69), EXP_2SIGMA: (26, 32), 0.5: (8, 12)}),
    ("MSRAHeatmap", (192, 256), (48, 64), 1.5, {0.0: (100, 100), EXP_3SIGMA: (69, 69), EXP_2SIGMA: (25, 25), 0.5: (9, 9)}),
    ("UDPHeatmap", (192, 256), (48, 64), 2.0,
     {0.0: (169, 169), EXP_3SIGMA: (108, 116), EXP_2SIGMA: (47, 52), 0.5: (16, 21)}),
    ("MSRAHeatmap", (192, 256), (48, 64), 2.0,
     {0.0: (169, 169), EXP_3SIGMA: (109, 109), EXP_2SIGMA: (45, 45), 0.5: (21, 21)}),
]  # fmt: skip


@pytest.mark.parametrize(("codec_type", "input_size", "heatmap_size", "sigma", "expected"), HEATMAPS)
def test_heatmap_codecs_positive_counts(codec_type, input_size, heatmap_size, sigma, expected):
    """label > 0 is the codec's (2*3*sigma+1)^2 square (100 at sigma 1.5, 169 at sigma 2), not a disc."""
    from mmpose.codecs import MSRAHeatmap, UDPHeatmap

    codec = {"UDPHeatmap": UDPHeatmap, "MSRAHeatmap": MSRAHeatmap}[codec_type](
        input_size=input_size, heatmap_size=heatmap_size, sigma=sigma)
    side = int(2 * 3 * sigma + 1)
    assert expected[0.0] == (side * side, side * side) == _counts(codec, 0.0)
    for thr, (low, high) in expected.items():  # UDP: the range over sub-pixel offsets
        got = _counts(codec, thr)
        assert low <= got[0] <= got[1] <= high, (codec_type, sigma, thr, got)


def test_simcc_codec_positive_counts():
    """SimCC sigma 6 (MMPose's 256x192 recipe: 384 x-bins, 512 y-bins): label > 0 is 171 bins per
    axis (the untruncated Gaussian down to float32 underflow), the paper's Table 1 ratios."""
    from mmpose.codecs import SimCCLabel

    codec = SimCCLabel(input_size=(192, 256), sigma=6.0, simcc_split_ratio=2.0)
    enc = codec.encode(_keypoints((192, 256), 1)[None], np.ones((1, 1), np.float32))
    assert enc["keypoint_x_labels"].shape[-1] == 384 and enc["keypoint_y_labels"].shape[-1] == 512
    for thr, want in {0.0: (171, 171), EXP_3SIGMA: (35, 35), EXP_2SIGMA: (23, 23), 0.5: (15, 15)}.items():
        assert _counts(codec, thr) == want, thr
    # Table 1 of the paper: negatives / positives = 1.2 on x (384 bins), 2.0 on y (512 bins)
    assert round((384 - 171) / 171, 1) == 1.2 and round((512 - 171) / 171, 1) == 2.0


def test_the_default_and_the_demo_known_good_are_label_above_zero():
    """The default is every non-zero label; the demo's known-good pos_thr (1e-6, the low end of its
    log range) selects exactly those pixels of its UDP sigma-1.5 heatmaps (smallest label 1.45e-6)."""
    from mmpose.codecs import UDPHeatmap

    from rspose_tune.mmpose_adapter.losses import POS_THR, RSPoseLoss
    from rspose_tune.spaces import load_preset

    assert POS_THR == 0.0 and RSPoseLoss().pos_thr == 0.0 and RSPoseLoss(pos_thr=None).pos_thr == 0.0
    preset = load_preset("demo", env={})
    thr = preset.known_good[0]["pos_thr"]
    assert thr == preset.params["pos_thr"].low == 1e-6
    codec = UDPHeatmap(input_size=(48, 64), heatmap_size=(24, 32), sigma=1.5)
    smallest = []
    for kp in _keypoints((48, 64), 300, seed=1):
        hm = codec.encode(kp[None, None], np.ones((1, 1), np.float32))["heatmaps"]
        smallest.append(float(hm[hm > 0].min()))
        assert int((hm > thr).sum()) == int((hm > 0).sum()) == 100
    assert min(smallest) > math.exp(-(5.5**2 + 5.5**2) / (2 * 1.5**2)) * 0.99  # the corner's bound, 1.45e-6


@pytest.mark.parametrize("name", ["demo", "demo-simcc"])
def test_demo_presets_known_good_pos_thr_is_label_above_zero_on_their_own_codec(name):
    """Each CPU demo searches pos_thr on a log range whose low end, its known-good value, selects
    exactly the non-zero labels of the codec in its base config (the paper's support)."""
    from mmengine.config import Config
    from mmpose.registry import KEYPOINT_CODECS

    from rspose_tune.spaces import load_preset

    preset = load_preset(name, env={})
    thr = preset.known_good[0]["pos_thr"]
    assert thr == preset.params["pos_thr"].low and preset.params["pos_thr"].log
    cfg = Config.fromfile(str(preset.source.parent / preset.base_config))
    (encoder,) = [t.encoder for t in cfg.train_dataloader.dataset.pipeline if t.type == "GenerateTarget"]
    codec = KEYPOINT_CODECS.build(encoder)  # what training encodes targets with
    assert _counts(codec, thr, n=100) == _counts(codec, 0.0, n=100)


def _head_and_target(pos_thr):
    """The demo preset's real MMPose model built from a config whose loss has ``pos_thr``."""
    from mmpose.codecs import UDPHeatmap

    from rspose_tune.mmpose_adapter import setup_mmpose
    from rspose_tune.mmpose_adapter.configs import build_config
    from rspose_tune.spaces import load_preset

    setup_mmpose()
    from mmpose.registry import MODELS

    preset = load_preset("demo", env={})
    params = {**preset.known_good[0], "pos_thr": pos_thr}
    cfg = build_config(preset, params)
    assert cfg.model.head.loss["pos_thr"] == pos_thr  # the config carries it ...
    model = MODELS.build(cfg.model)
    codec = UDPHeatmap(input_size=(48, 64), heatmap_size=(24, 32), sigma=1.5)
    kps = _keypoints((48, 64), 17, seed=2)[None]
    target = torch.from_numpy(codec.encode(kps, np.ones((1, 17), np.float32))["heatmaps"])[None]
    return model.head, target


def test_pos_thr_goes_from_the_config_through_the_head_into_the_loss():
    """A pos_thr dropped anywhere (config, head, loss) changes the head's loss: this fails."""
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    torch.manual_seed(0)
    logits = torch.randn(1, 17, 32, 24)
    weight = torch.ones(1, 17)
    losses = {}
    for thr in (0.0, 0.3):
        head, target = _head_and_target(thr)
        assert isinstance(head.loss_module, RSPoseLoss) and head.loss_module.pos_thr == thr  # ... the head ...
        losses[thr] = head.loss_module(logits, target, weight)  # ... and the loss uses it
        direct = RSPoseLoss(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, pos_thr=thr)
        for key, value in direct(logits, target, weight).items():
            torch.testing.assert_close(losses[thr][key], value)
    assert not torch.isclose(losses[0.0]["loss_rank"], losses[0.3]["loss_rank"])
    assert not torch.isclose(losses[0.0]["loss_sort"], losses[0.3]["loss_sort"])
