"""The mmengine hook every rank registers: loss checks, and after each validation a report.

No Ray here: the report function is passed in (the trainable passes :func:`tune_report`; tests
and benchmarks pass their own), so a rank also runs without Ray.
"""

from __future__ import annotations

import math
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmengine.dist import get_world_size
from mmengine.hooks import Hook

from rspose_tune.losses import NonFiniteError

from ._checkpoint import CHECKPOINT_FILE, strip_unsafe_state, write_manifest

__all__ = ["DIVERGED", "LOSS_KEYS", "LossDivergedError", "TuneReportHook"]

LOSS_KEYS = ("loss", "loss_rank", "loss_sort", "loss_inst")


class LossDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the trial ends as an error."""


#: The errors that say a trial diverged (the loss, or the logits it got, not finite): recorded, never retried.
DIVERGED = (LossDivergedError, NonFiniteError)


def _gpu_type() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


class TuneReportHook(Hook):
    """After each validation: ``tune.report`` metrics (and a checkpoint) to Ray Tune.

    Reported keys: ``epoch``, ``metric`` (the preset's metric), ``metric_name``, ``ar``, the mean
    training ``loss``/``loss_rank``/``loss_sort``/``loss_inst`` since the previous report (NaN for
    a component that is off), ``spearman`` (instance confidence vs OKS), ``wall_s``, ``node``,
    ``gpu_type``, ``world_size`` (data-parallel processes), and every evaluator metric under its MMPose name (e.g. ``coco/AP``).

    Args:
        metric: the evaluator key the search optimises, e.g. ``coco/AP``.
        trial_id: written into each checkpoint's manifest.
        report: ``report(result, checkpoint_dir_or_None)``, called once per validation; it must
            return only after the checkpoint directory was persisted (in a trial:
            the trainable's ``tune_report``, ``trainables.mmpose_trainable``).
        checkpoint: whether to attach a checkpoint to each report.
    """

    priority = "LOW"

    def __init__(self, metric: str, trial_id: str, report, checkpoint: bool = True):
        self.metric = metric
        self.trial_id = trial_id
        self._report = report
        self.checkpoint = checkpoint
        self._sums: dict[str, float] = {}
        self._count = 0
        self._start = time.monotonic()
        self._saving = False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        for key, value in outputs.items():
            if "loss" not in key:
                continue
            value = float(value.detach()) if hasattr(value, "detach") else float(value)
            if not math.isfinite(value):
                raise LossDivergedError(
                    f"training {key} became {value} at epoch {runner.epoch + 1}, iteration {runner.iter + 1}"
                )
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        strip_unsafe_state(checkpoint)
        if self._saving:  # called from after_val_epoch, where the epoch counter already moved on
            checkpoint["meta"]["epoch"] = runner.epoch
            checkpoint["meta"]["iter"] = runner.iter

    def after_val_epoch(self, runner, metrics: Mapping[str, float] | None = None) -> None:
        metrics = dict(metrics or {})
        if self.metric not in metrics:
            raise KeyError(
                f"the evaluator reported {sorted(metrics)}, but the preset's metric is {self.metric!r}"
            )
        epoch = int(runner.epoch)
        losses = {k: (self._sums[k] / self._count if self._count and k in self._sums else float("nan")) for k in LOSS_KEYS}
        ar_key = self.metric.rsplit("/", 1)[0] + "/AR" if "/" in self.metric else None
        result: dict[str, Any] = {
            **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "epoch": epoch,
            "metric": float(metrics[self.metric]),
            "metric_name": self.metric,
            "ar": float(metrics.get(ar_key, float("nan"))) if ar_key else float("nan"),
            **losses,
            "spearman": float(metrics.get("rspose/spearman", float("nan"))),
            "wall_s": time.monotonic() - self._start,
            "node": socket.gethostname(),
            "gpu_type": _gpu_type(),
            "world_size": get_world_size(),
        }
        self._sums, self._count = {}, 0
        report = self._report
        if not self.checkpoint:
            report(result, None)
            return
        with tempfile.TemporaryDirectory(prefix="rspose_ckpt_") as tmp:
            self._saving = True
            try:
                runner.save_checkpoint(tmp, CHECKPOINT_FILE, save_optimizer=True, save_param_scheduler=True)
            finally:
                self._saving = False
            write_manifest(Path(tmp), trial_id=self.trial_id, epoch=epoch)
            report(result, tmp)  # returns once the checkpoint is persisted; tmp is removed after
