"""Trial results as a Parquet dataset: one explicit schema, atomic small files, file metadata.

Layout: ``<storage>/<run name>/trials/<trial_id>-e<epoch>.parquet``, one row per file, keyed by
``(trial_id, epoch)``. Writing the same key again replaces the file, so a resumed or retried
trial never duplicates a row. Local files are written to a hidden temporary file in the same
folder and moved into place with :func:`os.replace`; readers (``pandas.read_parquet(folder)``,
:func:`read_results`) skip names starting with ``.`` or ``_``, so a crash never leaves a
corrupt visible file. On object stores (``s3://`` ...; any :mod:`pyarrow.fs` filesystem) the
temporary file is moved with ``filesystem.move``; an object upload is all-or-nothing.

Columns: :data:`SCHEMA` (docs/runs.md lists them for users); ``raw_metrics`` is a JSON object of the
evaluator's own metrics under their MMPose names (``coco/AP`` ...), which :func:`read_results` can
expand into ``raw/<name>`` columns.

Conventions:

- **Off components**: a coefficient of 0 (or None) switches its component off; then both that
  coefficient and its delta are **null** (``coeff.isna()`` means off).
- ``stage`` (:data:`STAGES`): ``search`` (proposed by the searcher, ASHA may stop it),
  ``confirm`` (a top setting re-run at full budget on a further seed, never stopped early) or
  ``baseline`` (the base config's stock loss; the loss hyperparameters are null). ``seed`` is the
  trial's training seed. Both come from the trial's config (``stage``/``seed`` keys; absent:
  ``search`` and the callback's ``seed``). Files of schema version 1 lack both: read as null.
- ``pos_thr`` (schema version 3) is never null outside the baseline stage (it is not part of a
  component that can be off); files of schema versions 1 and 2 lack it, and :func:`read_results`
  reads their rows as its default, 0 (every non-zero label, what those runs trained with), as
  for every parameter with a default (:data:`rspose_tune.spaces.PARAM_DEFAULTS`).
- Non-finite metric values (NaN, e.g. ``loss_sort`` of an off component) are stored as null.
- ``status``: ``running`` for every reported result; when a trial ends its last row becomes
  ``completed`` (it reached ``max_epochs``), ``pruned`` (ended earlier: the scheduler stopped
  it) or ``error`` (with the reason in ``error``; a trial that fails before its first result
  gets a row with ``epoch`` 0). Rows of an abandoned attempt beyond the final epoch (a trial
  that resumed from an older checkpoint) are removed. A trial that ends without any result and
  without error (cancelled while pending) writes no row.

No Ray here (the report, export and replay read without it; the Ray Tune callback that writes the
rows is :class:`rspose_tune.results_callback.ParquetResultsCallback`). File metadata (key
:data:`METADATA_KEY`, JSON; :func:`read_metadata`): schema version, run, backbone, budget, the
search space, package versions and the git revision (``"unknown"`` outside git).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rspose_tune._storage import filesystem as _filesystem
from rspose_tune._storage import is_local, retrying
from rspose_tune.spaces import PARAM_DEFAULTS, PARAM_NAMES, LossSetting

__all__ = [
    "METADATA_KEY",
    "METRIC_COLUMNS",
    "PARAM_COLUMNS",
    "RAW_METRICS_COLUMN",
    "RAW_PREFIX",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STAGES",
    "STATUSES",
    "build_metadata",
    "final_status",
    "git_revision",
    "has_row",
    "make_row",
    "package_versions",
    "read_metadata",
    "read_results",
    "row_file_name",
    "row_files",
    "rows_root",
    "trial_row_files",
    "write_row",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: + stage, seed; 3: + pos_thr
#: Key of the rspose_tune JSON in each Parquet file's key-value metadata.
METADATA_KEY = b"rspose_tune"
#: Values of the ``status`` column.
STATUSES = ("running", "pruned", "completed", "error")
#: Values of the ``stage`` column.
STAGES = ("search", "confirm", "baseline")
#: The loss hyperparameters (null when their component is off, and all null for a baseline).
PARAM_COLUMNS = PARAM_NAMES  # one nullable float column each
#: Float metrics reported by the trainable (null when missing or not finite).
METRIC_COLUMNS = ("metric", "ar", "loss", "loss_rank", "loss_sort", "loss_inst", "spearman", "wall_s")
#: Column holding the evaluator's metrics as a JSON object; expanded columns get this prefix.
RAW_METRICS_COLUMN = "raw_metrics"
RAW_PREFIX = "raw/"
#: Packages whose versions go into the file metadata.
VERSION_PACKAGES = ("torch", "mmpose", "mmengine", "mmcv-lite", "ray", "optuna", "pyarrow", "pandas", "rspose_tune")

SCHEMA = pa.schema(
    [
        pa.field("run", pa.string(), nullable=False),
        pa.field("backbone", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("stage", pa.string()),  # search / confirm / baseline (null: written before stages existed)
        pa.field("seed", pa.int64()),  # the trial's training seed
        *(pa.field(name, pa.float64()) for name in PARAM_COLUMNS),
        pa.field("metric_name", pa.string()),
        *(pa.field(name, pa.float64()) for name in METRIC_COLUMNS),
        pa.field("node", pa.string()),  # rank 0's node
        pa.field("gpu_type", pa.string()),
        pa.field("world_size", pa.int32()),  # ranks (processes) that trained the trial
        pa.field("nodes", pa.string()),  # every rank's node, comma-separated, in rank order
        pa.field("error", pa.string()),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field(RAW_METRICS_COLUMN, pa.string()),
    ]
)

_BUILTIN_METADATA_KEYS = ("schema_version", "run", "backbone", "max_epochs", "search_space", "versions", "git_revision")
_FILE_RE = re.compile(r"^(?P<trial>.+)-e(?P<epoch>\d+)\.parquet$")
_ERROR_REASON_MAX = 2000


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def final_status(last_epoch: int, max_epochs: int, error: bool) -> str:
    """``error`` on error, ``completed`` when ``last_epoch >= max_epochs``, else ``pruned``."""
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"The value of `max_epochs` is {max_epochs!r}, but must be an int >= 1.")
    if error:
        return "error"
    return "completed" if last_epoch >= max_epochs else "pruned"


def row_file_name(trial_id: str, epoch: int) -> str:
    """File name of the row ``(trial_id, epoch)``; unsafe characters become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9_.=+-]", "_", str(trial_id)).lstrip("._") or "_"
    return f"{safe}-e{int(epoch):06d}.parquet"


def rows_root(experiment_fs_path: str, *, nested: bool = False) -> str:
    """Where a Tune experiment's rows go: ``<experiment>/trials``; for an experiment nested in the
    run directory (the confirm stage's ``<run>/confirm``), the run's ``<run>/trials``."""
    experiment = experiment_fs_path.rstrip("/")
    return f"{experiment.rsplit('/', 1)[0] if nested else experiment}/trials"


def has_row(fs: pafs.FileSystem, experiment_fs_path: str, trial_id: str, epoch: int, *, nested: bool = False) -> bool:
    """Whether the row ``(trial_id, epoch)`` of a Tune experiment was written (into
    :func:`rows_root` of ``experiment_fs_path`` on ``fs``)."""
    path = f"{rows_root(experiment_fs_path, nested=nested)}/{row_file_name(trial_id, epoch)}"
    return fs.get_file_info(path).type == pafs.FileType.File


def _float_or_none(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise ValueError(f"Result key {key!r} is {value!r}, but must be a number or None.")
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Result key {key!r} is {value!r}, but must be a number or None.") from exc
    return out if math.isfinite(out) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _params(config: Mapping[str, Any], *, baseline: bool = False) -> dict[str, float | None]:
    if baseline:
        return {name: None for name in PARAM_COLUMNS}
    given = {name: _float_or_none(name, config.get(name)) for name in PARAM_COLUMNS}  # NaN, inf: null
    return LossSetting.from_dict(given).as_row()


def _raw_metrics(result: Mapping[str, Any]) -> str | None:
    raw = {}
    for key, value in result.items():
        if "/" not in key or key.startswith("config/") or isinstance(value, (bool, str, bytes)):
            continue
        if isinstance(value, (int, float)) or hasattr(value, "__float__"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            raw[key] = number if math.isfinite(number) else None
    return json.dumps(raw, sort_keys=True) if raw else None


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    return dt.datetime.now(tz=dt.timezone.utc)


def make_row(
    result: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    run: str,
    backbone: str,
    trial_id: str,
    status: str = "running",
    error: str | None = None,
    epoch: int | None = None,
    time_attr: str = "epoch",
    seed: int | None = None,
) -> dict[str, Any]:
    """One row of :data:`SCHEMA` from a Ray Tune result and the trial's config.

    ``epoch`` defaults to ``result[time_attr]``; ``timestamp`` to Ray's ``result["timestamp"]``
    (Unix seconds) or now. Hyperparameters come from ``config`` (off component: both null; all
    null for the ``baseline`` stage), as do ``stage`` (default ``search``) and ``seed``
    (default: the ``seed`` argument).
    """
    if status not in STATUSES:
        raise ValueError(f"`status` is {status!r}, but must be one of {list(STATUSES)}.")
    if epoch is None:
        epoch = result.get(time_attr)
        if epoch is None:
            raise ValueError(
                f"The result of trial {trial_id!r} has no {time_attr!r}; keys are {sorted(result)}. "
                "The trainable must report the epoch with every result."
            )
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch != int(epoch) or epoch < 0:
        raise ValueError(f"`{time_attr}` of trial {trial_id!r} is {epoch!r}, but must be an int >= 0.")
    stage = config.get("stage") or "search"
    if stage not in STAGES:
        raise ValueError(f"The config's `stage` is {stage!r}, but must be one of {list(STAGES)}.")
    seed = config.get("seed", seed)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"The config's `seed` is {seed!r}, but must be an int or None.")
    row: dict[str, Any] = {
        "run": str(run),
        "backbone": str(backbone),
        "trial_id": str(trial_id),
        "epoch": int(epoch),
        "status": status,
        "stage": stage,
        "seed": seed,
        **_params(config, baseline=stage == "baseline"),
        "metric_name": _str_or_none(result.get("metric_name")),
        **{name: _float_or_none(name, result.get(name)) for name in METRIC_COLUMNS},
        "node": _str_or_none(result.get("node")),
        "gpu_type": _str_or_none(result.get("gpu_type")),
        "world_size": _world_size(result.get("world_size")),
        "nodes": _str_or_none(result.get("nodes")),
        "error": error,
        "timestamp": _timestamp(result.get("timestamp")),
        RAW_METRICS_COLUMN: _raw_metrics(result),
    }
    return row


def _world_size(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ValueError(f"`world_size` is {value!r}, but must be an int >= 1.")
    return int(value)


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str = "search_space") -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r}), which cannot be stored as JSON metadata.")


def package_versions(names: Sequence[str] = VERSION_PACKAGES) -> dict[str, str | None]:
    """Installed versions (None: not installed) plus the Python version."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


@functools.lru_cache(maxsize=8)
def git_revision(directory: str | None = None) -> str:
    """``git rev-parse HEAD`` of the tree holding ``directory`` (default: this package), with
    ``-dirty`` when there are uncommitted changes; ``"unknown"`` outside git or without git."""
    where = directory or str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = head.stdout.strip() or "unknown"
    return revision + ("-dirty" if status.returncode == 0 and status.stdout.strip() else "")


def build_metadata(
    *,
    run: str,
    backbone: str,
    max_epochs: int,
    search_space: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON stored under :data:`METADATA_KEY` in every file."""
    out = {
        "schema_version": SCHEMA_VERSION,
        "run": run,
        "backbone": backbone,
        "max_epochs": max_epochs,
        "search_space": _jsonable(search_space),
        "versions": package_versions(),
        "git_revision": git_revision(),
    }
    if extra:
        clash = sorted(set(extra) & set(out))
        if clash:
            raise ValueError(f"`extra_metadata` keys {clash} clash with the built-in keys {list(out)}.")
        out.update(_jsonable(dict(extra), "extra_metadata"))
    return out


# --------------------------------------------------------------------------------------------
# File system I/O
# --------------------------------------------------------------------------------------------


def write_row(
    row: Mapping[str, Any],
    directory: str | os.PathLike[str],
    *,
    filesystem: pafs.FileSystem | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write one row atomically as ``directory/row_file_name(trial_id, epoch)``; return its path.

    An existing file for the same key is replaced. The temporary file (hidden: ``.`` prefix) is
    removed if anything fails.
    """
    fs, root = _filesystem(directory, filesystem)
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(metadata or {}, sort_keys=True).encode()})
    table = pa.Table.from_pylist([dict(row)], schema=schema)
    name = row_file_name(row["trial_id"], row["epoch"])
    final = f"{root.rstrip('/')}/{name}"
    tmp = f"{root.rstrip('/')}/.{name}.{uuid.uuid4().hex}.tmp"
    def write() -> None:
        fs.create_dir(root, recursive=True)
        try:
            pq.write_table(table, tmp, filesystem=fs)
            if is_local(fs):
                os.replace(tmp, final)
            else:
                fs.move(tmp, final)
        except BaseException:
            try:
                fs.delete_file(tmp)
            except (FileNotFoundError, OSError):
                pass  # never written, or already moved
            raise

    if is_local(fs):
        write()
    else:  # an object store away for a while: tried again, logged (rspose_tune._storage.retrying)
        retrying(f"writing row {name} to {root}", write)
    return final


def row_files(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return [i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))
            and i.base_name.endswith(".parquet")]


def _dataset_root(fs: pafs.FileSystem, root: str) -> str:
    """``root/trials`` when ``root`` is a run directory, else ``root``."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"No results at {root!r}: the path does not exist.")
    trials = f"{root.rstrip('/')}/trials"
    if info.type == pafs.FileType.Directory and fs.get_file_info(trials).type == pafs.FileType.Directory:
        return trials
    return root


def read_results(
    path: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None, expand_raw: bool = False
) -> pd.DataFrame:
    """All rows under ``path`` (the ``trials`` folder, its run directory or one file).

    Sorted by ``trial_id``, ``epoch``; columns as :data:`SCHEMA` (an empty folder gives an empty
    frame with those columns). ``expand_raw`` adds one ``raw/<name>`` column per evaluator metric.
    """
    fs, root = _filesystem(path, filesystem)
    root = _dataset_root(fs, root)
    dataset = pads.dataset(root, schema=SCHEMA, format="parquet", filesystem=fs, ignore_prefixes=[".", "_"])
    frame = dataset.to_table().to_pandas()
    frame = frame.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    _fill_default_params(frame)
    if expand_raw:
        parsed = [json.loads(v) if isinstance(v, str) else {} for v in frame[RAW_METRICS_COLUMN]]
        names = sorted({k for d in parsed for k in d})
        for name in names:
            frame[RAW_PREFIX + name] = pd.array([d.get(name) for d in parsed], dtype="Float64").astype("float64")
    return frame


def _fill_default_params(frame: pd.DataFrame) -> None:
    """Rows of files written before a parameter with a default existed read as that default
    (only such files leave it null outside the baseline stage, which has no loss settings)."""
    if frame.empty:
        return
    not_baseline = frame["stage"].fillna("search") != "baseline"
    for name, default in PARAM_DEFAULTS.items():
        frame.loc[not_baseline & frame[name].isna(), name] = default


def read_metadata(path: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    """The :data:`METADATA_KEY` JSON of the first file under ``path`` (folder, run dir or file)."""
    fs, root = _filesystem(path, filesystem)
    root = _dataset_root(fs, root)
    if fs.get_file_info(root).type == pafs.FileType.File:
        target = root
    else:
        files = sorted(i.path for i in row_files(fs, root))
        if not files:
            raise FileNotFoundError(f"No Parquet files under {root!r}.")
        target = files[0]
    meta = pq.read_schema(target, filesystem=fs).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{target!r} has no {METADATA_KEY.decode()!r} metadata; was it written by rspose_tune?")
    return json.loads(meta[METADATA_KEY])


def trial_row_files(fs: pafs.FileSystem, root: str, trial_id: str) -> dict[int, str]:
    """The row files of one trial under ``root``: epoch -> path."""
    prefix = row_file_name(trial_id, 0).rsplit("-e", 1)[0]
    out = {}
    for info in row_files(fs, root):
        match = _FILE_RE.match(info.base_name)
        if match and match["trial"] == prefix:
            out[int(match["epoch"])] = info.path
    return out
