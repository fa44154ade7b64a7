"""rspose_tune.mmpose_adapter.heads._instance_sort: the arg-max mapped back to original-image pixels (flips,
rotations), the sigmas and areas Instance Sort uses, its gradient and which keypoints it sees."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch

from tests.mmpose_adapter.conftest import (
    CONFIGS,
    build_dataset,
    build_model,
    head_losses,
    mim_path,
    samples_of,
    shrunk_config,
)

pytestmark = pytest.mark.usefixtures("mmpose_ready")


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
