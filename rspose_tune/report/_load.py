"""Loading runs for :mod:`rspose_tune.report`: the run folders under a storage root, their rows,
metadata and run spec, and the settings (mode, resources, budget) to read them with."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from rspose_tune._numbers import finite_or_none as _number
from rspose_tune.errors import RSPoseTuneError

__all__ = ["ReportError", "RunData", "RunSettings", "find_preset", "load_runs", "only_backbone", "run_settings",
           "spec_settings"]


class ReportError(RSPoseTuneError, ValueError):
    """Bad input for the report or export (no runs, unknown run or backbone); CLI exit status 2."""



@dataclass(frozen=True)
class RunSettings:
    """What a run's metadata says about how to read its rows (None: unknown)."""

    mode: str | None = None
    gpus: float | None = None
    cpus: float | None = None
    max_epochs: int | None = None
    grace_epochs: int | None = None
    reduction_factor: int | None = None
    source: str = "run metadata"
    workers: int | None = None  # ranks per trial the search asked for (resources.workers)


@dataclass
class RunData:
    """One run: its directory (a local path or a URI), its rows (``read_results``), metadata,
    settings and its run spec (None for runs written before run specs existed)."""

    name: str
    path: str
    frame: pd.DataFrame
    meta: dict[str, Any]
    settings: RunSettings
    notes: list[str] = field(default_factory=list)
    spec: Any = None  # rspose_tune.runspec.RunSpec


def spec_settings(spec) -> RunSettings:
    """What the run spec says: mode, resources and budget the search actually used."""
    return RunSettings(mode=spec.preset.mode, gpus=spec.gpus_per_trial, cpus=spec.cpus_per_trial,
                       max_epochs=spec.max_epochs, grace_epochs=spec.grace_epochs,
                       reduction_factor=spec.reduction_factor, source="run spec",
                       workers=spec.workers_per_trial)


def _get(meta: Mapping[str, Any], *paths: str) -> Any:
    """The first non-None value among dotted ``paths`` into nested mappings."""
    for path in paths:
        node: Any = meta
        for key in path.split("."):
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            else:
                node = None
                break
        if node is not None:
            return node
    return None


def run_settings(meta: Mapping[str, Any], backbone: str | None = None) -> RunSettings:
    """Mode, resources and budget of a run, from its metadata; gaps filled from the preset file.

    What the search actually used comes first: the top-level keys ``rspose_tune.search`` stores
    (``mode``, ``resources: {gpu, cpu}`` as given to Ray, ``budget: {max_epochs, grace_epochs,
    reduction_factor}``; ``max_epochs`` is always stored by :mod:`rspose_tune.results`), then
    the serialised preset under ``search_space`` (its ``mode``, ``resources``, ``budget``).
    """
    values = {
        "mode": _get(meta, "mode", "search_space.mode"),
        "gpus": _number(_get(meta, "resources.gpu", "resources.gpus", "search_space.resources.gpus")),
        "cpus": _number(_get(meta, "resources.cpu", "resources.cpus", "search_space.resources.cpus")),
        "max_epochs": _get(meta, "max_epochs", "budget.max_epochs", "search_space.budget.max_epochs"),
        "grace_epochs": _get(meta, "budget.grace_epochs", "search_space.budget.grace_epochs"),
        "reduction_factor": _get(meta, "budget.reduction_factor", "search_space.budget.reduction_factor"),
    }
    source = "run metadata"
    if any(v is None for v in values.values()) and backbone:
        preset = find_preset(backbone, meta)
        if preset is not None:
            filled = {
                "mode": preset.mode, "gpus": preset.resources.gpus, "cpus": preset.resources.cpus,
                "max_epochs": preset.budget.max_epochs, "grace_epochs": preset.budget.grace_epochs,
                "reduction_factor": preset.budget.reduction_factor,
            }
            missing = [k for k, v in values.items() if v is None]
            for key in missing:
                values[key] = filled[key]
            source = f"run metadata; {', '.join(missing)} from preset file {preset.source}"
    mode = values["mode"] if values["mode"] in ("max", "min") else None
    as_int = {k: (int(values[k]) if _number(values[k]) is not None else None)
              for k in ("max_epochs", "grace_epochs", "reduction_factor")}
    workers = _number(_get(meta, "resources.workers"))
    return RunSettings(mode=mode, gpus=values["gpus"], cpus=values["cpus"], source=source,
                       workers=int(workers) if workers else None, **as_int)


def find_preset(backbone: str, meta: Mapping[str, Any]):
    """The run's own preset file when it still exists (metadata ``preset_file`` or
    ``search_space.source``), else the preset named ``backbone``; None when neither loads."""
    from rspose_tune.spaces import SearchSpaceError, load_preset

    candidates = []
    for key in ("preset_file", "search_space.source"):
        path = _get(meta, key)
        if isinstance(path, str) and os.path.isfile(path):
            candidates.append(path)
    candidates.append(backbone)
    for candidate in candidates:
        try:
            return load_preset(candidate)
        except SearchSpaceError:
            continue
    return None


def _run_dirs(storage: str) -> list[str]:
    from rspose_tune.runspec import filesystem, join

    fs, root = filesystem(storage)
    if fs.get_file_info(f"{root}/trials").type == pafs.FileType.Directory:  # storage is a run directory
        return [storage]
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(i.base_name for i in infos
                   if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))
    return [join(storage, n) for n in names if fs.get_file_info(f"{root}/{n}/trials").type == pafs.FileType.Directory]


def storage_argument(storage: str | None, runs: Sequence[str] | None) -> tuple[str, str]:
    """``(storage, why)`` of the report's and the export's ``[STORAGE] --run NAME ...``: the given
    storage, or the default ``results`` with the reason it was used (for :func:`load_runs`'s messages)."""
    from rspose_tune import DEFAULT_STORAGE

    if storage is not None:
        return storage, ""
    why = f"the default ./{DEFAULT_STORAGE} under the working directory, as no STORAGE argument was given"
    if any("/" in r or r.startswith(("~", ".")) for r in runs or ()):  # a path among the run names: STORAGE after --run
        names = ", ".join(repr(r) for r in runs)
        why += f"; --run reads every name after it as a run name, here {names}: put STORAGE before --run"
    return DEFAULT_STORAGE, why


def load_runs(storage: str | os.PathLike[str], runs: Sequence[str] | None = None, *, why: str = "") -> list[RunData]:
    """Every run with results under ``storage`` (or ``storage`` itself when it is a run dir).

    ``storage`` is a local path or a URI :mod:`pyarrow.fs` opens (``file://``, ``s3://``). A run's
    settings come from its run spec (``run_spec.yaml``) when it has one, else from the Parquet
    metadata.

    Raises:
        ReportError: the path does not exist, is a file, holds no run with results, or a name in
            ``runs`` is not one of its runs (the message lists the runs found). ``why``: how the
            CLI came to this storage (e.g. the default), said after its path in these messages.
    """
    from rspose_tune.results import read_metadata, read_results
    from rspose_tune.runspec import RunSpecError, filesystem, read_spec, resolve_storage, spec_exists

    try:
        storage = resolve_storage(os.fspath(storage))
        fs, root = filesystem(storage)
        kind = fs.get_file_info(root).type
    except (RunSpecError, OSError, ValueError) as exc:
        raise ReportError(f"storage path {os.fspath(storage)!r} cannot be opened: {exc}") from exc
    where = f"{storage!r}" + (f" ({why})" if why else "")
    if kind == pafs.FileType.NotFound:
        raise ReportError(f"storage path {where} does not exist")
    if kind != pafs.FileType.Directory:
        raise ReportError(f"storage path {where} is a file, not a folder: pass a storage root (holding "
                          "<run>/trials/) or one run folder")
    found: dict[str, RunData] = {}
    for run_dir in _run_dirs(storage):
        name = run_dir.rstrip("/").rsplit("/", 1)[-1]
        try:
            frame = read_results(run_dir)
            meta = read_metadata(run_dir) if not frame.empty else {}
        except (OSError, ValueError) as exc:  # unreadable Parquet (pyarrow errors are ValueErrors)
            raise ReportError(f"cannot read the results of run {run_dir!r}: {exc}") from exc
        if frame.empty:
            continue
        try:
            spec = read_spec(run_dir) if spec_exists(run_dir) else None
        except RunSpecError as exc:
            raise ReportError(str(exc)) from exc
        frame = frame.assign(run=name)  # the directory names the run
        backbones = sorted(set(frame["backbone"]))
        if spec is not None:
            settings = spec_settings(spec)
        else:
            settings = run_settings(meta, backbones[0] if len(backbones) == 1 else None)
        found[name] = RunData(name, run_dir, frame, dict(meta), settings, spec=spec)
    if not found:
        raise ReportError(
            f"no runs with results under {where}: expected <storage>/<run>/trials/*.parquet "
            "(written by `python -m rspose_tune.search`), or a run directory itself"
        )
    if runs:
        unknown = [r for r in runs if r not in found]
        if unknown:
            raise ReportError(f"--run {unknown} not found under {where}; runs there: {sorted(found)}")
        found = {name: found[name] for name in runs}
    return list(found.values())


def only_backbone(runs: Sequence[RunData], flag: str = "--backbone") -> str:
    """The one backbone of ``runs``; :class:`ReportError` naming ``flag`` when there are several."""
    found = sorted({b for run in runs for b in run.frame["backbone"]})
    if len(found) != 1:
        raise ReportError(f"the runs {[r.name for r in runs]} hold backbones {found}: pass {flag} NAME (one of them) "
                          "or select runs of one backbone with --run")
    return found[0]
