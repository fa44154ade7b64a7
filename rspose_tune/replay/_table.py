"""A table of full learning curves, read from rspose_tune Parquet results, and nearest-setting lookup.

Rows are those of :data:`rspose_tune.results.SCHEMA` (a live run's ``trials/*.parquet``, a run
folder, or one table file such as the shipped demo table). The replay needs the columns
:data:`REQUIRED_COLUMNS`. A *curve* is one trial that reached the full budget (a row with
``epoch == max_epochs`` and ``status`` not ``error``): its metric at every reported epoch and
the wall time of each report interval. A *setting* is one combination of the loss parameters
(:data:`rspose_tune.spaces.PARAM_NAMES`); trials with the same setting (e.g. training seeds) give
it several curves. A parameter with a default (``pos_thr``) may be absent from a table written
before it existed: its column, its search-space entry and its known-good values then read as the
default (the shipped demo table was recorded with ``pos_thr`` fixed at 0).

The search space (to turn a proposal into a point in the unit cube and find the nearest recorded
setting) comes from the file metadata (``search_space``, written by the live search and by
``make-table``) or from a preset given by the caller.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rspose_tune.spaces import (
    COMPONENTS,
    PARAM_DEFAULTS,
    PARAM_NAMES,
    LossSetting,
    LossSettingError,
    SearchSpaceError,
    fill_defaults,
    loss_param,
    validate_space,
)

__all__ = ["REQUIRED_COLUMNS", "Curve", "CurveTable", "TableError", "Match", "load_table", "table_from_frame"]

#: Columns the replay reads (a parameter with a default may be missing: read as the default).
REQUIRED_COLUMNS = ("trial_id", "epoch", "status", *(n for n in PARAM_NAMES if n not in PARAM_DEFAULTS), "metric",
                    "wall_s")


class TableError(RSPoseTuneError, ValueError):
    """A table that cannot be replayed (missing file or columns, no full curves, bad values)."""


@dataclass(frozen=True)
class Curve:
    """One full-budget learning curve.

    Attributes:
        trial_id: The trial that recorded it.
        epochs: Reported epochs, increasing, the last one ``max_epochs``.
        metric: The metric at each reported epoch.
        seconds: Wall seconds of each report interval (the first one includes the trial's set-up).
        seed: The training seed, when known (the confirm stage pairs settings by it).
    """

    trial_id: str
    epochs: tuple[int, ...]
    metric: tuple[float, ...]
    seconds: tuple[float, ...]
    seed: int | None = None  # the training seed (rows' ``seed``, else a trial id ending in ``seedN``)


@dataclass(frozen=True)
class Match:
    """The recorded setting that answers a proposal."""

    index: int  # setting index in the table
    distance: float  # Euclidean distance in the unit cube of the searched dimensions
    exact: bool  # the proposal is the recorded setting (distance ~ 0, same on/off pattern)
    same_pattern: bool  # the recorded setting has the proposal's on/off components


@dataclass
class CurveTable:
    """Full learning curves grouped by setting, with the search space they were drawn from.

    Attributes:
        source: Where the table was read from (for messages).
        settings: One dict of the loss parameters per setting (off component: coeff 0.0, delta None).
        curves: For each setting, its curves (one per training seed / repeated trial).
        max_epochs: The full budget.
        mode: ``max`` or ``min``.
        space: ``{name: {low, high, log, fixed, allow_off}}`` for the loss parameters (PARAM_NAMES).
        known_good: The search's known-good settings (from the metadata; may be empty).
        budget: ``{grace_epochs, reduction_factor}`` recorded with the table (may be empty).
        metric_name: The metric's evaluator name (e.g. ``coco/AP``), for output.
        skipped_trials: Trials present but not full-budget (pruned, running, error).
    """

    source: str
    settings: list[dict[str, float | None]]
    curves: list[list[Curve]]
    max_epochs: int
    mode: str
    space: dict[str, dict[str, Any]]
    known_good: list[dict[str, float | None]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    metric_name: str = "metric"
    skipped_trials: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise TableError(f"{self.source}: mode is {self.mode!r}, but must be 'max' or 'min'.")
        if not self.settings:
            raise TableError(f"{self.source}: no setting has a full-budget ({self.max_epochs}-epoch) curve.")
        self._sign = 1.0 if self.mode == "max" else -1.0
        self._values = np.array([np.mean([c.metric[-1] for c in cs]) for cs in self.curves])
        settings = [LossSetting.from_dict(s) for s in self.settings]
        self._patterns = [_pattern(s) for s in settings]
        self._points = np.array([_unit_point(s, self.space) for s in settings])

    # ------------------------------------------------------------------ values
    @property
    def n_curves(self) -> int:
        return sum(len(c) for c in self.curves)

    def value(self, index: int) -> float:
        """The setting's full-budget metric, averaged over its curves."""
        return float(self._values[index])

    @property
    def best_index(self) -> int:
        return int(np.argmax(self._sign * self._values))

    @property
    def best_value(self) -> float:
        return self.value(self.best_index)

    def best_indices(self, k: int) -> list[int]:
        """The ``k`` best settings by :meth:`value`, best first (ties: the lower index)."""
        return sorted(range(len(self.settings)), key=lambda i: (-self._sign * self._values[i], i))[:k]

    def unit_point(self, index: int) -> list[float]:
        """The setting's coordinates in the unit cube of the searched dimensions (NaN: its component is off)."""
        return [float(v) for v in self._points[index]]

    @property
    def common_seeds(self) -> list[int]:
        """Training seeds every setting has a curve of (sorted; empty when a curve's seed is unknown)."""
        per_setting = [{c.seed for c in cs} for cs in self.curves]
        if any(None in seeds for seeds in per_setting):
            return []
        return sorted(set.intersection(*per_setting)) if per_setting else []

    def curve_of_seed(self, index: int, seed: int) -> Curve | None:
        """The setting's curve trained on ``seed`` (the first one, if repeated), else None."""
        return next((c for c in self.curves[index] if c.seed == seed), None)

    def regret(self, value: float) -> float:
        """How far ``value`` is from the table's best (>= 0 for values of recorded settings)."""
        return float(self._sign * (self.best_value - value))

    def better(self, a: float, b: float) -> bool:
        """Whether metric ``a`` is strictly better than ``b`` under :attr:`mode`."""
        return self._sign * a > self._sign * b

    # ------------------------------------------------------------------ lookup
    def nearest(self, config: Mapping[str, Any]) -> Match:
        """The recorded setting closest to ``config`` (a searcher proposal).

        Candidates are the settings with the same on/off components (all settings when none
        has them); among them the one at the smallest Euclidean distance in the unit cube of
        the searched dimensions (log-scaled where the space says so; dimensions that are off in
        either count 0; a value outside the table's range counts as the nearest end of it, e.g.
        ``pos_thr`` 0 as the table's lowest ``pos_thr``). Ties go to the lower index.
        """
        setting = LossSetting.from_dict(config)
        pattern = _pattern(setting)
        point = _unit_point(setting, self.space)
        candidates = [i for i, p in enumerate(self._patterns) if p == pattern]
        same = bool(candidates)
        if not same:
            candidates = list(range(len(self.settings)))
        idx = np.array(candidates)
        diff = np.nan_to_num(self._points[idx] - point, nan=0.0)
        dist = np.sqrt((diff**2).sum(axis=1))
        k = int(np.argmin(dist))
        distance = float(dist[k])
        return Match(index=int(idx[k]), distance=distance, exact=same and distance < 1e-9, same_pattern=same)


def _pattern(setting: LossSetting) -> tuple[bool, ...]:
    return tuple(setting.is_on(c) for c in COMPONENTS)


def _unit_point(setting: LossSetting, space: Mapping[str, Mapping[str, Any]]) -> list[float]:
    """Coordinates in [0, 1] per searched dimension; NaN where the component is off."""
    out = []
    for name in PARAM_NAMES:
        spec = space[name]
        if spec.get("low") is None:
            continue  # fixed: not a dimension
        component = loss_param(name).component
        if component is not None and not setting.is_on(component):  # a parameter of no component is never off
            out.append(float("nan"))
            continue
        value, low, high = float(setting[name]), float(spec["low"]), float(spec["high"])
        value = min(max(value, low), high)  # a proposal from a wider search space: the nearest edge
        if spec.get("log"):
            value, low, high = (math.log(v) for v in (value, low, high))
        out.append((value - low) / (high - low))
    return out


def _setting_key(row: Mapping[str, Any]) -> tuple:
    """A row's setting (:meth:`LossSetting.from_row`, as stored: off is null) to 10 significant digits."""
    return tuple(None if v is None else float(f"{v:.10g}") for v in LossSetting.from_row(row).as_row().values())


_SEED_IN_ID = re.compile(r"seed(\d+)$")


def _training_seed(row: Mapping[str, Any], trial_id: str) -> int | None:
    """The row's ``seed`` column, else the ``N`` of a trial id ending in ``seedN`` (make-table's ids)."""
    seed = row.get("seed")
    if seed is not None and not (isinstance(seed, float) and math.isnan(seed)):
        return int(seed)
    found = _SEED_IN_ID.search(trial_id)
    return int(found.group(1)) if found else None


def _seconds(wall: Sequence[float]) -> list[float]:
    """Per-interval seconds from cumulative ``wall_s`` (a drop = the trial restarted its clock)."""
    out, prev = [], 0.0
    for w in wall:
        out.append(w - prev if w >= prev else w)
        prev = w
    return out


def table_from_frame(
    frame: Any,
    *,
    source: str,
    max_epochs: int | None,
    mode: str,
    space: Mapping[str, Mapping[str, Any]],
    known_good: Sequence[Mapping[str, Any]] = (),
    budget: Mapping[str, Any] | None = None,
    metric_name: str = "metric",
) -> CurveTable:
    """Build a :class:`CurveTable` from a pandas frame of result rows (see module docstring).

    ``max_epochs`` ``None``: the largest epoch in the frame.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise TableError(
            f"{source}: missing column(s) {missing}; a replay table needs {list(REQUIRED_COLUMNS)} "
            "(rows as written by rspose_tune.results)."
        )
    frame = frame.assign(**{name: default for name, default in PARAM_DEFAULTS.items() if name not in frame})
    space = _with_defaults(space)
    known_good = [fill_defaults(k) for k in known_good]
    _check_space(space, source)
    frame = frame[frame["status"] != "error"]
    if max_epochs is None:
        if frame.empty:
            raise TableError(f"{source}: no rows without error.")
        max_epochs = int(frame["epoch"].max())
    groups: dict[tuple, list[Curve]] = {}
    skipped = 0
    for trial_id, rows in frame.sort_values(["trial_id", "epoch"], kind="stable").groupby("trial_id", sort=True):
        rows = rows.drop_duplicates("epoch", keep="last")
        rows = rows[rows["epoch"] >= 1]
        if rows.empty or int(rows["epoch"].iloc[-1]) != max_epochs:
            skipped += 1
            continue
        metric = rows["metric"].to_numpy(dtype=float)
        wall = rows["wall_s"].to_numpy(dtype=float)
        if not np.all(np.isfinite(metric)):
            skipped += 1  # a full curve with a missing metric cannot be replayed
            continue
        if not np.all(np.isfinite(wall)) or np.any(wall < 0):
            raise TableError(f"{source}: trial {trial_id!r} has wall_s {wall.tolist()}; it must be finite and >= 0.")
        records = rows.to_dict("records")
        try:
            keys = {_setting_key(r) for r in records}
        except LossSettingError as exc:
            raise TableError(f"{source}: trial {trial_id!r}: {exc}") from None
        if len(keys) != 1:
            raise TableError(f"{source}: trial {trial_id!r} changes its parameters between epochs: {sorted(keys, key=str)}.")
        curve = Curve(str(trial_id), tuple(int(e) for e in rows["epoch"]), tuple(metric.tolist()), tuple(_seconds(wall)),
                      seed=_training_seed(records[-1], str(trial_id)))
        groups.setdefault(keys.pop(), []).append(curve)
    settings = [dict(LossSetting.from_dict(dict(zip(PARAM_NAMES, key)))) for key in groups]  # off: coeff 0.0
    return CurveTable(
        source=source, settings=settings, curves=list(groups.values()), max_epochs=int(max_epochs), mode=mode,
        space={n: dict(space[n]) for n in PARAM_NAMES}, known_good=[dict(k) for k in known_good],
        budget=dict(budget or {}), metric_name=metric_name, skipped_trials=skipped,
    )


def _with_defaults(space: Any) -> Any:
    """A space written before a parameter with a default existed: that parameter fixed at it."""
    if not isinstance(space, Mapping):
        return space
    missing = {name: {"low": None, "high": None, "log": False, "fixed": default, "allow_off": False}
               for name, default in PARAM_DEFAULTS.items() if name not in space}
    return {**space, **missing}


def _check_space(space: Any, source: str) -> None:
    """The preset's rules (:func:`rspose_tune.spaces.validate_space`, the searcher's too), as a :class:`TableError`."""
    try:
        validate_space(space, source=f"{source}: the search space")
    except SearchSpaceError as exc:
        raise TableError(str(exc)) from None


def _space_of_preset(preset: Any) -> dict[str, dict[str, Any]]:
    return {n: {k: getattr(s, k) for k in ("low", "high", "log", "fixed", "allow_off")} for n, s in preset.params.items()}


def _check_file_columns(p: Path, shown: Any) -> None:
    """The stored columns (read_results fills missing ones with nulls, which would hide them)."""
    import pyarrow.dataset as pads

    root = p / "trials" if (p / "trials").is_dir() else p
    names = set(pads.dataset(str(root), format="parquet", ignore_prefixes=[".", "_"]).schema.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise TableError(
            f"{shown}: missing column(s) {missing}; a replay table needs {list(REQUIRED_COLUMNS)} "
            "(rows as written by rspose_tune.results)."
        )


def load_table(paths: Sequence[str | os.PathLike[str]], *, preset: Any = None) -> CurveTable:
    """Read one or more tables / run folders (see module docstring) into one :class:`CurveTable`.

    Args:
        paths: Parquet files, ``trials`` folders or run folders (as written by rspose_tune). Trial
            ids are prefixed with the path's position when several are given.
        preset: A :class:`rspose_tune.spaces.Preset` whose space, mode, budget and known-good
            settings replace the metadata's (required when the files carry no search space).
    """
    import pandas as pd

    from rspose_tune.results import read_metadata, read_results

    if not paths:
        raise TableError("no table given.")
    frames, metas = [], []
    for i, path in enumerate(paths):
        p = Path(path).expanduser()
        if not p.exists():
            raise TableError(f"{path}: no such file or folder (give a replay table .parquet or a run folder).")
        if p.is_dir() and next(p.rglob("*.parquet"), None) is None:
            raise TableError(f"{path}: no table here: the folder holds no .parquet file (give a replay table .parquet, "
                             "a run folder or its trials/ folder).")
        try:
            _check_file_columns(p, path)
            frame = read_results(p)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            if isinstance(exc, TableError):
                raise
            raise TableError(f"{path}: not readable as rspose_tune results: {exc}") from exc
        if frame.empty:
            raise TableError(f"{path}: holds no result rows.")
        try:
            metas.append(read_metadata(p))
        except ValueError:
            metas.append({})  # no rspose_tune metadata: the caller must give a preset
        if len(paths) > 1:
            frame = frame.assign(trial_id=f"{i}:" + frame["trial_id"].astype(str))
        frames.append(frame)
    source = ", ".join(str(p) for p in paths)
    frame = pd.concat(frames, ignore_index=True)
    meta = metas[0]
    for other, path in zip(metas[1:], paths[1:]):
        for key in ("backbone", "max_epochs"):
            if key in meta and key in other and meta[key] != other[key]:
                raise TableError(f"{path}: {key} is {other[key]!r}, but {paths[0]} has {meta[key]!r}; replay one backbone and budget at a time.")
    space_meta = meta.get("search_space") if isinstance(meta.get("search_space"), Mapping) else {}
    if preset is not None:
        space = _space_of_preset(preset)
        mode, known_good = preset.mode, list(preset.known_good)
        budget = {"grace_epochs": preset.budget.grace_epochs, "reduction_factor": preset.budget.reduction_factor}
        metric_name = preset.metric
    elif isinstance(space_meta.get("params"), Mapping):
        space = dict(space_meta["params"])
        mode = meta.get("mode") or space_meta.get("mode") or "max"
        known_good = list(space_meta.get("known_good") or [])
        budget = dict(meta.get("budget") or space_meta.get("budget") or {})
        metric_name = meta.get("metric_name") or space_meta.get("metric") or "metric"
    else:
        raise TableError(
            f"{paths[0]}: its metadata has no search space (needed to match proposals to recorded settings); "
            "pass --backbone PRESET."
        )
    return table_from_frame(
        frame, source=source, max_epochs=meta.get("max_epochs"), mode=mode, space=space,
        known_good=known_good, budget=budget, metric_name=metric_name,
    )
