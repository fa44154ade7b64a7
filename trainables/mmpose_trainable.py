"""The Ray Tune function trainable: one trial = one MMPose training run with RSPose losses.

Thin by design: resolve the config (:func:`rspose_tune.mmpose_adapter.configs.build_config`),
train with mmengine's Runner in the trial's own directory, and after every validation call
``tune.report`` with the metrics and a checkpoint (:class:`TuneReportHook`).

Use it as::

    trainable = tune.with_parameters(train_rspose, preset=preset, seed=0)
    tune.Tuner(tune.with_resources(trainable, {"cpu": 1, "gpu": 1}), ...)

``config`` (what the searcher proposes) holds the six loss hyperparameters
(``delta_rank, coeff_rank, delta_sort, coeff_sort, delta_inst, coeff_inst``; coefficient 0 or
None = component off). On start the trial resumes from ``tune.get_checkpoint()`` if there is one
(ASHA promotion, retries after a failure, ``--resume``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.dist import get_world_size
from mmengine.hooks import Hook

from rspose_tune.spaces import PARAM_NAMES

from ._checkpoint import (
    CHECKPOINT_FILE,
    safe_checkpoint_loading,
    strip_unsafe_state,
    verify_checkpoint_dir,
    write_manifest,
)

__all__ = ["LossDivergedError", "TuneReportHook", "prepare_trial_config", "train_rspose"]

LOSS_KEYS = ("loss", "loss_rank", "loss_sort", "loss_inst")
RESOLVED_CONFIG = "resolved_config.py"
TRIAL_META = "trial.json"


class LossDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the trial ends as an error."""


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
            return only after the checkpoint directory was persisted. Default :func:`tune_report`.
        checkpoint: whether to attach a checkpoint to each report.
    """

    priority = "LOW"

    def __init__(self, metric: str, trial_id: str, report=None, checkpoint: bool = True):
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
        report = self._report or tune_report
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


def tune_report(result: Mapping[str, Any], checkpoint_dir: str | None) -> None:
    """Report to Ray Tune, with the checkpoint in ``checkpoint_dir`` if given (persisted on return)."""
    import ray
    from ray import tune

    result = dict(result)
    if ray.is_initialized():  # tell nodes of one host apart (e.g. several nodes per machine)
        result["node"] = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    if checkpoint_dir is None:
        tune.report(dict(result))
    else:
        tune.report(dict(result), checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))


def prepare_trial_config(preset, params: Mapping[str, Any], trial_dir: Path, *, seed: int = 0, **build_options):
    """Build the trial's MMPose config and save it (and the seed) beside the trial's results.

    ``build_options`` go to :func:`rspose_tune.mmpose_adapter.configs.build_config`
    (``max_epochs``, ``val_interval``, ``batch_size``, ``num_workers``, ``shrink``, ``scratch``).
    """
    from rspose_tune.mmpose_adapter import setup_mmpose
    from rspose_tune.mmpose_adapter.configs import build_config

    setup_mmpose()
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = build_config(preset, params, work_dir=trial_dir / "mmpose", seed=seed, **build_options)
    cfg.dump(str(trial_dir / RESOLVED_CONFIG))
    meta = {"preset": preset.name, "seed": int(seed), "params": dict(params)}
    (trial_dir / TRIAL_META).write_text(json.dumps(meta, indent=1, default=str))
    return cfg


def train_rspose(
    config: Mapping[str, Any],
    *,
    preset,
    seed: int = 0,
    max_epochs: int | None = None,
    val_interval: int | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    shrink: bool = False,
    scratch: bool = False,
    hooks: Sequence[Hook] = (),
    world_size: int = 1,
) -> None:
    """Ray Tune function trainable (see module docstring).

    Args:
        config: the six loss hyperparameters (from the searcher).
        preset: the :class:`rspose_tune.spaces.Preset` being searched.
        seed: training seed (saved beside the trial's results).
        max_epochs, val_interval: override the preset's budget.
        batch_size, num_workers: data-loader overrides.
        shrink: tiny backbone of the same family (tests and smoke runs).
        scratch: no pretrained weights even if the base config names remote ones.
        hooks: extra mmengine hooks registered on the Runner (e.g. for custom logging);
            single-process trials only.
        world_size: data-parallel processes for this trial (one per GPU; on CPU, gloo). The
            search CLI sets it to the number of GPUs a trial asks for.
    """
    if world_size < 1:
        raise ValueError(f"`world_size` must be >= 1, got {world_size}")
    from mmengine.runner import Runner
    from ray import tune

    context = tune.get_context()
    trial_id = context.get_trial_id() or "local"
    trial_dir = Path(context.get_trial_dir() or os.getcwd())
    params = {k: config.get(k) for k in PARAM_NAMES}
    _ensure_generated_data(preset)
    cfg = prepare_trial_config(
        preset,
        params,
        trial_dir,
        seed=seed,
        max_epochs=max_epochs,
        val_interval=val_interval,
        batch_size=batch_size,
        num_workers=num_workers,
        shrink=shrink,
        scratch=scratch,
    )
    resume_from = _restore_checkpoint(trial_dir, trial_id)
    if world_size > 1:
        if hooks:
            raise ValueError("`hooks` are not supported with world_size > 1 (workers are separate processes)")
        import torch

        from ._distributed import run_data_parallel

        run_data_parallel(
            world_size=world_size,
            config_path=trial_dir / RESOLVED_CONFIG,
            resume_from=resume_from,
            metric=preset.metric,
            trial_id=trial_id,
            report=tune_report,
            use_cuda=torch.cuda.is_available(),
        )
        return
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = str(resume_from)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(TuneReportHook(preset.metric, trial_id))
    for hook in hooks:
        runner.register_hook(hook)
    with safe_checkpoint_loading():
        runner.train()


def _restore_checkpoint(trial_dir: Path, trial_id: str) -> Path | None:
    """Copy this trial's last Ray Tune checkpoint (verified as its own) into the trial dir."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    resume_path = trial_dir / "resume" / CHECKPOINT_FILE
    with checkpoint.as_directory() as ckpt_dir:
        verify_checkpoint_dir(Path(ckpt_dir), trial_id=trial_id)
        resume_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(ckpt_dir) / CHECKPOINT_FILE, resume_path)
    return resume_path


def _ensure_generated_data(preset) -> None:
    """Generate the demo dataset on first use (presets whose data says ``generated: demo``)."""
    if getattr(preset.data, "generated", None) == "demo":
        from rspose_tune.demo_data import generate_demo_dataset, is_complete

        if not is_complete(preset.data.root):  # any complete demo dataset there is used as is
            generate_demo_dataset(preset.data.root)
