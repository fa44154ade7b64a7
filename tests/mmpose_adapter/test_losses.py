"""rspose_tune.mmpose_adapter.losses: ``RSPoseLoss`` against the pure losses of :mod:`rspose_tune.losses`,
its arguments and errors; which pixels and bins are positives (``pos_thr``), counted on MMPose's own
codecs' targets, and ``pos_thr`` going from a config through the real MMPose head into the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def gaussian_labels(shape, seed=0):
    """Random (G, M) heatmap-like labels: a few positives in (0, 1], the rest 0."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.rand(shape, generator=gen)
    return torch.where(labels > 0.9, labels, torch.zeros_like(labels))


KW = dict(delta_rank=0.3, coeff_rank=2.0, delta_sort=1.2, coeff_sort=0.5)


@pytest.mark.usefixtures("mmpose_ready")
def test_heatmap_loss_matches_pure_functions():
    from mmpose.registry import MODELS

    from rspose_tune.losses import spatial_rank_sort

    torch.manual_seed(0)
    b, k, h, w = 3, 4, 8, 6
    logits = torch.randn(b, k, h, w, requires_grad=True)
    target = gaussian_labels((b, k, h, w))
    weight = torch.tensor([[1.0, 0.0, 1.0, 0.5]] * b)
    out = MODELS.build(dict(type="RSPoseLoss", **KW))(logits, target, weight)
    assert set(out) == {"loss_rank", "loss_sort"}
    (out["loss_rank"] + out["loss_sort"]).backward()
    grad = logits.grad.clone()

    ref_logits = logits.detach().clone().requires_grad_()
    rank, sort = spatial_rank_sort(
        ref_logits.reshape(b * k, -1), target.reshape(b * k, -1), weight.reshape(-1),
        delta_rank=0.3, delta_sort=1.2, pos_thr=0.0,
    )
    torch.testing.assert_close(out["loss_rank"], 2.0 * rank)
    torch.testing.assert_close(out["loss_sort"], 0.5 * sort)
    (2.0 * rank + 0.5 * sort).backward()
    torch.testing.assert_close(grad, ref_logits.grad)


@pytest.mark.usefixtures("mmpose_ready")
def test_simcc_loss_matches_pure_functions_per_axis_with_normalised_labels():
    from rspose_tune.losses import spatial_rank_sort
    from rspose_tune.mmpose_adapter.losses import SIMCC_POS_THR, RSPoseLoss

    torch.manual_seed(1)
    b, k, wx, wy = 2, 3, 40, 52
    px, py = torch.randn(b, k, wx), torch.randn(b, k, wy)
    xs, ys = torch.arange(wx).float(), torch.arange(wy).float()
    # MMPose SimCCLabel (normalize=True): Gaussians over the whole axis, peak 1/(sigma sqrt(2 pi))
    sigma = 6.0
    norm = sigma * math.sqrt(2 * math.pi)
    gx = torch.exp(-((xs - 17) ** 2) / (2 * sigma**2)).expand(b, k, wx) / norm
    gy = torch.exp(-((ys - 30) ** 2) / (2 * sigma**2)).expand(b, k, wy) / norm
    weight = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    out = RSPoseLoss(**KW)((px, py), (gx, gy), weight)

    parts = [
        spatial_rank_sort(
            p.reshape(b * k, -1), (g / g.amax(-1, keepdim=True)).reshape(b * k, -1), weight.reshape(-1),
            delta_rank=0.3, delta_sort=1.2, pos_thr=SIMCC_POS_THR,
        )
        for p, g in ((px, gx), (py, gy))
    ]
    torch.testing.assert_close(out["loss_rank"], 2.0 * (parts[0][0] + parts[1][0]) / 2)
    torch.testing.assert_close(out["loss_sort"], 0.5 * (parts[0][1] + parts[1][1]) / 2)


@pytest.mark.usefixtures("mmpose_ready")
def test_simcc_default_pos_thr_selects_every_non_zero_bin():
    """The SimCC default positives are every non-zero bin (label > 0, the paper's support), not the
    3-sigma window that ``exp(-4.5)`` gives (the positive counts below cover every codec)."""
    from mmpose.codecs import SimCCLabel

    from rspose_tune.mmpose_adapter.losses import POS_THR, SIMCC_POS_THR, positives

    assert POS_THR == SIMCC_POS_THR == 0.0
    codec = SimCCLabel(input_size=(192, 256), sigma=6.0, simcc_split_ratio=2.0)
    enc = codec.encode(np.array([[[50.0, 100.0]]]), np.ones((1, 1)))
    label = torch.from_numpy(enc["keypoint_x_labels"])  # (1, 1, 384), centre at bin 100
    assert math.isclose(float(label.max()), 1 / (6.0 * math.sqrt(2 * math.pi)), rel_tol=1e-6)
    (pos,) = positives((label,))
    assert int(pos.sum()) == int((label > 0).sum()) == 171  # down to float32 underflow, ~14 sigma
    (disc,) = positives((label,), math.exp(-4.5))
    idx = torch.nonzero(disc[0])[:, 0]
    assert (int(idx.min()), int(idx.max())) == (100 - 17, 100 + 17)  # |x - mu| < 3 sigma = 18 bins


@pytest.mark.usefixtures("mmpose_ready")
@pytest.mark.parametrize(
    "coeffs, expected",
    [
        (dict(coeff_rank=0.0), {"loss_sort"}),
        (dict(coeff_sort=0.0), {"loss_rank"}),
        (dict(coeff_rank=0.0, coeff_sort=0.0), set()),
    ],
)
def test_zero_coefficient_drops_the_component(coeffs, expected, monkeypatch):
    import rspose_tune.losses
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    calls = []
    real = rspose_tune.losses.spatial_rank_sort

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rspose_tune.losses, "spatial_rank_sort", spy)
    out = RSPoseLoss(**coeffs)(torch.randn(2, 3, 4, 5), gaussian_labels((2, 3, 4, 5)), torch.ones(2, 3))
    assert set(out) == expected
    assert len(calls) == (1 if expected else 0)  # both off: the pure loss is never called


@pytest.mark.usefixtures("mmpose_ready")
@pytest.mark.parametrize(
    "change, key",
    [
        (dict(delta_rank=0.05), "loss_rank"),
        (dict(coeff_rank=3.0), "loss_rank"),
        (dict(delta_sort=0.1), "loss_sort"),
        (dict(coeff_sort=3.0), "loss_sort"),
        (dict(pos_thr=0.95), "loss_rank"),
        (dict(use_target_weight=False), "loss_rank"),
    ],
)
def test_each_loss_argument_changes_the_output(change, key):
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    torch.manual_seed(2)
    logits = torch.randn(4, 5, 8, 8) * 2
    target = gaussian_labels((4, 5, 8, 8), seed=3)
    weight = torch.rand(4, 5) * (torch.rand(4, 5) > 0.3)
    base = RSPoseLoss()(logits, target, weight)[key]
    changed = RSPoseLoss(**change)(logits, target, weight)[key]
    assert not torch.isclose(base, changed), (change, float(base), float(changed))


@pytest.mark.usefixtures("mmpose_ready")
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(delta_rank=-0.1), "`delta_rank` is -0.1"),
        (dict(delta_sort=float("inf")), "`delta_sort` is inf"),
        (dict(coeff_rank=-1.0), "`coeff_rank` is -1.0"),
        (dict(coeff_sort=float("nan")), "`coeff_sort` is nan"),
        (dict(pos_thr=float("nan")), "`pos_thr` is nan"),
        (dict(pos_thr="0.1"), "`pos_thr` is '0.1'"),
        (dict(pos_thr=-0.1), r"`pos_thr` is -0.1, but must be finite and >= 0$"),
        (dict(pos_thr=1.0), r"`pos_thr` is 1.0, but must be < 1 \(labels peak at 1, so nothing would be a positive\)$"),
        (dict(delta_rank=None), "`delta_rank` is None.*only with `coeff_rank=0`"),
        (dict(delta_sort=None, coeff_rank=0.0), "`delta_sort` is None"),
        (dict(coeff_rank=True), "`coeff_rank` is True"),
    ],
)
def test_loss_rejects_bad_arguments(kwargs, match):
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    with pytest.raises(ValueError, match=match):
        RSPoseLoss(**kwargs)


@pytest.mark.usefixtures("mmpose_ready")
def test_switched_off_component_may_have_a_null_delta():
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    logits, target, weight = torch.randn(2, 3, 4, 5), gaussian_labels((2, 3, 4, 5)), torch.ones(2, 3)
    out = RSPoseLoss(delta_rank=None, coeff_rank=0.0)(logits, target, weight)
    torch.testing.assert_close(out["loss_sort"], RSPoseLoss()(logits, target, weight)["loss_sort"])
    assert set(RSPoseLoss(delta_sort=None, coeff_sort=0.0)(logits, target, weight)) == {"loss_rank"}


@pytest.mark.usefixtures("mmpose_ready")
def test_loss_shape_errors_print_both_shapes():
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    loss = RSPoseLoss()
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\) and \(2, 3, 4, 6\)"):
        loss(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 6), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(B, K\) = \(2, 3\).*got \(3, 2\)"):
        loss(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5), torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"\(B, K, H, W\) or \(B, K, W\), got \(2, 3\)"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3), None)
    with pytest.raises(TypeError, match="`target` must be a Tensor"):
        loss(torch.zeros(2, 3, 4, 5), (torch.zeros(2, 3, 4),), None)
    with pytest.raises(ValueError, match="same length"):
        loss((torch.zeros(2, 3, 4), torch.zeros(2, 3, 5)), (torch.zeros(2, 3, 4),), None)


@pytest.mark.usefixtures("mmpose_ready")
def test_loss_nan_input_raises_and_empty_weights_give_zero():
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    logits = torch.randn(2, 3, 4, 5)
    target = gaussian_labels((2, 3, 4, 5))
    bad = logits.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        RSPoseLoss()(bad, target, torch.ones(2, 3))
    out = RSPoseLoss()(logits.requires_grad_(), target, torch.zeros(2, 3))
    assert all(float(v) == 0.0 for v in out.values())
    sum(out.values()).backward()
    assert torch.count_nonzero(logits.grad) == 0


# --------------------------------------------------------------------------------------------
# Positives: what pos_thr selects on MMPose's codecs
# --------------------------------------------------------------------------------------------


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
]


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


def test_rtmpose_simcc_codec_positive_counts():
    """RTMPose's labels (un-normalised, sigma 4.9 x / 5.66 y bins, 384 x 512 bins): per axis,
    label > 0 is 141 x-bins and 163 y-bins (float32 underflow), the 3 sigma disc 29 and 33."""
    from mmpose.codecs import SimCCLabel

    from rspose_tune.mmpose_adapter.losses import positives

    codec = SimCCLabel(input_size=(192, 256), sigma=(4.9, 5.66), simcc_split_ratio=2.0, normalize=False)
    enc = codec.encode(_keypoints((192, 256), 200)[None], np.ones((1, 200), np.float32))
    x, y = (torch.from_numpy(enc[k]) for k in ("keypoint_x_labels", "keypoint_y_labels"))
    assert x.shape[-1] == 384 and y.shape[-1] == 512 and float(x.max()) == float(y.max()) == 1.0
    table = {0.0: (141, 163), EXP_3SIGMA: (29, 33), EXP_2SIGMA: (19, 23), 0.5: (11, 13)}
    for thr, want in table.items():
        px, py = positives((x, y), thr)
        got = tuple(sorted({int(n) for n in p.sum(-1)}) for p in (px, py))
        assert got == ([want[0]], [want[1]]), (thr, got)


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
