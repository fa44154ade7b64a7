"""Validation metric: how well instance confidences rank instances by their pose quality.

RSPose's Instance Sort aims to make a prediction's confidence follow its keypoint similarity
(OKS) with the ground truth; the paper measures this with the Spearman rank correlation between
the two over the validation set (Table 5). :class:`ConfidenceOKSCorrelation` computes it for
top-down models, one instance per data sample. For RSPose heads the keypoint scores it reads are
already calibrated (per-keypoint min-max of training peaks, see
:mod:`rspose_tune.mmpose_adapter.heads`), so the confidence, like CocoMetric's instance score,
does not depend on the logits' arbitrary level.
"""

from __future__ import annotations

from collections.abc import Sequence

import functools

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmpose.registry import METRICS

from rspose_tune.mmpose_adapter.heads import BBOX_AREA_FACTOR, keypoint_similarity

__all__ = ["ConfidenceOKSCorrelation", "instance_confidence", "oks", "spearman"]


def oks(pred_xy: np.ndarray, gt_xyv: np.ndarray, area: float, sigmas: np.ndarray) -> float:
    """COCO object keypoint similarity of one prediction against one ground truth.

    Note:
        - K: number of keypoints

    Args:
        pred_xy: (K, 2) predicted keypoints, original-image pixels.
        gt_xyv: (K, 3) ground-truth x, y and visibility (COCO ``v``; v > 0 is labelled).
        area: the ground-truth area (COCO ``area``, or 0.53 x box area where a dataset has none).
        sigmas: (K,) per-keypoint COCO sigmas from the dataset meta.

    Returns:
        mean over labelled keypoints of exp(-d^2 / (2 * area * (2 sigma)^2)); NaN if none labelled.
    """
    visible = gt_xyv[:, 2] > 0
    if not visible.any():
        return float("nan")
    as_tensor = functools.partial(torch.as_tensor, dtype=torch.float64)
    ks = keypoint_similarity(as_tensor(pred_xy[visible][None]), as_tensor(gt_xyv[visible, :2][None]),
                             as_tensor([area]), as_tensor(sigmas[visible]))  # the heads' KS, one formula
    return float(ks.mean())


def instance_confidence(keypoint_scores: np.ndarray, score_thr: float = 0.2) -> float:
    """The instance score CocoMetric ranks by (with ground-truth boxes): mean of scores > thr."""
    keep = keypoint_scores > score_thr
    return float(keypoint_scores[keep].mean()) if keep.any() else 0.0


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for < 2 points or constant input."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


@METRICS.register_module()
class ConfidenceOKSCorrelation(BaseMetric):
    """Spearman correlation between instance confidence and OKS on the validation set.

    Reads ground truth from each sample's ``raw_ann_info`` (top-down datasets keep it), so it
    works for COCO, CrowdPose and COCO-format data. Areas: the annotation's ``area`` if present,
    else 0.53 x the box area (as CrowdPose/MPII evaluation conventions do).

    Args:
        score_thr: keypoint-score threshold of the confidence (CocoMetric's default, 0.2).
        prefix: metric key prefix; the result key is ``<prefix>/spearman``.
    """

    default_prefix = "rspose"

    def __init__(self, score_thr: float = 0.2, collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.score_thr = score_thr

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        sigmas = np.asarray(self.dataset_meta["sigmas"], dtype=float)
        for sample in data_samples:
            anns = sample.get("raw_ann_info")
            if anns is None:
                raise KeyError("ConfidenceOKSCorrelation needs `raw_ann_info` in the data samples")
            ann = anns[0] if isinstance(anns, list) else anns
            gt = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
            if "area" in ann and ann["area"] > 0:
                area = float(ann["area"])
            else:
                _, _, w, h = ann["bbox"]
                area = BBOX_AREA_FACTOR * float(w) * float(h)
            pred = sample["pred_instances"]
            pred_xy = np.asarray(pred["keypoints"], dtype=float)[0]
            scores = np.asarray(pred["keypoint_scores"], dtype=float)[0]
            self.results.append((instance_confidence(scores, self.score_thr), oks(pred_xy, gt, area, sigmas)))

    def compute_metrics(self, results: list) -> dict[str, float]:
        conf = [c for c, _ in results]
        sim = [s for _, s in results]
        return {"spearman": spearman(conf, sim)}
