"""Calibrated decoding beside the MMPose codecs it extends (``UDPHeatmap``, ``MSRAHeatmap``,
``SimCCLabel``), with the calibration of :mod:`._calibration`.

Decoding (:func:`decode_calibrated_heatmaps`, :func:`decode_calibrated_simcc`): position =
arg-max (the raw logits' arg-max), refined by the codec's usual refinement (DARK-UDP, DARK or
the quarter-pixel shift; SimCC DARK) applied to the calibrated map shifted so its peak is 1
and floored at 0 (never -1, whatever the sign); confidence = calibrated peak clipped to [0, 1].
Everything downstream (CocoMetric's instance score, ``keypoint_score_thr``, OKS-NMS, the
Spearman metric of :mod:`rspose_tune.mmpose_adapter.metrics`) sees only these confidences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mmpose.codecs import MSRAHeatmap, SimCCLabel, UDPHeatmap
from mmpose.codecs.utils import refine_keypoints, refine_keypoints_dark, refine_keypoints_dark_udp, refine_simcc_dark

__all__ = ["decode_calibrated_heatmaps", "decode_calibrated_simcc"]


def _refinement_input(calibrated: np.ndarray) -> np.ndarray:
    """The map handed to a codec's refinement: the calibrated map shifted so that its peak is 1
    (per instance and keypoint; the last axes are the map), floored at 0.

    The codecs' refinements blur, clip to [1e-3, 50] and take logarithms, so they need a
    positive peak; the shift gives them one whatever the calibrated level, and keeps the
    calibrated scale (one unit = the training range of the peaks)."""
    axes = tuple(range(2, calibrated.ndim))
    out = calibrated - calibrated.max(axis=axes, keepdims=True) + 1.0
    return np.maximum(out, 0.0).astype(np.float32)


def decode_calibrated_heatmaps(heatmaps: np.ndarray, codec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and confidences from calibrated heatmaps, never -1 for a low peak.

    Note:
        - B: instances, K: keypoints, H, W: heatmap height and width.

    Args:
        heatmaps: (B, K, H, W) calibrated heatmaps (:func:`minmax_calibrate`).
        codec: the head's decoder: ``UDPHeatmap`` (``heatmap_type='gaussian'``, DARK-UDP
            refinement) or ``MSRAHeatmap`` (DARK if ``unbiased``, else the quarter-pixel shift).

    Returns:
        keypoints (B, K, 2) in input-image pixels: the arg-max with the codec's refinement (on
        :func:`_refinement_input`) and scale; scores (B, K): calibrated peaks clipped to [0, 1].
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"`heatmaps` must have shape (B, K, H, W), got {heatmaps.shape}")
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    index = flat.argmax(axis=2)
    scores = np.clip(flat.max(axis=2), 0.0, 1.0).astype(np.float32)
    locs = np.stack([index % w, index // w], axis=-1).astype(np.float32)  # (B, K, 2)
    refine_in = _refinement_input(heatmaps)
    keypoints = np.empty_like(locs)
    for i in range(b):
        kpts = locs[i : i + 1].copy()  # (1, K, 2)
        maps = refine_in[i].copy()  # the refinements blur in place
        if isinstance(codec, UDPHeatmap) and codec.heatmap_type == "gaussian":
            kpts = refine_keypoints_dark_udp(kpts, maps, blur_kernel_size=codec.blur_kernel_size)
            kpts = kpts / [w - 1, h - 1] * np.asarray(codec.input_size)
        elif isinstance(codec, MSRAHeatmap):
            if codec.unbiased:
                kpts = refine_keypoints_dark(kpts, maps, blur_kernel_size=codec.blur_kernel_size)
            else:
                kpts = refine_keypoints(kpts, maps)
            kpts = kpts * codec.scale_factor
        else:
            raise ValueError(
                "RSPoseHeatmapHead decodes calibrated heatmaps with the `UDPHeatmap` "
                "(heatmap_type='gaussian') or `MSRAHeatmap` codec, got "
                f"{type(codec).__name__ if codec is not None else None} as `decoder`"
            )
        keypoints[i] = kpts[0]
    return keypoints, scores


def _simcc_blur(sigma: float) -> int:
    """SimCCLabel.decode's DARK blur kernel size for ``sigma``."""
    blur = int((sigma * 20 - 7) // 3)
    return blur - int(blur % 2 == 0)


def decode_calibrated_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, codec: Any
) -> tuple[np.ndarray, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Keypoints and confidences from calibrated SimCC vectors, never -1 for a low peak.

    Note:
        - B: instances, K: keypoints, Wx, Wy: bins along x and y.

    Args:
        simcc_x, simcc_y: (B, K, Wx), (B, K, Wy) calibrated vectors (each axis with its own
            statistics, :func:`minmax_calibrate`).
        codec: the head's ``SimCCLabel`` decoder (DARK refinement when ``use_dark``).

    Returns:
        keypoints (B, K, 2), input-image pixels: the arg-max per axis with the codec's
        refinement (on :func:`_refinement_input`) over ``simcc_split_ratio``; scores (B, K):
        ``min(max_x, max_y)`` of the calibrated vectors clipped to [0, 1] (with
        ``decode_visibility``, ``(scores, visibility)`` as the codec returns, the visibility
        from the codec's softmax of the calibrated vectors).
    """
    if not isinstance(codec, SimCCLabel):
        raise ValueError(
            "RSPoseSimCCHead decodes calibrated SimCC vectors with the `SimCCLabel` codec, got "
            f"{type(codec).__name__ if codec is not None else None} as `decoder`"
        )
    if simcc_x.ndim != 3 or simcc_y.shape[:2] != simcc_x.shape[:2] or simcc_y.ndim != 3:
        raise ValueError(
            f"`simcc_x` and `simcc_y` must have shapes (B, K, Wx) and (B, K, Wy), got "
            f"{simcc_x.shape} and {simcc_y.shape}"
        )
    locs = np.stack([simcc_x.argmax(axis=2), simcc_y.argmax(axis=2)], axis=-1).astype(np.float32)
    scores = np.clip(np.minimum(simcc_x.max(axis=2), simcc_y.max(axis=2)), 0.0, 1.0).astype(np.float32)
    if codec.use_dark:
        locs[..., 0] = refine_simcc_dark(locs[..., 0], _refinement_input(simcc_x), _simcc_blur(codec.sigma[0]))
        locs[..., 1] = refine_simcc_dark(locs[..., 1], _refinement_input(simcc_y), _simcc_blur(codec.sigma[1]))
    keypoints = locs / codec.simcc_split_ratio
    if codec.decode_visibility:
        from mmpose.codecs.utils import get_simcc_maximum

        _, visibility = get_simcc_maximum(
            simcc_x * codec.decode_beta * codec.sigma[0],
            simcc_y * codec.decode_beta * codec.sigma[1],
            apply_softmax=True,
        )
        return keypoints, (scores, visibility)
    return keypoints, scores
