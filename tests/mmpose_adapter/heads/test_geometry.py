"""rspose_tune.mmpose_adapter.heads._geometry: keypoint similarity (COCO's OKS term) and the parabola
refinement of the arg-max."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("mmpose_ready")


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
                       0.107, 0.107, 0.087, 0.087, 0.089, 0.089])
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
