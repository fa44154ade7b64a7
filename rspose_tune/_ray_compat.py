"""Every use of a private or developer-only Ray API, in one place, for one Ray version.

rspose_tune pins ``ray==2.60.0`` (pyproject.toml). Ray Tune's public API does not cover a few
things the search needs; each is a function here, so a Ray upgrade has one file to check, and
:func:`check_ray_version` (called before Ray starts, tested in ``tests/test_ray_compat.py``)
refuses a Ray these functions were not written against.

- :func:`trial_location`: a trial's experiment folder and filesystem (``Trial.storage``, a
  ``StorageContext``: developer API).
- :func:`trial_storage`: a running trial's folder in the run's storage (developer API).
- :func:`trial_working_directory`: the folder Ray's artifact syncing uploads from
  (``TrainContext.get_storage()``: developer API).
- :func:`restored_search_alg`: the search algorithm of a ``Tuner.restore`` d tuner
  (``tuner._local_tuner._tune_config``: private).
- :func:`restored_run_config`: the run config of a ``Tuner.restore`` d tuner
  (``tuner._local_tuner._run_config``: private; ``Tuner.restore`` takes no callbacks, and
  ``--resume`` applies this start's ``--mlflow``/``--wandb`` callbacks to it).
- :func:`repoint_missing_checkpoint`: a restored trial whose latest checkpoint was deleted
  (``Trial.latest_checkpoint_result``, ``run_metadata.checkpoint_manager``: private). Ray 2.60
  snapshots its experiment state at most every few seconds but rotates checkpoints
  (``num_to_keep``) at once, so a driver killed in between is restored naming a checkpoint that no
  longer exists, and ``Trainable.restore`` then fails every retry ("Could not recover from
  checkpoint as it does not exist on storage anymore") before the trainable runs.
- :func:`asha_milestones`: where Ray's ``ASHAScheduler`` puts its rungs (``_brackets``: private;
  tests only, to check :func:`rspose_tune._asha.asha_rungs`).
- :func:`use_classic_progress_table`: the pre-2.7 progress table, which shows trial parameters
  (``RAY_AIR_NEW_OUTPUT=0``: an undocumented switch).

Importing this module imports nothing from Ray; each function imports what it uses.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

from rspose_tune.errors import RSPoseTuneError

__all__ = [
    "TESTED_RAY",
    "RayVersionError",
    "asha_milestones",
    "repoint_missing_checkpoint",
    "check_ray_version",
    "restored_run_config",
    "restored_search_alg",
    "trial_location",
    "trial_storage",
    "trial_working_directory",
    "use_classic_progress_table",
]

#: The Ray release whose private/developer APIs this module uses.
TESTED_RAY = "2.60.0"


class RayVersionError(RSPoseTuneError, RuntimeError):
    """The installed Ray is not the one :mod:`rspose_tune._ray_compat` was written against."""


def check_ray_version(installed: str | None = None) -> str:
    """The installed Ray version; :class:`RayVersionError` unless it is :data:`TESTED_RAY`."""
    version = installed if installed is not None else metadata.version("ray")
    if version != TESTED_RAY:
        raise RayVersionError(
            f"ray {version} is installed, but rspose_tune uses private Ray APIs (rspose_tune/_ray_compat.py) "
            f"checked against ray {TESTED_RAY} only: install ray=={TESTED_RAY} (pip install -e .)"
        )
    return version


def trial_location(trial: Any) -> tuple[Any, str, str]:
    """``(pyarrow filesystem, experiment folder on it, experiment folder name)`` of a Tune trial.

    After ``Tuner.restore`` from a moved run these are the new location's.
    """
    storage = trial.storage
    return storage.storage_filesystem, storage.experiment_fs_path.rstrip("/"), storage.experiment_dir_name


def trial_working_directory(context: Any) -> str:
    """The trial's working directory on this node (what artifact syncing uploads), from the
    ``tune.get_context()`` of a running trial. (``get_trial_dir()`` is the driver's staging folder
    for a trial's first actor in Ray 2.60, which only the driver node syncs.)"""
    return context.get_storage().trial_working_directory


def trial_storage(context: Any) -> tuple[Any, str]:
    """``(pyarrow filesystem, the trial's folder on it)`` in the run's storage, from the
    ``tune.get_context()`` of a running trial (what every attempt of the trial shares)."""
    storage = context.get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


def restored_search_alg(tuner: Any) -> Any:
    """The search algorithm a ``Tuner.restore`` d tuner unpickled from ``tuner.pkl``."""
    return tuner._local_tuner._tune_config.search_alg


def restored_run_config(tuner: Any) -> Any:
    """The ``RunConfig`` a ``Tuner.restore`` d tuner unpickled from ``tuner.pkl`` (its ``callbacks``
    are the ones ``fit`` uses)."""
    return tuner._local_tuner._run_config


def repoint_missing_checkpoint(trial: Any, choose) -> tuple[str, str | None] | None:
    """Before Ray restores ``trial``: if the checkpoint its restored state names is not on storage,
    name ``choose(filesystem, trial folder)`` instead (a checkpoint folder of the trial), or none
    (Ray then starts the trial without ``restore``; the trainable finds its own checkpoints).

    Returns ``(missing path, new path or None)``, or None when nothing was changed. For Ray 2.60
    (the private ``run_metadata.checkpoint_manager._latest_checkpoint_result`` is what
    ``TuneController._schedule_trial_restore`` restores from).
    """
    import pyarrow.fs as pafs
    from ray.tune import Checkpoint

    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is None or latest.checkpoint is None:
        return None
    missing = latest.checkpoint
    if missing.filesystem.get_file_info(missing.path).type != pafs.FileType.NotFound:
        return None
    fs, trial_fs_path = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    path = choose(fs, trial_fs_path)
    if path is None:
        manager._latest_checkpoint_result = None
    else:
        latest.checkpoint = Checkpoint(path, filesystem=fs)
    return missing.path, path


def asha_milestones(scheduler: Any) -> list[float]:
    """The milestones (epochs) of an ``ASHAScheduler``'s first bracket, ascending (``_brackets``,
    ``_rungs``: private); the authority :func:`rspose_tune._asha.asha_rungs` is tested against."""
    return sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)


def use_classic_progress_table() -> None:
    """Ray Tune's classic progress table (it shows each trial's parameters); a user's own setting wins."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
