"""The driver-side Ray Tune callback that writes every trial result as a Parquet row.

The rows, their schema and their file layout are :mod:`rspose_tune.results` (Ray-free); this
module adds only the Ray Tune :class:`~ray.tune.Callback` that turns results and trial ends into
rows (see :mod:`rspose_tune.results` for ``status``, errors and abandoned attempts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.tune import Callback

from rspose_tune._ray_compat import trial_location
from rspose_tune._storage import filesystem

from rspose_tune.results import (
    _BUILTIN_METADATA_KEYS,
    _ERROR_REASON_MAX,
    _jsonable,
    build_metadata,
    final_status,
    make_row,
    row_file_name,
    rows_root,
    trial_row_files,
    write_row,
)

__all__ = ["ParquetResultsCallback"]


# --------------------------------------------------------------------------------------------


def _error_reason(trial: Any) -> str:
    """The last line of the trial's latest error (e.g. ``ValueError: boom``)."""
    text = None
    error_file = getattr(trial, "error_file", None)
    if error_file and os.path.isfile(error_file):
        with open(error_file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    if not text:
        return "unknown error (Ray recorded no error text)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:_ERROR_REASON_MAX] if lines else "unknown error (empty error text)"


class ParquetResultsCallback(Callback):
    """Driver-side Ray Tune callback writing every result as a row (see the module docstring).

    Args:
        backbone: Value of the ``backbone`` column (the preset name).
        max_epochs: Full budget; a trial ending at or beyond it is ``completed``.
        run: Value of the ``run`` column; ``None``: the Ray experiment's directory name.
        root: Dataset folder (local path or URI); ``None``: ``<storage>/<run name>/trials`` of
            the Ray experiment, on the experiment's own filesystem.
        filesystem: A :mod:`pyarrow.fs` filesystem for ``root`` (otherwise inferred).
        search_space: Stored as JSON in the file metadata (dataclasses, mappings, lists).
        extra_metadata: More JSON metadata (keys must not clash with the built-in ones).
        time_attr: Result key holding the epoch.
        seed: The ``seed`` column of trials whose config has no ``seed`` (the run's seed).
        nested: With ``root`` None: the experiment is nested in the run directory (the confirm
            stage's ``<run>/confirm``), so rows go to ``<experiment>/../trials``. Either way the
            folder is found from the trial at the first write, so a ``Tuner.restore`` of a run that
            moved (``--resume --storage NEW``) writes to the new location.
    """

    def __init__(
        self,
        *,
        backbone: str,
        max_epochs: int,
        run: str | None = None,
        root: str | os.PathLike[str] | None = None,
        filesystem: pafs.FileSystem | None = None,
        search_space: Any = None,
        extra_metadata: Mapping[str, Any] | None = None,
        time_attr: str = "epoch",
        seed: int | None = None,
        nested: bool = False,
    ) -> None:
        final_status(0, max_epochs, False)  # validates max_epochs
        self._seed = seed
        self._backbone = backbone
        self._max_epochs = max_epochs
        self._run = run
        self._root = None if root is None else os.fspath(root)
        self._filesystem = filesystem
        self._search_space = _jsonable(search_space)
        self._extra = _jsonable(dict(extra_metadata), "extra_metadata") if extra_metadata else None
        clash = sorted(set(self._extra or ()) & set(_BUILTIN_METADATA_KEYS))
        if clash:
            raise ValueError(f"`extra_metadata` keys {clash} clash with the built-in keys {list(_BUILTIN_METADATA_KEYS)}.")
        self._time_attr = time_attr
        self._nested = nested
        self._target: tuple[pafs.FileSystem, str] | None = None
        self._metadata: dict[str, Any] | None = None
        self._last: dict[str, dict[str, Any]] = {}  # trial id -> last row written this session
        self._reported: set[str] = set()  # trials with a result this session (their epoch-0 row checked)

    # ------------------------------------------------------------ Ray Tune hooks
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        row = make_row(result, trial.config, run=self._run_name(trial), backbone=self._backbone,
                       trial_id=trial.trial_id, time_attr=self._time_attr, seed=self._seed)
        self._write(trial, row)
        self._last[trial.trial_id] = row
        if trial.trial_id not in self._reported:
            self._reported.add(trial.trial_id)
            self._drop_epoch0_row(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finalize(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finalize(trial, error=_error_reason(trial))

    # ------------------------------------------------------------ internals
    def __getstate__(self) -> dict[str, Any]:
        # Pickled into tuner.pkl: the resolved folder is this session's, never the restored one's.
        return {**self.__dict__, "_target": None, "_last": {}, "_reported": set()}

    def _run_name(self, trial: Any) -> str:
        if self._run is None:
            self._run = trial_location(trial)[2]
        return self._run

    def _resolve_target(self, trial: Any) -> tuple[pafs.FileSystem, str]:
        if self._target is None:
            if self._root is not None:
                self._target = filesystem(self._root, self._filesystem)
            else:
                fs, experiment, _ = trial_location(trial)
                self._target = (fs, rows_root(experiment, nested=self._nested))
        return self._target

    def _write(self, trial: Any, row: Mapping[str, Any]) -> None:
        fs, root = self._resolve_target(trial)
        if self._metadata is None:
            self._metadata = build_metadata(run=self._run_name(trial), backbone=self._backbone,
                                            max_epochs=self._max_epochs, search_space=self._search_space,
                                            extra=self._extra)
        write_row(row, root, filesystem=fs, metadata=self._metadata)

    def _trial_files(self, trial: Any) -> dict[int, str]:
        fs, root = self._resolve_target(trial)
        return trial_row_files(fs, root, trial.trial_id)

    def _drop_epoch0_row(self, trial: Any) -> None:
        """Delete the trial's epoch-0 row, if any: it recorded an error before the trial's first result
        (:meth:`_finalize`), and the trial ran again after it. In Ray 2.60 a dead node can fail two
        pending tasks of a trial; the first failure is recovered (the trial requeued, PENDING), the
        second then ends it ERROR (``TuneController._process_trial_failure``), and ``--resume``
        (``resume_errored=True``) runs it again (found by the soak: docs/soak.md#what-it-found)."""
        fs, root = self._resolve_target(trial)
        path = f"{root}/{row_file_name(trial.trial_id, 0)}"
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)

    def _finalize(self, trial: Any, error: str | None) -> None:
        files = self._trial_files(trial)
        last = self._last.pop(trial.trial_id, None)
        if last is None and files:  # e.g. after a driver restart: read the last row back
            fs, _ = self._resolve_target(trial)
            last = pq.read_table(files[max(files)], filesystem=fs).to_pylist()[0]
        if last is None:
            if error is None:
                return  # ended before its first result, without error: nothing to record
            last = make_row({}, trial.config, run=self._run_name(trial), backbone=self._backbone,
                            trial_id=trial.trial_id, epoch=0, seed=self._seed)
        row = {**last, "status": final_status(last["epoch"], self._max_epochs, error is not None), "error": error}
        self._write(trial, row)
        fs, _ = self._resolve_target(trial)
        for epoch, path in files.items():
            if epoch > row["epoch"]:  # rows of an abandoned attempt (resumed from an older checkpoint)
                fs.delete_file(path)
