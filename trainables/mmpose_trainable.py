"""The Ray Tune function trainable: one trial = one MMPose training run with RSPose losses.

Thin by design: resolve the config (:func:`rspose_tune.mmpose_adapter.configs.build_config`),
train with mmengine's Runner (:func:`rspose_tune.training.train_rank`), and after every validation
call ``tune.report`` with the metrics and a checkpoint (:class:`rspose_tune.training.TuneReportHook`).

Use it as::

    from rspose_tune._resources import trial_resources

    trainable = tune.with_parameters(train_rspose, preset=preset, seed=0)
    tune.Tuner(tune.with_resources(trainable, trial_resources(workers=2, cpus=8, gpus=2)), ...)

The trial's resources decide how it trains: one placement-group bundle = one rank. With one
bundle the Runner runs in the trial's own process; with N bundles the trial is rank 0 of an
N-rank process group whose other ranks are Ray actors in the other bundles
(:mod:`trainables._ray_ranks`; NCCL on GPUs, gloo on CPUs).

Files: the trial writes ``resolved_config.py``, ``trial.json`` and the MMPose work dir (logs)
into its working directory (``get_storage().trial_working_directory``, node-local); Ray Tune's
artifact syncing (``SyncConfig(sync_artifacts=True)``, set by the search) uploads it to
``<storage>/<run>/trial_<id>/`` with every checkpoint, whichever node ran the trial.

``config`` (what the searcher proposes) holds the loss hyperparameters
(:data:`rspose_tune.spaces.PARAM_NAMES`: ``delta_rank, coeff_rank, delta_sort, coeff_sort,
delta_inst, coeff_inst, pos_thr``; coefficient 0 or None = component off; ``pos_thr`` missing or
None = its default), and for the confirm stage optionally ``seed`` (this trial's training
seed, replacing the run's) and ``stage``: ``"baseline"`` trains the base config's stock loss
(the loss values are then ignored). On start the trial resumes from ``tune.get_checkpoint()`` if there is one
(ASHA promotion, retries after a failure, ``--resume``); each checkpoint carries the result reported
with it, and a trial resumed after its last epoch reports that result again instead of training
(:func:`finished_result`).
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

from rspose_tune._ray_compat import trial_storage, trial_working_directory
from rspose_tune.spaces import PARAM_NAMES
from rspose_tune.training import DIVERGED, LossDivergedError, newest_checkpoint, prepare_trial_config
from rspose_tune.training._checkpoint import RESULT_FILE, read_checkpoint_result

__all__ = ["DIVERGED_FILE", "train_rspose"]

#: Written into the trial's storage folder when its loss diverged; later attempts refuse to train.
DIVERGED_FILE = "diverged.json"


def tune_report(result: Mapping[str, Any], checkpoint_dir: str | None) -> None:
    """Report to Ray Tune, with the checkpoint in ``checkpoint_dir`` if given (persisted on return)."""
    import ray
    from ray import tune

    result = dict(result)
    if ray.is_initialized():  # tell nodes of one host apart (e.g. several nodes per machine)
        result["node"] = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    result.setdefault("nodes", result.get("node"))  # a data-parallel trial lists every rank's node
    if checkpoint_dir is None:
        tune.report(dict(result))
    else:  # the result travels with its checkpoint: a trial resumed at its end reports it again
        (Path(checkpoint_dir) / RESULT_FILE).write_text(json.dumps(result))
        tune.report(dict(result), checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))


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
    has_row: Callable[[Any, str, str, int], bool] | None = None,
) -> None:
    """Ray Tune function trainable (see module docstring).

    Args:
        config: the loss hyperparameters (from the searcher); confirm-stage trials also
            carry ``seed`` and ``stage`` (``"baseline"``: stock loss).
        preset: the :class:`rspose_tune.spaces.Preset` being searched.
        seed: training seed (saved beside the trial's results).
        max_epochs, val_interval: override the preset's budget.
        batch_size, num_workers: data-loader overrides (per rank).
        shrink: tiny backbone of the same family (tests and smoke runs).
        scratch: no pretrained weights even if the base config names remote ones.
        hooks: extra mmengine hooks registered on every rank's Runner (pickled to other ranks).
        has_row: ``has_row(filesystem, experiment_fs_path, trial_id, epoch)``: whether the run's
            results callback wrote that row (the search passes :func:`rspose_tune.results.has_row`;
            None: no rows kept). A checkpoint newer than Tune's is resumed from only if its epoch
            has a row, so after a driver kill no epoch is trained twice and none is missing.
    """
    from ray import tune

    from rspose_tune.training import train_rank

    context = tune.get_context()
    trial_id = context.get_trial_id() or "local"
    # The folder Ray's artifact syncing uploads from (not get_trial_dir(): for a trial's first
    # actor Ray 2.60 returns the driver's staging folder, which only the driver node syncs).
    trial_dir = Path(trial_working_directory(context))
    bundles = context.get_trial_resources().bundles
    seed = int(config.get("seed", seed))  # confirm-stage trials carry their own seed
    stock = config.get("stage") == "baseline"
    params = None if stock else {k: config.get(k) for k in PARAM_NAMES}
    checkpoint = tune.get_checkpoint()  # ASHA promotion, a retry after a failure, --resume
    storage_fs, trial_fs_path = trial_storage(context)
    refuse_after_divergence(storage_fs, trial_fs_path)  # a diverged trial is never trained again
    _ensure_generated_data(preset)
    from ._ray_ranks import backend_for, train_ranks

    # The checkpoint is fetched once (rank 0's copy; other ranks fetch their own on their nodes),
    # and its manifest says which epoch this attempt resumes from. The newest in the trial's
    # storage folder wins over an older one Tune passed (a driver killed before its snapshot).
    with tempfile.TemporaryDirectory(prefix="rspose_resume_") as tmp:
        recorded = None
        if has_row is not None:
            experiment = context.get_storage().experiment_fs_path
            recorded = lambda epoch: has_row(storage_fs, experiment, trial_id, epoch)  # noqa: E731
        checkpoint, resume, resumed_epoch = newest_checkpoint(checkpoint, storage_fs, trial_fs_path, trial_id=trial_id,
                                                              dest_dir=Path(tmp), recorded=recorded)
        cfg = prepare_trial_config(
            preset,
            params,
            trial_dir,
            seed=seed,
            # This attempt's facts, synced to storage with the trial's files: where it (re)started.
            meta={"world_size": len(bundles), "resumed_from_epoch": resumed_epoch},
            max_epochs=max_epochs,
            val_interval=val_interval,
            batch_size=batch_size,
            num_workers=num_workers,
            shrink=shrink,
            scratch=scratch,
        )
        final = finished_result(resume, resumed_epoch, cfg)
        if final is not None:  # nothing left to train: the final epoch's result, for Ray and the searcher
            tune.report(final)
            return
        recorded_divergence = threading.Lock()

        def diverged(reason: str) -> None:  # once: rank 0's rank watcher and this thread may both call it
            if recorded_divergence.acquire(blocking=False):
                record_divergence(storage_fs, trial_fs_path, reason)

        try:
            if len(bundles) > 1:  # another rank's divergence is raised here as LossDivergedError (_ray_ranks)
                train_ranks(cfg, bundles=bundles, metric=preset.metric, trial_id=trial_id, report=tune_report,
                            checkpoint=checkpoint, resume_from=resume, hooks=hooks, on_divergence=diverged)
            else:  # one rank: the Runner runs right here (no extra process to start; docs/ARCHITECTURE.md)
                train_rank(cfg, metric=preset.metric, trial_id=trial_id, report=tune_report, resume_from=resume,
                           hooks=hooks, device=backend_for(bundles)[1])
        except DIVERGED as exc:  # the loss, or the logits it got, not finite (on any rank)
            diverged(f"{type(exc).__name__}: {exc}")
            raise


def finished_result(resume: Path | None, resumed_epoch: int | None, cfg) -> dict | None:
    """The result reported with the checkpoint this attempt resumes from, when that checkpoint is
    after the last epoch of ``cfg`` (the trial's resolved config) (None otherwise, or for a checkpoint saved without its result).

    Such an attempt has nothing to train, but Ray's restored state may hold an older result (a
    driver killed after the trial's last report and before its experiment snapshot): Ray would end
    the trial with that stale result, and the searcher would tell Optuna PRUNED at its epoch while
    the rows say completed. Reporting the final result again makes Ray, the scheduler and the
    searcher end the trial where its rows do; the row of that epoch is written again, the same.
    """
    stored = read_checkpoint_result(resume) if resume is not None and resumed_epoch is not None else None
    if stored is None or resumed_epoch < int(cfg.train_cfg.max_epochs):
        return None
    return stored


def refuse_after_divergence(fs, trial_fs_path: str) -> None:
    """Raise :class:`LossDivergedError` again, before any training, when an earlier attempt of this
    trial diverged (its :data:`DIVERGED_FILE` in the trial's storage folder).

    Tune's ``FailureConfig`` retries every error and ``--resume`` restarts errored trials
    (``resume_errored``); a divergence is a property of the setting, not a transient failure, so
    such a retry ends at once with the first attempt's reason instead of training again.
    """
    import pyarrow.fs as pafs  # here, not at import: the Ray-free rank path (bench gpu) does not need pyarrow

    path = f"{trial_fs_path.rstrip('/')}/{DIVERGED_FILE}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return
    with fs.open_input_stream(path) as f:
        reason = json.loads(f.read().decode())["reason"]
    raise LossDivergedError(f"an earlier attempt of this trial diverged, and a diverged trial is not retried: {reason}")


def record_divergence(fs, trial_fs_path: str, reason: str) -> None:
    """Write :data:`DIVERGED_FILE` (JSON ``{"reason": ...}``) into the trial's storage folder."""
    fs.create_dir(trial_fs_path, recursive=True)
    with fs.open_output_stream(f"{trial_fs_path.rstrip('/')}/{DIVERGED_FILE}") as f:
        f.write(json.dumps({"reason": reason}).encode())


def _ensure_generated_data(preset) -> None:
    """Generate the demo dataset on first use (presets whose data says ``generated: demo``)."""
    if getattr(preset.data, "generated", None) == "demo":
        from rspose_tune.demo_data import generate_demo_dataset, is_complete

        if not is_complete(preset.data.root):  # any complete demo dataset there is used as is
            generate_demo_dataset(preset.data.root)
