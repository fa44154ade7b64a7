"""Issue 3 (MMPose part): ``RSPoseLoss``, ``RSPoseHeatmapHead``, ``RSPoseSimCCHead``.

Real MMPose configs (shrunk for CPU), the real top-down training pipeline on the bundled COCO /
CrowdPose / MPII images, and the pure losses of :mod:`rspose_tune.losses` as the reference.
"""

from __future__ import annotations

import copy
import logging
import math
import os.path as osp

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("mmpose_ready")

CONFIGS = {
    "udp": "body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
    "msra": "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
    "simcc": "body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py",
}
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

    cfg = Config.fromfile(mim_path(CONFIGS[kind]))
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
    for kind in CONFIGS:
        cfg = shrunk_config(kind)
        out[kind] = (cfg, samples_of(build_dataset(cfg, data_dir), 24))
    return out


def gaussian_labels(shape, seed=0):
    """Random (G, M) heatmap-like labels: a few positives in (0, 1], the rest 0."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.rand(shape, generator=gen)
    return torch.where(labels > 0.9, labels, torch.zeros_like(labels))


# --------------------------------------------------------------------------------------------
# Registration and RSPoseLoss
# --------------------------------------------------------------------------------------------


def test_registered_in_mmpose_models():
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.heads import RSPoseHeatmapHead, RSPoseSimCCHead
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    assert MODELS.get("RSPoseLoss") is RSPoseLoss
    assert MODELS.get("RSPoseHeatmapHead") is RSPoseHeatmapHead
    assert MODELS.get("RSPoseSimCCHead") is RSPoseSimCCHead
    from mmpose.models.heads import HeatmapHead, SimCCHead

    assert issubclass(RSPoseHeatmapHead, HeatmapHead) and issubclass(RSPoseSimCCHead, SimCCHead)


KW = dict(delta_rank=0.3, coeff_rank=2.0, delta_sort=1.2, coeff_sort=0.5)


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


def test_simcc_default_pos_thr_selects_every_non_zero_bin():
    """The SimCC default positives are every non-zero bin (label > 0, the paper's support), not the
    3-sigma window that ``exp(-4.5)`` gives (tests/test_positives.py counts every codec)."""
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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(delta_rank=-0.1), "`delta_rank` is -0.1"),
        (dict(delta_sort=float("inf")), "`delta_sort` is inf"),
        (dict(coeff_rank=-1.0), "`coeff_rank` is -1.0"),
        (dict(coeff_sort=float("nan")), "`coeff_sort` is nan"),
        (dict(pos_thr=float("nan")), "`pos_thr` is nan"),
        (dict(pos_thr="0.1"), "`pos_thr` is '0.1'"),
        (dict(pos_thr=-0.1), r"`pos_thr` is -0.1.*0 <= pos_thr < 1"),
        (dict(pos_thr=1.0), r"`pos_thr` is 1.0.*0 <= pos_thr < 1"),
        (dict(delta_rank=None), "`delta_rank` is None.*only with `coeff_rank=0`"),
        (dict(delta_sort=None, coeff_rank=0.0), "`delta_sort` is None"),
        (dict(coeff_rank=True), "`coeff_rank` is True"),
    ],
)
def test_loss_rejects_bad_arguments(kwargs, match):
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    with pytest.raises(ValueError, match=match):
        RSPoseLoss(**kwargs)


def test_switched_off_component_may_have_a_null_delta():
    from rspose_tune.mmpose_adapter.losses import RSPoseLoss

    logits, target, weight = torch.randn(2, 3, 4, 5), gaussian_labels((2, 3, 4, 5)), torch.ones(2, 3)
    out = RSPoseLoss(delta_rank=None, coeff_rank=0.0)(logits, target, weight)
    torch.testing.assert_close(out["loss_sort"], RSPoseLoss()(logits, target, weight)["loss_sort"])
    assert set(RSPoseLoss(delta_sort=None, coeff_sort=0.0)(logits, target, weight)) == {"loss_rank"}


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
# Keypoint similarity
# --------------------------------------------------------------------------------------------


def coco_oks_term_numpy(pred, gt, area, sigmas):
    """pycocotools.cocoeval.COCOeval.computeOks, per keypoint (before the mean)."""
    variances = (np.asarray(sigmas) * 2) ** 2
    dx = pred[..., 0] - gt[..., 0]
    dy = pred[..., 1] - gt[..., 1]
    e = (dx**2 + dy**2) / variances / (np.asarray(area)[:, None] + np.spacing(1)) / 2
    return np.exp(-e)


def test_keypoint_similarity_matches_coco_oks_term():
    from rspose_tune.mmpose_adapter.heads import keypoint_similarity

    pred = np.array([[[10.0, 20.0], [30.0, 40.0], [0.0, 0.0]], [[5.0, 5.0], [7.5, 1.0], [100.0, 3.0]]])
    gt = np.array([[[10.0, 20.0], [33.0, 44.0], [1.0, -1.0]], [[5.0, 9.0], [7.0, 1.0], [90.0, 3.0]]])
    area = np.array([1000.0, 250.0])
    sigmas = np.array([0.026, 0.079, 0.107])
    ks = keypoint_similarity(*(torch.tensor(a, dtype=torch.float64) for a in (pred, gt, area, sigmas)))
    np.testing.assert_allclose(ks.numpy(), coco_oks_term_numpy(pred, gt, area, sigmas), rtol=1e-12)
    assert ks[0, 0] == 1.0  # exact hit
    # A hand value: d = 5, area 1000, sigma 0.079 -> exp(-25 / (2 * 1000 * 0.158**2))
    assert math.isclose(float(ks[0, 1]), math.exp(-25 / (2 * 1000 * 0.158**2)), rel_tol=1e-12)


def test_keypoint_similarity_equals_pycocotools_oks_for_one_keypoint():
    """With one labelled keypoint, COCO's OKS is exactly that keypoint's KS."""
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    from rspose_tune.mmpose_adapter.heads import keypoint_similarity

    sigmas = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                       0.107, 0.107, 0.087, 0.087, 0.089, 0.089])  # fmt: skip
    ev = cocoeval.COCOeval(iouType="keypoints")
    ev.params.kpt_oks_sigmas = sigmas
    gt_kpts = np.zeros((17, 3))
    gt_kpts[5] = [120.0, 80.0, 2]
    dt_kpts = np.zeros((17, 3))
    dt_kpts[5] = [126.0, 72.0, 1]
    ev._gts = {(1, 1): [dict(keypoints=gt_kpts.ravel().tolist(), area=5000.0, bbox=[100, 50, 60, 100])]}
    ev._dts = {(1, 1): [dict(keypoints=dt_kpts.ravel().tolist(), score=1.0)]}
    ev.params.maxDets = [20]
    oks = ev.computeOks(1, 1)[0, 0]
    pred = torch.zeros(1, 17, 2, dtype=torch.float64)
    gt = torch.zeros(1, 17, 2, dtype=torch.float64)
    pred[0, 5] = torch.tensor([126.0, 72.0])
    gt[0, 5] = torch.tensor([120.0, 80.0])
    ks = keypoint_similarity(pred, gt, torch.tensor([5000.0], dtype=torch.float64), torch.tensor(sigmas))
    assert math.isclose(float(ks[0, 5]), float(oks), rel_tol=1e-9)


def test_validation_oks_is_the_mean_ks_of_the_labelled_keypoints():
    """Issue 17: ConfidenceOKSCorrelation's OKS is the heads' KS (one formula), averaged over v > 0."""
    from rspose_tune.mmpose_adapter.heads import keypoint_similarity
    from rspose_tune.mmpose_adapter.metrics import oks

    pred = np.array([[10.0, 20.0], [30.0, 40.0], [0.0, 0.0]])
    gt = np.array([[10.0, 20.0, 2], [33.0, 44.0, 1], [1.0, -1.0, 0]])  # the third is not labelled
    sigmas = np.array([0.026, 0.079, 0.107])
    ks = keypoint_similarity(torch.tensor(pred[None]), torch.tensor(gt[None, :, :2]), torch.tensor([1000.0],
                             dtype=torch.float64), torch.tensor(sigmas))  # fmt: skip
    assert math.isclose(oks(pred, gt, 1000.0, sigmas), float(ks[0, :2].mean()), rel_tol=1e-12)
    assert math.isnan(oks(pred, gt * [1, 1, 0], 1000.0, sigmas))


def test_keypoint_similarity_shape_errors():
    from rspose_tune.mmpose_adapter.heads import keypoint_similarity

    with pytest.raises(ValueError, match=r"\(2, 3, 2\) and \(2, 4, 2\)"):
        keypoint_similarity(torch.zeros(2, 3, 2), torch.zeros(2, 4, 2), torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match=r"`area` must have shape \(I,\)"):
        keypoint_similarity(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), torch.ones(3), torch.ones(3))


def test_parabola_refinement_is_exact_for_a_quadratic_and_near_exact_for_a_gaussian():
    from rspose_tune.mmpose_adapter.heads import refine_argmax_1d, refine_argmax_2d

    x = torch.arange(20, dtype=torch.float64)
    quad = -((x - 7.3) ** 2)
    assert math.isclose(float(refine_argmax_1d(quad[None], quad[None].argmax(-1))[0]), 7.3, abs_tol=1e-12)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    for cx, cy in [(10.3, 20.75), (0.0, 5.2), (47.0, 63.0), (30.5, 30.5)]:
        hm = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8)[None, None]
        xy = refine_argmax_2d(hm, hm.flatten(2).argmax(-1))[0, 0]
        assert torch.allclose(xy, torch.tensor([cx, cy], dtype=hm.dtype), atol=0.02), (cx, cy, xy)


def in_crop(sample, kind: str, margin: float) -> np.ndarray:
    """Which GT keypoints land inside the network input (margin in input pixels), by MMPose's warp."""
    from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix

    meta = sample.metainfo
    warp_fn = get_udp_warp_matrix if kind == "udp" else get_warp_matrix
    rot = float(np.asarray(meta.get("bbox_rotation", [0.0])).reshape(-1)[0])
    warp = warp_fn(np.asarray(meta["input_center"]), np.asarray(meta["input_scale"]), rot, meta["input_size"])
    kpts = sample.gt_instances.keypoints[0]
    xy = kpts @ warp[:, :2].T + warp[:, 2]
    w, h = meta["input_size"]
    return (xy[:, 0] >= margin) & (xy[:, 0] <= w - 1 - margin) & (xy[:, 1] >= margin) & (xy[:, 1] <= h - 1 - margin)


def perfect_coords(kind: str, samples) -> torch.Tensor:
    """Decoded, refined arg-max of the targets themselves (a perfect prediction)."""
    from rspose_tune.mmpose_adapter.heads import refine_argmax_1d, refine_argmax_2d

    if kind == "simcc":
        gx = torch.cat([s.gt_instance_labels.keypoint_x_labels for s in samples])
        gy = torch.cat([s.gt_instance_labels.keypoint_y_labels for s in samples])
        return torch.stack([refine_argmax_1d(gx, gx.argmax(-1)), refine_argmax_1d(gy, gy.argmax(-1))], -1)
    hm = torch.stack([s.gt_fields.heatmaps for s in samples])
    return refine_argmax_2d(hm, hm.flatten(2).argmax(-1))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_perfect_prediction_gives_ks_one_in_original_image(kind, coco_batches):
    """The target's own peak, decoded and mapped back (with flips and rotations), hits the GT.

    Tolerances are the codecs' own quantization: UDP keeps sub-pixel centres (the refinement is
    within 0.02 heatmap px), MSRA rounds the centre to a heatmap pixel (<= 0.5 px per axis),
    SimCC to a bin (<= 0.5 bin per axis).
    """
    cfg, samples = coco_batches[kind]
    head = build_model(cfg).head
    coords = perfect_coords(kind, samples)
    ks, visible = head._instance_similarity(coords, samples, cfg.model.train_cfg)
    pred = head._original_coords(coords, samples).numpy()
    kw = torch.cat([s.gt_instance_labels.keypoint_weights for s in samples]).numpy() > 0
    assert any(abs(float(s.metainfo["bbox_rotation"][0])) > 1 for s in samples)  # rotations covered
    assert any(s.metainfo["flip"] for s in samples)  # flips covered
    factor, _ = head._input_factor()
    quant = {"udp": 0.03, "msra": 0.5, "simcc": 0.5}[kind]  # per axis, heatmap px / bins
    checked = 0
    for i, s in enumerate(samples):
        ok = in_crop(s, kind, margin=2 * float(factor.max())) & kw[i] & visible[i].numpy()
        px_per_input = np.asarray(s.metainfo["input_scale"]) / np.asarray(s.metainfo["input_size"])
        bound = math.hypot(*(quant * factor * px_per_input * 1.01)) + 1e-3  # original px
        d = np.linalg.norm(pred[i] - s.gt_instances.keypoints[0], axis=-1)
        assert (d[ok] <= bound).all(), (i, d[ok].max(), bound)
        checked += int(ok.sum())
    assert checked > 200
    valid = torch.as_tensor(np.stack([in_crop(s, kind, 2 * float(factor.max())) for s in samples])) & visible
    if kind in ("udp", "simcc"):
        assert float(ks[valid].min()) > 0.99
    assert float(ks[valid].mean()) > 0.97


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_mapping_equals_mmpose_decode_and_add_pred_without_rotation(kind, coco_batches):
    """Without rotation, index → original pixels is MMPose's codec ``decode`` scale followed by
    ``TopdownPoseEstimator.add_pred_to_datasample`` (``kp / input_size * scale + center - scale / 2``)."""
    cfg, samples = coco_batches[kind]
    head = build_model(cfg).head
    samples = [copy.deepcopy(s) for s in samples[:6]]
    for s in samples:
        s.set_metainfo(dict(bbox_rotation=np.zeros(1, dtype=np.float32)))
    coords = torch.rand(6, 17, 2) * 40
    codec = head.decoder
    kp = coords.numpy().astype(np.float64)
    if kind == "udp":  # UDPHeatmap.decode
        kp = kp / (np.asarray(codec.heatmap_size) - 1) * np.asarray(codec.input_size)
    elif kind == "msra":  # MSRAHeatmap.decode
        kp = kp * codec.scale_factor
    else:  # SimCCLabel.decode
        kp = kp / codec.simcc_split_ratio
    for i, s in enumerate(samples):
        m = s.metainfo
        kp[i] = kp[i] / np.asarray(m["input_size"]) * m["input_scale"] + m["input_center"] - 0.5 * m["input_scale"]
    np.testing.assert_allclose(head._original_coords(coords, samples).numpy(), kp, rtol=1e-5, atol=1e-3)


def test_missing_rotation_is_assumed_zero_and_warned_once(data_dir):
    from mmengine.logging import MMLogger

    cfg = shrunk_config("udp")
    samples = samples_of(build_dataset(cfg, data_dir, with_rotation_meta=False), 4)
    assert "bbox_rotation" not in samples[0].metainfo
    head = build_model(cfg).head
    logger = MMLogger.get_current_instance()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        for _ in range(2):
            head._original_coords(torch.zeros(4, 17, 2), samples)
    finally:
        logger.removeHandler(handler)
    assert sum("bbox_rotation" in m for m in messages) == 1


@pytest.mark.parametrize("source", ["train_cfg_sigmas", "train_cfg_metainfo", "test_cfg", "sample_metainfo"])
def test_sigmas_come_from_the_dataset_metainfo(source, coco_batches):
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    cfg, samples = coco_batches["udp"]
    head = build_model(cfg).head
    sigmas = parse_pose_metainfo(dict(from_file=mim_path("_base_", "datasets", "coco.py")))["sigmas"]
    samples = [copy.deepcopy(s) for s in samples[:4]]
    train_cfg = {}
    if source == "train_cfg_sigmas":
        train_cfg = dict(sigmas=list(sigmas))
    elif source == "train_cfg_metainfo":
        train_cfg = dict(cfg.model.train_cfg)
    elif source == "test_cfg":
        head.test_cfg = dict(metainfo=dict(sigmas=list(sigmas)))
    else:
        for s in samples:
            s.set_metainfo(dict(sigmas=sigmas))
    np.testing.assert_array_equal(head._sigmas(train_cfg, samples, 17), np.asarray(sigmas, dtype=np.float32))
    # They change KS: doubled sigmas give higher similarity for imperfect predictions.
    coords = perfect_coords("udp", samples) + 1.5
    ks1, _ = head._instance_similarity(coords, samples, dict(sigmas=list(sigmas)))
    ks2, _ = head._instance_similarity(coords, samples, dict(sigmas=list(2 * sigmas)))
    assert (ks2 >= ks1).all() and (ks2 > ks1).any()


def test_missing_or_wrong_sigmas_raise(coco_batches):
    cfg, samples = coco_batches["udp"]
    head = build_model(cfg).head
    head.test_cfg = {}
    with pytest.raises(ValueError, match="needs the dataset's keypoint `sigmas`.*from_file"):
        head._sigmas({}, samples[:2], 17)
    with pytest.raises(ValueError, match=r"shape \(3,\).*K=17"):
        head._sigmas(dict(sigmas=[0.1, 0.2, 0.3]), samples[:2], 17)


@pytest.mark.parametrize("name", ["coco", "crowdpose", "mpii"])
def test_area_from_annotation_or_053_bbox(name, data_dir):
    import json

    from rspose_tune.mmpose_adapter.heads import BBOX_AREA_FACTOR
    from rspose_tune.mmpose_adapter.heads._instance_sort import _InstanceSortMixin

    k = {"coco": 17, "crowdpose": 14, "mpii": 16}[name]
    cfg = shrunk_config("udp", num_keypoints=k, meta=name)
    ds = build_dataset(cfg, data_dir, name)
    sample = samples_of(ds, 1)[0]
    area = _InstanceSortMixin._area(sample)
    if name == "coco":
        anns = json.loads((data_dir / "coco" / "test_coco.json").read_text())["annotations"]
        assert area == next(a["area"] for a in anns if a["id"] == sample.metainfo["id"])
    else:
        x1, y1, x2, y2 = sample.gt_instances.bboxes[0]
        assert math.isclose(area, BBOX_AREA_FACTOR * (x2 - x1) * (y2 - y1), rel_tol=1e-6)
    # Instance Sort runs on these datasets too (their own sigmas, K).
    model = build_model(cfg)
    samples = samples_of(ds, 4)
    ks, _ = model.head._instance_similarity(perfect_coords("udp", samples), samples, cfg.model.train_cfg)
    assert ks.shape == (4, k) and torch.isfinite(ks).all()


def test_area_packed_in_gt_instances_wins(coco_batches):
    from rspose_tune.mmpose_adapter.heads._instance_sort import _InstanceSortMixin

    sample = copy.deepcopy(coco_batches["udp"][1][0])
    sample.gt_instances.area = np.array([123.0], dtype=np.float32)
    assert _InstanceSortMixin._area(sample) == 123.0
    del sample.gt_instances.area
    sample.set_metainfo(dict(raw_ann_info={}))
    del sample.gt_instances.bboxes
    with pytest.raises(ValueError, match="needs the object area"):
        _InstanceSortMixin._area(sample)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("kind", ["udp", "simcc"])
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


def test_coeff_inst_zero_skips_instance_sort(coco_batches, monkeypatch):
    import rspose_tune.losses
    from rspose_tune.mmpose_adapter.heads._instance_sort import _InstanceSortMixin

    def boom(*args, **kwargs):
        raise AssertionError("Instance Sort must not be computed when coeff_inst=0")

    monkeypatch.setattr(rspose_tune.losses, "instance_sort", boom)
    monkeypatch.setattr(_InstanceSortMixin, "_instance_similarity", boom)
    out = head_losses("udp", coco_batches, dict(coeff_inst=0.0))
    assert "loss_inst" not in out and {"loss_rank", "loss_sort", "acc_pose"} <= set(out)


@pytest.mark.parametrize("kind", ["udp", "msra", "simcc"])
def test_instance_sort_gradient_reaches_only_argmax_locations(kind, coco_batches):
    cfg, samples = coco_batches[kind]
    cfg = copy.deepcopy(cfg)
    cfg.model.head.loss.update(coeff_rank=0.0, coeff_sort=0.0)
    head = build_model(cfg).head
    samples = samples[:8]
    torch.manual_seed(0)
    if kind == "simcc":
        preds = (torch.randn(8, 17, 384, requires_grad=True), torch.randn(8, 17, 512, requires_grad=True))
        head.forward = lambda feats: preds
    else:
        shape = (8, 17, 64, 48)
        preds = (torch.randn(shape, requires_grad=True),)
        head.forward = lambda feats: preds[0]
    out = head.loss(None, samples, train_cfg=cfg.model.train_cfg)
    assert set(out) == {"loss_inst", "acc_pose"}
    out["loss_inst"].backward()
    grads = [p.grad for p in preds]
    nonzero = sum(int(torch.count_nonzero(g)) for g in grads)
    assert nonzero > 0
    if kind == "simcc":
        # per (instance, keypoint): at most the arg-max bin of x and of y
        support = [(g != 0).sum(-1) for g in grads]
        assert int((support[0] + support[1]).max()) <= 2
        for p, g in zip(preds, grads):
            idx = (g != 0).nonzero()
            assert (idx[:, 2] == p.detach().argmax(-1)[idx[:, 0], idx[:, 1]]).all()
    else:
        g = grads[0].flatten(2)
        assert int((g != 0).sum(-1).max()) <= 1
        idx = (g != 0).nonzero()
        assert (idx[:, 2] == preds[0].detach().flatten(2).argmax(-1)[idx[:, 0], idx[:, 1]]).all()


def test_invisible_keypoints_are_excluded_from_instance_sort(coco_batches, monkeypatch):
    import rspose_tune.losses

    seen = {}
    real = rspose_tune.losses.instance_sort

    def spy(scores, ks, weights=None, **kwargs):
        seen["weights"] = weights.clone()
        return real(scores, ks, weights, **kwargs)

    monkeypatch.setattr(rspose_tune.losses, "instance_sort", spy)
    cfg, samples = coco_batches["udp"]
    samples = [copy.deepcopy(s) for s in samples[:6]]
    samples[0].gt_instances.keypoints_visible[0, 3] = 0  # invisible in the annotation
    samples[1].gt_instance_labels.keypoint_weights[0, 4] = 0  # zero target weight
    head_cfg = copy.deepcopy(cfg)
    model = build_model(head_cfg)
    model.head.loss(model.extract_feat(torch.randn(6, 3, 256, 192)), samples, train_cfg=cfg.model.train_cfg)
    w = seen["weights"]
    assert w[0, 3] == 0 and w[1, 4] == 0
    kw = torch.cat([s.gt_instance_labels.keypoint_weights for s in samples])
    vis = torch.as_tensor(np.concatenate([s.gt_instances.keypoints_visible for s in samples]))
    torch.testing.assert_close(w, ((kw > 0) & (vis > 0)).float())


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
              pipeline=train_pipeline(cfg))  # fmt: skip
    cfg.train_dataloader = dict(
        batch_size=6, num_workers=0, persistent_workers=False,
        sampler=dict(type="DefaultSampler", shuffle=True), dataset=ds,
    )  # fmt: skip
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


def test_step_benchmark_runs_and_prints_the_ratio(capsys):
    from rspose_tune.bench import _step

    args = ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--embed-dims", "32",
            "--num-layers", "1", "--num-heads", "2"]  # fmt: skip
    assert _step.main(args) == 0
    out = capsys.readouterr().out
    assert "HeatmapHead + KeypointMSELoss" in out and "ratio RSPose / MSE (wall medians):" in out
    assert "extra loss time (cpu)" in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--batch-size", "0"], "--batch-size is 0"),
        (["--embed-dims", "10", "--num-heads", "3"], "divisible"),
        (["--device", "tpu"], "--device must be one of"),
        (["--warmup", "-1"], "--warmup is -1"),
    ],
)
def test_step_benchmark_rejects_bad_arguments(args, match, capsys):
    from rspose_tune.bench import _step

    with pytest.raises(SystemExit):
        _step.main(args)
    assert match in capsys.readouterr().err
