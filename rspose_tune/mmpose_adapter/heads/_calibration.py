"""Confidence calibration of the RSPose heads: per-keypoint min-max statistics of the training
peaks, gathered in ``loss`` into buffers, and the calibration of logits with them.

Prediction (paper App. C): the ranking losses see only differences of logits, so a constant added
to one keypoint channel changes no loss and no gradient and nothing pins the logits' level.
MMPose's stock decoders read that level: a peak <= 0 becomes position -1, and the score that
CocoMetric thresholds (``keypoint_score_thr``), averages across keypoint types and uses for
OKS-NMS is the raw peak. The RSPose heads therefore predict from *calibrated* maps:

- statistics: per keypoint type k (and per SimCC axis), the minimum and maximum of the peak
  logit (heatmap maximum; SimCC per-axis maximum) over every training instance of the current
  training epoch, labelled or not (the same mixture a test set has), gathered in ``loss`` from
  logits it computes anyway (no extra forward; a (B, K) reduction per step). The window restarts
  at each new epoch (``MessageHub`` info ``epoch``, which mmengine's ``RuntimeInfoHook`` sets),
  so validation after epoch e and every checkpoint saved after it use exactly epoch e's range:
  logits drift during training, so earlier epochs would stretch the range. Without a Runner
  (no ``epoch`` info) the window is everything since the head was built or loaded. Under
  data parallelism the per-batch extremes are all-reduced, so every rank holds the same range.
  They live in buffers ``peak_min``/``peak_max`` (A, K) and ``peak_epoch`` (), saved in every
  checkpoint and loaded by ``tools/test.py`` and exported models;
- calibration: ``(logit - peak_min[k]) / (peak_max[k] - peak_min[k])`` per channel (and axis),
  before flip-test averaging; a constant offset per channel (or per SimCC axis) moves logits
  and statistics together, so the calibrated maps do not change.

Under an EMA of the weights (``EMAHook``; RTMPose's recipe, ``update_buffers=True``) the EMA
model's statistics are the raw head's, copied after every EMA update
(:class:`CalibrationEMAHook`, added by the config builder beside any ``EMAHook``): ExpMomentumEMA
would otherwise average them, and an average of running per-epoch windows (narrow early in each
epoch) is narrower than the range of the EMA model's own training peaks; the raw head's range is
closer to it (docs/real_backbone.md, "EMA and calibration").

Decoding with the calibrated maps: :mod:`._codecs`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmpose.registry import HOOKS
from torch import Tensor

from rspose_tune.errors import RSPoseTuneError

__all__ = ["CalibrationEMAHook", "MissingCalibrationError", "copy_calibration", "minmax_calibrate"]


class MissingCalibrationError(RSPoseTuneError, RuntimeError):
    """An RSPose head was asked to predict before it gathered any confidence statistics."""


def minmax_calibrate(logits: Tensor, peak_min: Tensor, peak_max: Tensor) -> Tensor:
    """Map logits (B, K, ...) per keypoint type to ``(logits - peak_min[k]) / (peak_max[k] - peak_min[k])``.

    ``peak_min``/``peak_max`` (K,) are the range of the training peaks of each keypoint type.
    Where the range is empty (``peak_max <= peak_min``: a window of one value), only the offset
    is removed. A calibrated peak is the keypoint's confidence (clipped to [0, 1] by the
    decoders); the calibrated map is unchanged by any constant added to a channel's logits and
    its statistics alike.
    """
    k = logits.shape[1]
    if peak_min.shape != (k,) or peak_max.shape != (k,):
        raise ValueError(
            f"`peak_min` and `peak_max` must have shape (K,) = ({k},) for logits of shape "
            f"{tuple(logits.shape)}, got {tuple(peak_min.shape)} and {tuple(peak_max.shape)}"
        )
    view = (1, k) + (1,) * (logits.dim() - 2)
    span = peak_max - peak_min
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (logits - peak_min.to(logits).view(view)) / span.to(logits).view(view)


def _training_epoch() -> int | None:
    """The Runner's current training epoch (``RuntimeInfoHook``), or None outside a Runner."""
    epoch = MessageHub.get_current_instance().get_info("epoch")
    return None if epoch is None else int(epoch)


_CALIBRATION_BUFFERS = ("peak_min", "peak_max", "peak_epoch")


class _CalibrationMixin:
    """Per-keypoint min-max confidence statistics of the training peaks (see the package docstring).

    Buffers (saved in every checkpoint, plain tensors): ``peak_min``, ``peak_max`` (A, K) with
    A = 1 (heatmap) or 2 (SimCC x, y), NaN until the first training step; ``peak_epoch`` (),
    the training epoch they come from (-1: none; also -1 for a window outside a Runner).
    """

    peak_min: Tensor
    peak_max: Tensor
    peak_epoch: Tensor
    _window: tuple | None

    def _init_calibration(self, num_axes: int, num_keypoints: int) -> None:
        nan = torch.full((num_axes, num_keypoints), float("nan"))
        self.register_buffer("peak_min", nan.clone())  # type: ignore[attr-defined]
        self.register_buffer("peak_max", nan.clone())  # type: ignore[attr-defined]
        self.register_buffer("peak_epoch", torch.tensor(-1, dtype=torch.long))  # type: ignore[attr-defined]
        self._window = None  # not saved: the first step after building or loading starts a window

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        """Weights without statistics load, even strictly (a checkpoint from before they existed,
        a stock head's weights): the statistics stay unset and ``predict`` says so."""
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name in _CALIBRATION_BUFFERS:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)

    @torch.no_grad()
    def _gather_peak_statistics(self, peaks: Tensor) -> None:
        """Fold the training peaks (A, B, K) of one batch into the current window's range."""
        peaks = peaks.detach().float()
        if peaks.dim() != 3 or peaks.shape[0] != self.peak_min.shape[0] or peaks.shape[2] != self.peak_min.shape[1]:
            raise ValueError(
                f"peaks must have shape (A, B, K) = ({self.peak_min.shape[0]}, B, {self.peak_min.shape[1]}), "
                f"got {tuple(peaks.shape)}"
            )
        # one all-reduce (MAX) of (-min, max): every data-parallel rank folds in the same range. A
        # rank with an empty batch still joins it (with MAX's identity, -inf), or the others would
        # wait for it forever.
        if peaks.shape[1] == 0:
            extremes = peaks.new_full((2, peaks.shape[0], peaks.shape[2]), -math.inf)
        else:
            extremes = torch.stack([-peaks.amin(dim=1), peaks.amax(dim=1)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        if torch.isneginf(extremes).all():
            return  # no rank had a peak this step
        batch_min, batch_max = -extremes[0], extremes[1]
        epoch = _training_epoch()
        window = ("epoch", epoch) if epoch is not None else ("head", id(self))
        if window != self._window:
            self._window = window
            self.peak_min.copy_(batch_min)
            self.peak_max.copy_(batch_max)
            self.peak_epoch.fill_(-1 if epoch is None else epoch)
        else:
            torch.minimum(self.peak_min, batch_min, out=self.peak_min)
            torch.maximum(self.peak_max, batch_max, out=self.peak_max)

    def _calibrate(self, logits: Tensor, axis: int = 0) -> Tensor:
        """:func:`minmax_calibrate` with this head's statistics of ``axis`` (0; SimCC: 0 x, 1 y)."""
        lo, hi = self.peak_min[axis], self.peak_max[axis]
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise MissingCalibrationError(
                f"{type(self).__name__} has no confidence statistics (peak_min/peak_max are not set): "
                "they are gathered in training and saved in checkpoints. Train the model, or load a "
                "checkpoint of an RSPose head trained with them (a checkpoint from before they existed "
                "lacks the keys `head.peak_min`/`head.peak_max`)"
            )
        return minmax_calibrate(logits, lo, hi)


def copy_calibration(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Copy the calibration buffers of every RSPose head in ``src`` into the module of the same
    name in ``dst`` (a copy of the same model, e.g. its EMA). Returns how many heads were copied."""
    targets = dict(dst.named_modules())
    copied = 0
    for name, module in src.named_modules():
        if isinstance(module, _CalibrationMixin):
            target = targets[name]
            for buffer in _CALIBRATION_BUFFERS:
                getattr(target, buffer).copy_(getattr(module, buffer))
            copied += 1
    return copied


@HOOKS.register_module()
class CalibrationEMAHook(Hook):
    """After each EMA update, give the EMA model the raw heads' calibration statistics.

    ``EMAHook(update_buffers=True)`` averages every float buffer, ``peak_min``/``peak_max``
    included, so the EMA model would calibrate with a moving average of the raw model's running
    per-epoch windows. This hook copies them (and ``peak_epoch``) instead, so the EMA model
    validates, is saved and exports with the range of the latest training epoch's peaks, as an
    RSPose head without EMA does. Priority ``BELOW_NORMAL``: after an ``EMAHook`` of priority
    ``NORMAL`` or higher (RTMPose: 49). No ``EMAHook``: nothing to do.
    """

    priority = "BELOW_NORMAL"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from mmengine.hooks import EMAHook

        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, "ema_model"):
                copy_calibration(hook.src_model, hook.ema_model.module)
