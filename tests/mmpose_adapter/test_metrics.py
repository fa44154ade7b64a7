"""rspose_tune.mmpose_adapter.metrics: the validation OKS of ConfidenceOKSCorrelation is the heads' KS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("mmpose_ready")


def test_validation_oks_is_the_mean_ks_of_the_labelled_keypoints():
    """Issue 17: ConfidenceOKSCorrelation's OKS is the heads' KS (one formula), averaged over v > 0."""
    from rspose_tune.mmpose_adapter.heads import keypoint_similarity
    from rspose_tune.mmpose_adapter.metrics import oks

    pred = np.array([[10.0, 20.0], [30.0, 40.0], [0.0, 0.0]])
    gt = np.array([[10.0, 20.0, 2], [33.0, 44.0, 1], [1.0, -1.0, 0]])  # the third is not labelled
    sigmas = np.array([0.026, 0.079, 0.107])
    ks = keypoint_similarity(torch.tensor(pred[None]), torch.tensor(gt[None, :, :2]), torch.tensor([1000.0],
                             dtype=torch.float64), torch.tensor(sigmas))
    assert math.isclose(oks(pred, gt, 1000.0, sigmas), float(ks[0, :2].mean()), rel_tol=1e-12)
    assert math.isnan(oks(pred, gt * [1, 1, 0], 1000.0, sigmas))
