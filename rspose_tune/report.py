"""``python -m rspose_tune.report``: the best RSPose loss setting per backbone, as in Table E.8.

Reads every run under a storage root (``<storage>/<run>/trials/*.parquet``, written by
:mod:`rspose_tune.results`), selects per backbone the best **full-budget** trial (status
``completed``; a pruned trial's low-fidelity metric never wins) and prints one row per backbone::

    | Backbone | S. Rank δ / c | S. Sort δ / c | Ins. Sort δ / c | Metric | AR | Spearman | ...

with "–" for a switched-off component, the trials run, pruned and failed, the GPU-hours the
search spent and the GPU-hours the same trials would have cost without early stopping.

Definitions (all pure helpers below, tested directly):

- **Mode** of the metric: the run metadata's ``mode`` (stored by the search; else the serialised
  preset's ``search_space.mode``); else from the name
  (:func:`metric_mode`: ``min`` for names containing loss/error/EPE/NME/MPJPE, else ``max``:
  AP, AR, PCK, AUC ...).
- **A trial's metric** is its last row's (the ``completed`` row at ``max_epochs``); ties go to
  the lower trial id.
- **Wall time of a trial** (:func:`trial_wall_seconds`): ``wall_s`` counts seconds since the
  trial's process started, so it restarts at 0 when a trial is resumed from a checkpoint. The
  trial's time is the sum of the last ``wall_s`` of every run of non-decreasing values. Time
  after a trial's last report (e.g. before an error) is not recorded: a lower bound.
- **GPU-hours spent** = Σ over trials of wall seconds × GPUs per trial / 3600, with GPUs (and
  CPUs) per trial from the run metadata: the ``resources`` the search gave Ray, else the
  serialised preset's ``search_space.resources``, else the preset file of the same name (said in
  the notes); when the rows record ``world_size`` and the metadata ``resources.workers``, GPUs per
  trial = the per-rank GPUs × the ranks that trained it. CPU-hours likewise with CPUs per trial.
- **Full-budget GPU-hours** = Σ over trials that reported an epoch of
  (wall seconds / last epoch) × ``max_epochs`` × GPUs / 3600: what training every trial to the
  full budget would have cost at its own speed.
- **Seed noise** (:func:`estimate_noise`): the pooled within-setting standard deviation of the
  final metric over completed trials that share identical parameters (re-runs of known-good
  settings, or repeated runs across runs of the same backbone):
  ``σ̂² = Σ_g Σ_i (x_gi - x̄_g)² / Σ_g (n_g - 1)``. With no repeats the noise is *unknown* and
  the report says so. The runner-up (best completed trial with *different* parameters) is
  flagged **within noise** when ``best - runner-up <= 1.96·√2·σ̂`` (a two-sided 95 % band for the
  difference of two single evaluations, assuming Gaussian noise).

Choosing a setting you can trust (rows with ``stage`` ``confirm``/``baseline``, written by the
search's confirm stage; see the README section of that name):

- **Confirm stage** (:func:`confirmed_settings`): per re-run setting, the mean final metric over
  its confirm seeds and a 95 % **Student-t** interval of that mean (``n - 1`` dof, scipy). The
  search trial that picked the setting is left out (it was selected as a maximum: optimistic).
  The setting with the best mean is **chosen** (the table's row, and what ``export`` writes).
  Winner vs runner-up (:func:`paired_difference`): all confirm settings train on the same seeds,
  so the per-seed differences get a paired t-interval; the winner is *distinguishable* when it
  excludes 0.
- **Baseline**: the stock-loss trials' metric per seed; Δ = chosen − baseline, paired over the
  common seeds with its t-interval (without a confirm stage: the chosen search trial and the
  baseline share the run's seed, one difference, no interval).
- **ASHA fidelity** (:func:`rung_fidelity`): per rung, Spearman's ρ (scipy) between the metric
  at the rung and the final metric over the search trials that reached the full budget, named by
  DeepCAVE's bands (≥ 0.7 very strong, ≥ 0.4 strong, ≥ 0.3 moderate, else weak); ρ < 0.4 gives a
  warning suggesting a larger grace period. Caveat printed with it: only promoted trials reach
  the full budget, so the sample is biased. ``curves.png`` marks ρ on each rung.

Plots (PNG, matplotlib Agg; default ``<storage>/<run>/report/``, or ``--plots DIR`` →
``DIR/<run>/``): ``curves.png`` (metric per epoch, by status, ASHA rungs),
``importance.png`` (Optuna PED-ANOVA importance from ``<run>/optuna.journal`` when the study has
at least :data:`MIN_COMPLETED_FOR_OPTUNA` complete trials, else |Spearman ρ| of each parameter vs the
metric at the epoch most trials reached; the title says which) and ``params.png`` (metric vs
each hyperparameter).

Exit status: 0 on success, 2 on bad input (no runs under the storage path, unknown ``--run``).
"""

from __future__ import annotations

from rspose_tune._asha import asha_rungs
from rspose_tune.runspec import JOURNAL_FILE
from rspose_tune.errors import RSPoseTuneError, cli_error

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from rspose_tune import DEFAULT_STORAGE
from rspose_tune._numbers import finite_or_none as _number
from rspose_tune.spaces import COMPONENT_LABELS, LOSS_PARAMS, PARAM_NAMES, component_names, is_off, loss_param
from rspose_tune.spaces import COMPONENTS as _SPACE_COMPONENTS

__all__ = [
    "CONFIDENCE",
    "FIDELITY_BANDS",
    "Comparison",
    "ConfirmedSetting",
    "RungFidelity",
    "baseline_by_seed",
    "confirmed_settings",
    "fidelity_band",
    "paired_difference",
    "rung_fidelity",
    "t_interval",
    "top_settings",
    "DEFAULT_STORAGE",
    "MIN_COMPLETED_FOR_OPTUNA",
    "NOISE_Z",
    "PARAM_NAMES",
    "BackboneReport",
    "Importance",
    "Noise",
    "ReportError",
    "RunData",
    "RunSettings",
    "asha_rungs",
    "backbone_report",
    "estimate_noise",
    "find_preset",
    "format_markdown",
    "gpu_hours",
    "load_runs",
    "main",
    "metric_mode",
    "noise_flag",
    "param_importance",
    "runner_up",
    "select_best",
    "spearman_importance",
    "summarize_trials",
    "trial_wall_seconds",
]

#: Storage root used by ``rspose_tune.search`` when none is given: ``results/`` in the repository.
#: The loss components and their Table E.8 labels (one "δ / c" column each).
COMPONENTS = tuple((c, COMPONENT_LABELS[c]) for c in _SPACE_COMPONENTS)  # (component, its column head)
#: The loss hyperparameters of no component (``pos_thr``): one column each, after the components.
_PLAIN_PARAMS = tuple(p for p in LOSS_PARAMS if p.component is None)
#: Fewest COMPLETE Optuna trials for which Optuna's PED-ANOVA importance is computed.
MIN_COMPLETED_FOR_OPTUNA = 8
#: PED-ANOVA compares the top trials with all: target_quantile = this / n, within [0.1, 0.5].
PED_ANOVA_TOP_TRIALS = 5
#: z of the runner-up noise band: gap <= NOISE_Z * sqrt(2) * sigma is "within noise".
NOISE_Z = 1.96
OFF = "–"
_MIN_METRIC_WORDS = ("loss", "error", "epe", "nme", "mpjpe")


class ReportError(RSPoseTuneError, ValueError):
    """Bad input for the report or export (no runs, unknown run or backbone); CLI exit status 2."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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
                       workers=spec.workers_per_trial)  # fmt: skip


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
            }  # fmt: skip
            missing = [k for k, v in values.items() if v is None]
            for key in missing:
                values[key] = filled[key]
            source = f"run metadata; {', '.join(missing)} from preset file {preset.source}"
    mode = values["mode"] if values["mode"] in ("max", "min") else None
    as_int = {k: (int(values[k]) if _number(values[k]) is not None else None)
              for k in ("max_epochs", "grace_epochs", "reduction_factor")}  # fmt: skip
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
                   if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))  # fmt: skip
    return [join(storage, n) for n in names if fs.get_file_info(f"{root}/{n}/trials").type == pafs.FileType.Directory]


def load_runs(storage: str | os.PathLike[str], runs: Sequence[str] | None = None) -> list[RunData]:
    """Every run with results under ``storage`` (or ``storage`` itself when it is a run dir).

    ``storage`` is a local path or a URI :mod:`pyarrow.fs` opens (``file://``, ``s3://``). A run's
    settings come from its run spec (``run_spec.yaml``) when it has one, else from the Parquet
    metadata.

    Raises:
        ReportError: the path does not exist, holds no run with results, or a name in ``runs``
            is not one of its runs (the message lists the runs found).
    """
    from rspose_tune.results import read_metadata, read_results
    from rspose_tune.runspec import RunSpecError, filesystem, read_spec, resolve_storage, spec_exists

    try:
        storage = resolve_storage(os.fspath(storage))
        fs, root = filesystem(storage)
        missing = fs.get_file_info(root).type == pafs.FileType.NotFound
    except (RunSpecError, OSError, ValueError) as exc:
        raise ReportError(f"storage path {os.fspath(storage)!r} cannot be opened: {exc}") from exc
    if missing:
        raise ReportError(f"storage path {storage!r} does not exist")
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
            f"no runs with results under {storage!r}: expected <storage>/<run>/trials/*.parquet "
            "(written by `python -m rspose_tune.search`), or a run directory itself"
        )
    if runs:
        unknown = [r for r in runs if r not in found]
        if unknown:
            raise ReportError(f"--run {unknown} not found under {storage!r}; runs there: {sorted(found)}")
        found = {name: found[name] for name in runs}
    return list(found.values())


def only_backbone(runs: Sequence[RunData], flag: str = "--backbone") -> str:
    """The one backbone of ``runs``; :class:`ReportError` naming ``flag`` when there are several."""
    found = sorted({b for run in runs for b in run.frame["backbone"]})
    if len(found) != 1:
        raise ReportError(f"the runs {[r.name for r in runs]} hold backbones {found}: pass {flag} NAME (one of them) "
                          "or select runs of one backbone with --run")  # fmt: skip
    return found[0]


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def metric_mode(metric_name: str | None, settings_mode: str | None = None) -> str:
    """``settings_mode`` when known; else ``min`` for loss/error-like names, ``max`` otherwise."""
    if settings_mode in ("max", "min"):
        return settings_mode
    leaf = (metric_name or "").rsplit("/", 1)[-1].lower()
    return "min" if any(word in leaf for word in _MIN_METRIC_WORDS) else "max"


def trial_wall_seconds(wall_s: Sequence[float | None]) -> float:
    """A trial's wall seconds from its ``wall_s`` column in epoch order (see module docstring)."""
    values = [float(v) for v in wall_s if v is not None and math.isfinite(float(v))]
    total, prev = 0.0, None
    for value in values:
        if prev is not None and value < prev:  # restarted (resumed from a checkpoint)
            total += prev
        prev = value
    return total + (prev or 0.0)


def _params_key(row: Mapping[str, Any]) -> tuple:
    out = []
    for name in PARAM_NAMES:
        value = _number(row.get(name))
        out.append(None if value is None else float(f"{value:.12g}"))
    return tuple(out)


def _trial_resources(settings: RunSettings, last: pd.Series) -> dict[str, float | None]:
    """GPUs and CPUs a trial held: per-rank resources × the ranks its rows say trained it."""
    world_size = _number(last.get("world_size"))
    if not world_size or not settings.workers:
        return {"gpus": settings.gpus, "cpus": settings.cpus}
    scale = world_size / settings.workers
    return {name: (None if total is None else total * scale)
            for name, total in (("gpus", settings.gpus), ("cpus", settings.cpus))}  # fmt: skip


def summarize_trials(frame: pd.DataFrame, settings: RunSettings | None = None) -> pd.DataFrame:
    """One row per ``(run, trial_id)``: last row's params, status and metrics, plus wall time.

    Columns: ``run, backbone, trial_id, status, stage (search/confirm/baseline; rows without
    one: search), seed, last_epoch, <params>, metric_name, metric, ar, spearman, wall_s
    (trial_wall_seconds), gpus, cpus, max_epochs, params_key``.
    """
    settings = settings or RunSettings()
    rows = []
    for (run, trial_id), group in frame.groupby(["run", "trial_id"], sort=True):
        group = group.sort_values("epoch", kind="stable")
        last = group.iloc[-1]
        stage = last.get("stage")
        seed = _number(last.get("seed"))
        entry = {
            "run": run, "backbone": last["backbone"], "trial_id": trial_id, "status": last["status"],
            "stage": stage if isinstance(stage, str) else "search", "seed": None if seed is None else int(seed),
            "last_epoch": int(last["epoch"]),
            **{name: _number(last[name]) for name in PARAM_NAMES},
            "metric_name": last["metric_name"] if isinstance(last["metric_name"], str) else None,
            "metric": _number(last["metric"]), "ar": _number(last["ar"]), "spearman": _number(last["spearman"]),
            "wall_s": trial_wall_seconds(group["wall_s"].tolist()),
            **_trial_resources(settings, last),
            "max_epochs": settings.max_epochs,
        }  # fmt: skip
        entry["params_key"] = _params_key(entry)
        rows.append(entry)
    columns = ["run", "backbone", "trial_id", "status", "stage", "seed", "last_epoch", *PARAM_NAMES, "metric_name", "metric", "ar",
               "spearman", "wall_s", "gpus", "cpus", "max_epochs", "params_key"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _stage(trials: pd.DataFrame) -> pd.Series:
    if "stage" not in trials:
        return pd.Series("search", index=trials.index)
    return trials["stage"].fillna("search")


def _ranked(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Completed **search** trials, best first (confirm and baseline trials are ranked separately)."""
    done = trials[(trials["status"] == "completed") & trials["metric"].notna() & (_stage(trials) == "search")]
    return done.sort_values(["metric", "run", "trial_id"], ascending=[mode == "min", True, True], kind="stable")


def select_best(trials: pd.DataFrame, mode: str) -> pd.Series | None:
    """The best ``completed`` trial of :func:`summarize_trials` by ``metric`` (None: none)."""
    if mode not in ("max", "min"):
        raise ValueError(f"`mode` is {mode!r}, but must be 'max' or 'min'.")
    ranked = _ranked(trials, mode)
    return None if ranked.empty else ranked.iloc[0]


def runner_up(trials: pd.DataFrame, best: pd.Series, mode: str) -> pd.Series | None:
    """The best ``completed`` trial whose parameters differ from ``best``'s (None: none)."""
    ranked = _ranked(trials, mode)
    others = ranked[ranked["params_key"].map(lambda k: k != best["params_key"])]
    return None if others.empty else others.iloc[0]


@dataclass(frozen=True)
class Noise:
    """Pooled within-setting standard deviation of a single full-budget evaluation."""

    sigma: float | None  # None: unknown (no repeated setting)
    dof: int  # Σ (n_g - 1)
    groups: int  # settings evaluated more than once


def estimate_noise(trials: pd.DataFrame) -> Noise:
    """Pooled std of the final metric over completed trials with identical parameters."""
    done = trials[(trials["status"] == "completed") & trials["metric"].notna()]
    ss, dof, groups = 0.0, 0, 0
    for _, group in done.groupby("params_key", sort=False):
        values = group["metric"].to_numpy(dtype=float)
        if len(values) < 2:
            continue
        ss += float(((values - values.mean()) ** 2).sum())
        dof += len(values) - 1
        groups += 1
    return Noise(sigma=math.sqrt(ss / dof) if dof else None, dof=dof, groups=groups)


def noise_flag(best: float, second: float | None, noise: Noise, z: float = NOISE_Z) -> tuple[str, str]:
    """(flag, explanation) for the runner-up: ``within noise``, ``beyond noise``,
    ``noise unknown`` or ``no runner-up``."""
    if second is None:
        return "no runner-up", "no other completed setting"
    gap = abs(best - second)
    if noise.sigma is None:
        return "noise unknown", (f"gap {gap:.4g}; seed noise unknown: no setting was evaluated more than "
                                 "once at full budget")  # fmt: skip
    band = z * math.sqrt(2.0) * noise.sigma
    how = (f"gap {gap:.4g} {'<=' if gap <= band else '>'} {z:g}·√2·σ̂ = {band:.4g} "
           f"(σ̂ = {noise.sigma:.4g} from {noise.groups} repeated setting(s), {noise.dof} dof)")  # fmt: skip
    return ("within noise" if gap <= band else "beyond noise"), how


def gpu_hours(trials: pd.DataFrame) -> dict[str, float | None]:
    """``gpu_hours``, ``full_budget_gpu_hours``, ``cpu_hours`` of :func:`summarize_trials` rows.

    None when a trial's resources (or, for the full budget, ``max_epochs``) are unknown.
    """
    def total(column: str, full: bool) -> float | None:
        out = 0.0
        for _, t in trials.iterrows():
            per = _number(t[column])
            wall = _number(t["wall_s"]) or 0.0
            if full:
                if wall <= 0 or t["last_epoch"] <= 0:
                    continue
                max_epochs = _number(t["max_epochs"])
                if max_epochs is None or per is None:
                    return None
                wall = wall / t["last_epoch"] * max_epochs
            elif per is None:
                if wall > 0:
                    return None
                continue
            out += wall * per
        return out / 3600.0

    return {"gpu_hours": total("gpus", False), "full_budget_gpu_hours": total("gpus", True),
            "cpu_hours": total("cpus", False)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Trust: confirm stage, stock-loss baseline, ASHA fidelity
# --------------------------------------------------------------------------------------------

#: Confidence level of every interval of the confirm stage and the baseline comparison.
CONFIDENCE = 0.95
#: DeepCAVE's bands for Spearman's ρ between budgets: (lower bound, name), strongest first.
FIDELITY_BANDS = ((0.7, "very strong"), (0.4, "strong"), (0.3, "moderate"), (-1.0, "weak"))
#: Below this ρ a rung's ranking is called low (DeepCAVE's "moderate" and "weak").
FIDELITY_LOW = 0.4
SELECTION_BIAS_NOTE = (
    "only trials ASHA promoted reach the full budget, so ρ is computed on a biased sample (the "
    "settings stopped early are missing; the survivors' range is narrower, which usually lowers ρ)"
)


def top_settings(trials: pd.DataFrame, mode: str, k: int) -> pd.DataFrame:
    """The ``k`` best distinct settings among completed **search** trials (best trial of each),
    best first; fewer when fewer exist. ``trials``: :func:`summarize_trials` rows."""
    if k < 0:
        raise ValueError(f"`k` is {k}, but must be >= 0.")
    ranked = _ranked(trials, mode)
    return ranked.drop_duplicates("params_key", keep="first").head(k)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """(mean, low, high): Student-t interval of the mean (n - 1 degrees of freedom; scipy).
    ``low``/``high`` are None with fewer than 2 values."""
    from scipy import stats

    x = np.asarray([float(v) for v in values], dtype=float)
    if len(x) == 0:
        raise ValueError("`values` is empty.")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, None
    if np.ptp(x) == 0:
        return mean, mean, mean
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return mean, float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """``a - b`` over paired seeds: mean difference, its t-interval, the seeds used, a verdict."""

    mean: float | None
    low: float | None
    high: float | None
    seeds: tuple[int, ...]
    distinguishable: bool | None  # None: fewer than 2 paired seeds (cannot tell)

    def text(self, digits: int = 4) -> str:
        if self.mean is None:
            return "no common seed"
        if self.low is None:
            return f"{self.mean:+.{digits}g} (1 seed: no interval)"
        return (f"{self.mean:+.{digits}g}, {CONFIDENCE:.0%} t-interval [{self.low:+.{digits}g}, "
                f"{self.high:+.{digits}g}] over {len(self.seeds)} paired seeds")  # fmt: skip


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> Comparison:
    """Compare two settings trained on the same seeds: per seed ``a[s] - b[s]``, the mean and its
    Student-t interval (a paired t-test; scipy). Distinguishable when the interval excludes 0."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return Comparison(None, None, None, (), None)
    diff = [a[s] - b[s] for s in seeds]
    mean, low, high = t_interval(diff, confidence)
    known = low is not None and high is not None
    return Comparison(mean, low, high, seeds, (low > 0 or high < 0) if known else None)


@dataclass(frozen=True)
class ConfirmedSetting:
    """One setting of the confirm stage: its metric per seed, mean and t-interval."""

    params_key: tuple
    params: dict[str, float | None]
    search_trial: str | None  # the search trial that proposed it
    search_metric: float | None  # its (selected, so optimistic) search metric
    by_seed: dict[int, float]
    mean: float
    low: float | None
    high: float | None

    def record(self) -> dict[str, Any]:
        return {"search_trial": self.search_trial, "search_metric": self.search_metric, "seeds": sorted(self.by_seed),
                "mean": self.mean, "low": self.low, "high": self.high, **self.params}  # fmt: skip


def _by_seed(rows: pd.DataFrame) -> dict[int, float]:
    """Final metric per training seed. A seed trained more than once (the same setting and seed
    in several merged runs) counts once, as the mean of its trials (:func:`repeated_seeds` names
    them for the report's notes): nothing is dropped, and no seed weighs twice in an interval."""
    seeded = rows[rows["seed"].notna()]
    return {int(seed): float(group["metric"].astype(float).mean())
            for seed, group in seeded.groupby("seed", sort=True)}  # fmt: skip


def repeated_seeds(rows: pd.DataFrame) -> dict[int, list[str]]:
    """Seeds with more than one trial among ``rows``: seed -> ``run/trial`` of each."""
    seeded = rows[rows["seed"].notna()]
    return {int(seed): sorted(f"{r}/{t}" for r, t in zip(group["run"], group["trial_id"]))
            for seed, group in seeded.groupby("seed", sort=True) if len(group) > 1}  # fmt: skip


def confirmed_settings(trials: pd.DataFrame, mode: str, confidence: float = CONFIDENCE) -> list[ConfirmedSetting]:
    """The confirm stage's settings, best mean first: completed ``confirm`` trials grouped by
    their parameters; the interval uses only the confirm seeds (the search trial that picked
    the setting is left out: selecting the best of many makes its metric optimistic)."""
    stage = _stage(trials)
    done = trials[(stage == "confirm") & (trials["status"] == "completed") & trials["metric"].notna()]
    search = _ranked(trials, mode)
    out = []
    for key, group in done.groupby("params_key", sort=False):
        by_seed = _by_seed(group)
        if not by_seed:
            continue
        mean, low, high = t_interval(list(by_seed.values()), confidence)
        origin = search[search["params_key"].map(lambda k, key=key: k == key)]
        first = group.iloc[0]
        out.append(ConfirmedSetting(
            params_key=key, params={n: _number(first[n]) for n in PARAM_NAMES},
            search_trial=None if origin.empty else origin.iloc[0]["trial_id"],
            search_metric=None if origin.empty else float(origin.iloc[0]["metric"]),
            by_seed=by_seed, mean=mean, low=low, high=high,
        ))  # fmt: skip
    out.sort(key=lambda c: (-c.mean if mode == "max" else c.mean, c.search_trial or ""))
    return out


def _completed(trials: pd.DataFrame, stage: str) -> pd.DataFrame:
    return trials[(_stage(trials) == stage) & (trials["status"] == "completed") & trials["metric"].notna()]


def baseline_by_seed(trials: pd.DataFrame) -> dict[int, float]:
    """The completed ``baseline`` (stock loss) trials' final metric per seed."""
    return _by_seed(_completed(trials, "baseline"))


def _repeated_seed_notes(trials: pd.DataFrame, confirmed: Sequence[ConfirmedSetting]) -> list[str]:
    """One note per seed that merged runs trained twice for one setting (or for the baseline)."""
    done = _completed(trials, "confirm")
    groups = [(f"confirmed setting of search trial {c.search_trial}", done[done["params_key"].map(lambda k, key=c.params_key: k == key)])
              for c in confirmed]  # fmt: skip
    groups.append(("the stock-loss baseline", _completed(trials, "baseline")))
    return [f"{what}: seed {seed} was trained {len(where)} times ({', '.join(where)}); the mean of them counts "
            "as that seed's metric" for what, rows in groups for seed, where in repeated_seeds(rows).items()]


def fidelity_band(rho: float | None) -> str:
    """DeepCAVE's name for a Spearman ρ between budgets (``n/a`` when undefined)."""
    if rho is None or not math.isfinite(rho):
        return "n/a"
    return next(name for low, name in FIDELITY_BANDS if rho >= low)


@dataclass(frozen=True)
class RungFidelity:
    """Spearman ρ between the metric at an ASHA rung and the final metric (full-budget trials)."""

    rung: int
    n: int
    rho: float | None  # None: fewer than 3 trials, or a constant metric
    band: str

    @property
    def low(self) -> bool:
        return self.rho is not None and self.rho < FIDELITY_LOW


def rung_fidelity(frame: pd.DataFrame, rungs: Sequence[int], max_epochs: int | None) -> list[RungFidelity]:
    """Per rung: Spearman ρ (scipy) between each full-budget search trial's metric at the rung
    (its first validation at or after the rung epoch, the result ASHA judges) and its final metric.

    ``frame``: result rows of one run. Only ``search`` trials whose last row is ``completed`` count.
    """
    from scipy import stats

    rows = frame[frame["metric"].notna()]
    if "stage" in rows:
        rows = rows[rows["stage"].fillna("search") == "search"]
    out = []
    finals, at_rung = {}, {r: {} for r in rungs}
    for trial_id, group in rows.groupby("trial_id", sort=True):
        group = group.sort_values("epoch")
        last = group.iloc[-1]
        if last["status"] != "completed" or (max_epochs and int(last["epoch"]) < max_epochs):
            continue
        finals[trial_id] = float(last["metric"])
        for r in rungs:
            reached = group[group["epoch"] >= r]
            if not reached.empty:
                at_rung[r][trial_id] = float(reached.iloc[0]["metric"])
    for r in rungs:
        ids = sorted(at_rung[r])
        x = [at_rung[r][t] for t in ids]
        y = [finals[t] for t in ids]
        rho = None
        if len(ids) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho = float(stats.spearmanr(x, y).statistic)
        out.append(RungFidelity(rung=int(r), n=len(ids), rho=rho, band=fidelity_band(rho)))
    return out


def fidelity_lines(run: str, fid: Sequence[RungFidelity], settings: RunSettings) -> list[str]:
    """Report lines for one run: ρ per rung, a warning with a suggestion when low, the caveat."""
    if not fid:
        return []
    parts = []
    for f in fid:
        value = "n/a (fewer than 3 full-budget trials, or a constant metric)" if f.rho is None else \
            f"ρ = {f.rho:.2f} ({f.band})"
        parts.append(f"rung {f.rung}: {value}, n = {f.n}")
    lines = [f"{run}: ASHA fidelity, Spearman ρ(metric at rung, final metric): " + "; ".join(parts)
             + f" [bands: ≥ 0.7 very strong, ≥ 0.4 strong, ≥ 0.3 moderate; {SELECTION_BIAS_NOTE}]."]
    low = [f for f in fid if f.low]
    if low:
        worst = max(f.rung for f in low)
        rf = settings.reduction_factor or 3
        suggestion = worst * rf if not settings.max_epochs or worst * rf < settings.max_epochs else worst + 1
        lines.append(f"WARNING {run}: the early rung(s) {[f.rung for f in low]} rank settings unlike the full "
                     f"budget (ρ < {FIDELITY_LOW}): ASHA may stop settings that would have won. Consider a larger "
                     f"grace period, e.g. --grace-epochs {suggestion}.")  # fmt: skip
    return lines


# --------------------------------------------------------------------------------------------
# Per-backbone report
# --------------------------------------------------------------------------------------------


@dataclass
class BackboneReport:
    """One Table E.8 row plus the search's cost and the runner-up check (CSV: :meth:`record`)."""

    backbone: str
    runs: list[str]
    mode: str
    metric_name: str | None
    best_run: str | None
    best_trial: str | None
    params: dict[str, float | None]
    metric: float | None
    ar: float | None
    spearman: float | None
    trials: int
    completed: int
    pruned: int
    errors: int
    running: int
    gpus_per_trial: float | None
    gpu_hours: float | None
    full_budget_gpu_hours: float | None
    cpu_hours: float | None
    runner_up_trial: str | None
    runner_up_metric: float | None
    noise_sigma: float | None
    noise_dof: int
    noise_flag: str
    noise_note: str
    notes: list[str] = field(default_factory=list)
    # The confirm stage (best mean first), whether its winner beats the runner-up, the stock-loss
    # baseline's metric per seed and the chosen setting minus the baseline.
    confirmed: list[ConfirmedSetting] = field(default_factory=list)
    confirm_comparison: Comparison | None = None
    confirm_verdict: str = ""
    baseline_by_seed: dict[int, float] = field(default_factory=dict)
    baseline_delta: Comparison | None = None
    fidelity: dict[str, list[RungFidelity]] = field(default_factory=dict)  # run -> per rung
    fidelity_notes: list[str] = field(default_factory=list)
    chosen_by_confirm: bool = False  # the confirm stage's winner is the chosen setting

    @property
    def chosen_metric(self) -> tuple[float | None, str]:
        """The chosen setting's metric and what it is: the confirm stage's mean over its seeds when
        the confirm stage chose, else the best search trial's (optimistic: the best of many)."""
        if self.chosen_by_confirm and self.confirmed:
            return self.confirmed[0].mean, f"confirm mean, {len(self.confirmed[0].by_seed)} seeds"
        return self.metric, "search"

    def record(self) -> dict[str, Any]:
        """Flat dict for CSV: params as numbers (empty = off), lists joined by ``;``."""
        out = asdict(self)
        for key in ("confirmed", "confirm_comparison", "baseline_by_seed", "baseline_delta", "fidelity",
                    "fidelity_notes"):
            out.pop(key)
        win = self.confirmed[0] if self.confirmed else None
        out.update(confirmed_mean=win and win.mean, confirmed_low=win and win.low, confirmed_high=win and win.high,
                   confirmed_seeds=len(win.by_seed) if win else 0,
                   baseline_delta=self.baseline_delta and self.baseline_delta.mean,
                   baseline_delta_low=self.baseline_delta and self.baseline_delta.low,
                   baseline_delta_high=self.baseline_delta and self.baseline_delta.high)  # fmt: skip
        params = out.pop("params")
        out["runs"] = ";".join(self.runs)
        out["notes"] = " ".join(self.notes)
        head = {k: out.pop(k) for k in ("backbone", "runs", "best_run", "best_trial")}
        return {**head, **params, **out}


def backbone_report(backbone: str, runs: Sequence[RunData]) -> BackboneReport:
    """Select the best completed trial of ``backbone`` over ``runs`` and summarise the search."""
    parts, modes, notes = [], set(), []
    for run in runs:
        frame = run.frame[run.frame["backbone"] == backbone]
        if frame.empty:
            continue
        parts.append(summarize_trials(frame, run.settings))
        modes.add(run.settings.mode)
        if run.settings.source != "run metadata":
            notes.append(f"{run.name}: {run.settings.source}.")
    if not parts:
        raise ReportError(f"no trials of backbone {backbone!r} in runs {[r.name for r in runs]}")
    trials = pd.concat(parts, ignore_index=True)
    names = sorted({n for n in trials["metric_name"] if isinstance(n, str)})
    if len(names) > 1:
        raise ReportError(
            f"backbone {backbone!r} has runs with different metrics {names}; pick runs with one metric via --run"
        )
    metric_name = names[0] if names else None
    known = {m for m in modes if m}
    if len(known) > 1:
        raise ReportError(f"backbone {backbone!r} has runs with different modes {sorted(known)}; use --run")
    mode = metric_mode(metric_name, next(iter(known), None))
    if not known:
        notes.append(f"mode {mode!r} inferred from the metric name {metric_name!r}.")
    best = select_best(trials, mode)
    confirmed = confirmed_settings(trials, mode)
    chosen_by_confirm = False
    comparison, verdict = None, ""
    if confirmed:
        win = confirmed[0]
        chosen = trials[(trials["trial_id"] == win.search_trial) & (_stage(trials) == "search")]
        if not chosen.empty:  # the confirm stage decides; export takes this search trial's setting
            best = chosen.iloc[0]
            chosen_by_confirm = True
        if len(confirmed) > 1:
            comparison = paired_difference(win.by_seed, confirmed[1].by_seed)
            if comparison.distinguishable is None:
                verdict = "cannot tell: fewer than 2 seeds shared with the runner-up"
            elif comparison.distinguishable:
                verdict = "the winner IS distinguishable from the runner-up (the interval of the difference excludes 0)"
            else:
                verdict = ("the winner is NOT distinguishable from the runner-up (the interval of the difference "
                           "includes 0): either setting is as good as this evidence can tell")  # fmt: skip
        else:
            verdict = "only one setting was confirmed: no runner-up to compare with"
    base = baseline_by_seed(trials)
    notes += _repeated_seed_notes(trials, confirmed)
    delta = None
    if base and best is not None:
        chosen_by_seed = confirmed[0].by_seed if confirmed else {}
        if not chosen_by_seed and _number(best.get("seed")) is not None:
            chosen_by_seed = {int(best["seed"]): float(best["metric"])}
        delta = paired_difference(chosen_by_seed, base)
    fidelity, fidelity_notes = {}, []
    for run in runs:
        frame = run.frame[run.frame["backbone"] == backbone]
        s = run.settings
        rungs = asha_rungs(s.max_epochs, s.grace_epochs, s.reduction_factor)
        if not frame.empty and rungs and (run.spec is None or run.spec.scheduler == "asha"):
            fidelity[run.name] = rung_fidelity(frame, rungs, s.max_epochs)
            fidelity_notes += fidelity_lines(run.name, fidelity[run.name], s)
    second = runner_up(trials, best, mode) if best is not None else None
    noise = estimate_noise(trials)
    if best is None:
        flag, how = "no runner-up", "no completed trial"
    else:
        flag, how = noise_flag(best["metric"], None if second is None else second["metric"], noise)
    searched = trials[_stage(trials) == "search"]  # confirm/baseline trials are reported below the table
    counts = searched["status"].value_counts()
    gpus = sorted({g for g in trials["gpus"] if _number(g) is not None})
    cost = gpu_hours(trials)
    return BackboneReport(
        backbone=backbone,
        runs=sorted(set(trials["run"])),
        mode=mode,
        metric_name=metric_name,
        best_run=None if best is None else best["run"],
        best_trial=None if best is None else best["trial_id"],
        params={n: (None if best is None else _number(best[n])) for n in PARAM_NAMES},
        metric=None if best is None else best["metric"],
        ar=None if best is None else best["ar"],
        spearman=None if best is None else best["spearman"],
        trials=len(searched),
        completed=int(counts.get("completed", 0)),
        pruned=int(counts.get("pruned", 0)),
        errors=int(counts.get("error", 0)),
        running=int(counts.get("running", 0)),
        gpus_per_trial=gpus[0] if len(gpus) == 1 else None,
        gpu_hours=cost["gpu_hours"],
        full_budget_gpu_hours=cost["full_budget_gpu_hours"],
        cpu_hours=cost["cpu_hours"],
        runner_up_trial=None if second is None else second["trial_id"],
        runner_up_metric=None if second is None else second["metric"],
        noise_sigma=noise.sigma,
        noise_dof=noise.dof,
        noise_flag=flag,
        noise_note=how,
        notes=notes,
        confirmed=confirmed,
        confirm_comparison=comparison,
        confirm_verdict=verdict,
        baseline_by_seed=base,
        baseline_delta=delta,
        fidelity=fidelity,
        fidelity_notes=fidelity_notes,
        chosen_by_confirm=chosen_by_confirm,
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    text = f"{value:.{digits}g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _fmt_hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _component_cell(params: Mapping[str, float | None], component: str) -> str:
    delta, coeff_name = component_names(component)
    coeff = params.get(coeff_name)
    if is_off(coeff):
        return OFF
    return f"{_fmt(params.get(delta))} / {_fmt(coeff)}"


TABLE_HEADER = ("Backbone", *(f"{label} δ / c" for _, label in COMPONENTS), *(p.label or p.name for p in _PLAIN_PARAMS),
                "Metric", "AR", "Spearman", "Trials", "Pruned", "GPU-h", "Full-budget GPU-h", "CPU-h", "Runner-up")  # fmt: skip


def table_rows(reports: Sequence[BackboneReport]) -> list[list[str]]:
    """The cells of the Table E.8-shaped table (see :data:`TABLE_HEADER`)."""
    rows = []
    for r in reports:
        if r.best_trial is None:
            comps = ["(no completed trial)"] + [""] * (len(COMPONENTS) + len(_PLAIN_PARAMS) - 1)
            metric = f"{r.metric_name or 'metric'}: –"
        else:
            comps = [_component_cell(r.params, c) for c, _ in COMPONENTS]
            comps += [_fmt(r.params.get(p.name)) for p in _PLAIN_PARAMS]
            value, source = r.chosen_metric
            metric = f"{r.metric_name} {_fmt(value, 4)}" + (f" ({source})" if r.chosen_by_confirm else "")
        trials = f"{r.trials}" + (f" ({r.errors} failed)" if r.errors else "")
        trials += f" ({r.running} unfinished)" if r.running else ""
        rows.append([
            r.backbone, *comps, metric, _fmt(r.ar, 4), _fmt(r.spearman, 3), trials, str(r.pruned),
            _fmt_hours(r.gpu_hours), _fmt_hours(r.full_budget_gpu_hours), _fmt_hours(r.cpu_hours), r.noise_flag,
        ])  # fmt: skip
    return rows


def format_markdown(reports: Sequence[BackboneReport]) -> str:
    """A padded Markdown table (readable as plain text too)."""
    rows = [list(TABLE_HEADER), *table_rows(reports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def format_notes(reports: Sequence[BackboneReport]) -> str:
    """One paragraph per backbone: the selected trial, the runner-up check and caveats."""
    lines = []
    for r in reports:
        if r.best_trial is None:
            lines.append(f"- {r.backbone}: no trial reached the full budget (status completed) in runs "
                         f"{r.runs}; {r.pruned} pruned, {r.errors} failed, {r.running} unfinished.")  # fmt: skip
        else:
            second = (f"runner-up {r.runner_up_trial} ({_fmt(r.runner_up_metric, 4)}): {r.noise_flag}; "
                      if r.runner_up_trial else "")  # fmt: skip
            lines.append(f"- {r.backbone}: best trial {r.best_trial} (run {r.best_run}, {r.mode} "
                         f"{r.metric_name} = {_fmt(r.metric, 4)}); {second}{r.noise_note}.")  # fmt: skip
        if r.gpus_per_trial == 0:
            lines.append(f"  CPU-only trials: 0 GPU-h; {_fmt_hours(r.cpu_hours)} CPU-h spent.")
        lines.extend(_trust_lines(r))
        for note in r.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"


def _trust_lines(r: BackboneReport) -> list[str]:
    lines = []
    if r.confirmed:
        lines.append(f"  Confirm stage ({r.metric_name}, mean and {CONFIDENCE:.0%} Student-t interval over the confirm "
                     "seeds; the search run that picked each setting is left out, its metric is optimistic):")  # fmt: skip
        for i, c in enumerate(r.confirmed):
            interval = "no interval (1 seed)" if c.low is None else f"[{_fmt(c.low, 4)}, {_fmt(c.high, 4)}]"
            comps = ", ".join([*(f"{label} {_component_cell(c.params, comp)}" for comp, label in COMPONENTS),
                               *(f"{p.name} {_fmt(c.params.get(p.name))}" for p in _PLAIN_PARAMS)])  # fmt: skip
            lines.append(f"    {'winner   ' if i == 0 else 'runner-up' if i == 1 else '         '} "
                         f"{_fmt(c.mean, 4)} {interval} on seeds {sorted(c.by_seed)} (search {c.search_trial}: "
                         f"{_fmt(c.search_metric, 4)}); {comps}")  # fmt: skip
        if r.confirm_comparison is not None:
            lines.append(f"    winner - runner-up: {r.confirm_comparison.text()}: {r.confirm_verdict}.")
        else:
            lines.append(f"    {r.confirm_verdict}.")
    if r.baseline_by_seed:
        mean, low, high = t_interval(list(r.baseline_by_seed.values()))
        interval = "" if low is None else f" [{_fmt(low, 4)}, {_fmt(high, 4)}]"
        lines.append(f"  Stock-loss baseline (the base config's own loss): {_fmt(mean, 4)}{interval} on seeds "
                     f"{sorted(r.baseline_by_seed)}.")  # fmt: skip
        if r.baseline_delta is not None:
            better = r.baseline_delta.distinguishable
            word = ("" if better is None else
                    " (distinguishable from 0)" if better else " (NOT distinguishable from 0)")  # fmt: skip
            lines.append(f"  Δ {r.metric_name} chosen setting - baseline: {r.baseline_delta.text()}{word}.")
    lines.extend("  " + line for line in r.fidelity_notes)
    return lines


def write_csv(reports: Sequence[BackboneReport], path: str | os.PathLike[str]) -> None:
    frame = pd.DataFrame([r.record() for r in reports])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


# --------------------------------------------------------------------------------------------
# Hyperparameter importance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Importance:
    """Importance per parameter (NaN: undefined, e.g. a fixed parameter) and how it was found."""

    values: dict[str, float]
    method: str
    label: str  # x-axis label


def spearman_importance(frame: pd.DataFrame) -> tuple[dict[str, float], int | None, int]:
    """|Spearman ρ| of each parameter vs ``metric`` at the epoch most trials reported.

    Ties go to the later epoch. Off coefficients count as 0; off deltas are left out. Fewer
    than 3 points or a constant parameter gives NaN. Returns (values, epoch, number of trials).
    """
    from scipy import stats

    rows = frame[frame["metric"].notna()]
    if rows.empty:
        return {n: math.nan for n in PARAM_NAMES}, None, 0
    counts = rows.groupby("epoch")["trial_id"].nunique()
    epoch = int(max(counts.index, key=lambda e: (counts[e], e)))
    at = rows[rows["epoch"] == epoch].drop_duplicates(["run", "trial_id"])
    out = {}
    for name in PARAM_NAMES:
        x = at[name].astype(float)
        if loss_param(name).kind == "coeff":
            x = x.fillna(0.0)
        keep = x.notna().to_numpy()
        xs, ys = x.to_numpy()[keep], at["metric"].astype(float).to_numpy()[keep]
        if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            out[name] = math.nan
            continue
        out[name] = float(abs(stats.spearmanr(xs, ys).statistic))
    return out, epoch, len(at)


@contextlib.contextmanager
def _local_copy(path: str):
    """``path`` itself when local, else a temporary local copy of it; None when it does not exist."""
    from rspose_tune.runspec import filesystem, is_uri

    if not is_uri(path):
        yield Path(path) if os.path.isfile(path) else None
        return
    fs, where = filesystem(path)
    if fs.get_file_info(where).type != pafs.FileType.File:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="rspose_report_") as tmp:
        local = Path(tmp) / Path(where).name
        with fs.open_input_stream(where) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        yield local


def upload_folder(local_dir: Path, target: str) -> list[str]:
    """Copy the files of ``local_dir`` to ``target`` (a URI) with :mod:`pyarrow.fs`; their new paths."""
    from rspose_tune.runspec import filesystem, join

    fs, where = filesystem(target)
    fs.create_dir(where, recursive=True)
    out = []
    for path in sorted(local_dir.iterdir()):
        with open(path, "rb") as src, fs.open_output_stream(f"{where}/{path.name}") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        out.append(join(target, path.name))
    return out


def _load_study(journal: Path):
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if not names:
        raise ReportError(f"{journal} holds no Optuna study")
    name = "rspose" if "rspose" in names else names[0]
    return optuna.load_study(study_name=name, storage=storage)


def param_importance(run: RunData, min_completed: int = MIN_COMPLETED_FOR_OPTUNA) -> Importance:
    """Optuna importance from ``<run>/optuna.journal`` when it has ``min_completed`` COMPLETE
    trials; else :func:`spearman_importance` (the method string says which and why).

    The evaluator is PED-ANOVA (:class:`optuna.importance.PedAnovaImportanceEvaluator`): numpy
    only and deterministic; Optuna's default fANOVA needs scikit-learn, which rspose_tune does
    not install. Its ``target_quantile`` keeps about :data:`PED_ANOVA_TOP_TRIALS` trials in the
    top group (Optuna recommends at least 5). It only sees COMPLETE (full-budget) trials.
    """
    reason = f"no {JOURNAL_FILE}"
    with _local_copy(f"{run.path.rstrip('/')}/{JOURNAL_FILE}") as journal:  # the study reads it lazily
        if journal is not None:
            import optuna

            study = _load_study(journal)
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(complete) >= min_completed:
                quantile = min(0.5, max(0.1, PED_ANOVA_TOP_TRIALS / len(complete)))
                try:
                    values = optuna.importance.get_param_importances(
                        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
                    )
                except (ValueError, RuntimeError) as exc:  # e.g. no parameter common to all trials
                    reason = f"Optuna importance failed: {exc}"
                else:
                    method = (f"Optuna PED-ANOVA importance ({len(complete)} complete trials, "
                              f"top {quantile:.0%} vs all)")  # fmt: skip
                    return Importance(dict(values), method, "importance (sums to 1)")
            else:
                reason = f"{len(complete)} complete trials < {min_completed} for Optuna importance"
    values, epoch, n = spearman_importance(run.frame)
    metric = _first_metric_name(run.frame)
    method = f"fallback: |Spearman ρ| vs {metric} at epoch {epoch} ({n} trials; {reason})"
    return Importance(values, method, "|Spearman ρ|")


def _first_metric_name(frame: pd.DataFrame) -> str:
    names = [n for n in frame["metric_name"] if isinstance(n, str)]
    return names[0] if names else "metric"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rspose_tune.report",
        description="Best RSPose loss setting per backbone (Table E.8 shape), search cost, runner-up "
        "noise check and plots, from the Parquet results of rspose_tune.search.",
    )
    parser.add_argument("storage", nargs="?", default=DEFAULT_STORAGE,
                        help="storage root holding <run>/trials/ (or one run directory): a local path or a "
                        "URI pyarrow.fs opens (file://, s3://); default ./results under the working directory")  # fmt: skip
    parser.add_argument("--run", nargs="+", action="extend", metavar="NAME",
                        help="only these runs (repeatable; put the storage path before --run)")  # fmt: skip
    parser.add_argument("--markdown", metavar="PATH", help="also write the table and notes as Markdown")
    parser.add_argument("--csv", metavar="PATH", help="also write one row per backbone as CSV (empty = off)")
    parser.add_argument("--plots", metavar="DIR", help="write plots to DIR/<run>/ (default <storage>/<run>/report/)")
    parser.add_argument("--no-plots", action="store_true", help="do not write plots")
    return parser


def make_plots(run: RunData, out_dir: Path, best_trial: str | None) -> list[Path]:
    """Write ``curves.png``, ``importance.png`` and ``params.png`` of one run; return the paths."""
    from rspose_tune import _plots

    out_dir.mkdir(parents=True, exist_ok=True)
    s = run.settings
    summary = summarize_trials(run.frame, s)
    metric = _first_metric_name(run.frame)
    paths = [out_dir / "curves.png", out_dir / "importance.png", out_dir / "params.png"]
    rungs = asha_rungs(s.max_epochs, s.grace_epochs, s.reduction_factor)
    asha = run.spec is None or run.spec.scheduler == "asha"
    fidelity = rung_fidelity(run.frame, rungs, s.max_epochs) if rungs and asha else []
    _plots.plot_curves(run.frame, paths[0], run=run.name, metric_name=metric, max_epochs=s.max_epochs, rungs=rungs,
                       best_trial=best_trial, fidelity=fidelity)  # fmt: skip
    importance = param_importance(run)
    _plots.plot_importance(importance.values, paths[1], title=f"{run.name}: {importance.method}",
                           xlabel=importance.label)  # fmt: skip
    log_params = {n: bool(_get(run.meta, f"search_space.params.{n}.log")) for n in PARAM_NAMES}
    ranges = {}
    for n in PARAM_NAMES:
        low, high = (_number(_get(run.meta, f"search_space.params.{n}.{k}")) for k in ("low", "high"))
        ranges[n] = None if low is None or high is None else (low, high)
    _plots.plot_params(summary, paths[2], run=run.name, metric_name=metric, best_trial=best_trial,
                       log_params=log_params, ranges=ranges, max_epochs=s.max_epochs)  # fmt: skip
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from rspose_tune.runspec import is_uri

    args = build_parser().parse_args(argv)
    try:
        runs = load_runs(args.storage, args.run)
        backbones = sorted({b for run in runs for b in run.frame["backbone"]})
        reports = [backbone_report(b, runs) for b in backbones]
    except RSPoseTuneError as exc:
        return cli_error(exc)
    table, notes = format_markdown(reports), format_notes(reports)
    print(f"Runs under {args.storage}: {', '.join(r.name for r in runs)}\n")
    print(table)
    print(notes)
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# RSPose loss search: best settings\n\nRuns: {', '.join(r.name for r in runs)}\n\n"
                        f"{table}\n{notes}")  # fmt: skip
        print(f"wrote {path}")
    if args.csv:
        write_csv(reports, args.csv)
        print(f"wrote {args.csv}")
    if not args.no_plots:
        best_by_run = {(r.best_run, r.best_trial) for r in reports}
        for run in runs:
            best = next((t for rn, t in best_by_run if rn == run.name), None)
            target = f"{run.path.rstrip('/')}/report"
            if args.plots or not is_uri(run.path):
                out_dir = Path(args.plots) / run.name if args.plots else Path(target)
                written = [str(p) for p in make_plots(run, out_dir, best)]
            else:  # an object store: plot locally, then upload
                with tempfile.TemporaryDirectory(prefix="rspose_plots_") as tmp:
                    make_plots(run, Path(tmp), best)
                    written = upload_folder(Path(tmp), target)
            for path in written:
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
