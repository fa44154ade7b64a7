"""Trial summaries for :mod:`rspose_tune.report`: one row per trial, the metric's mode, wall time,
the best trial and the runner-up, seed noise and the search's cost (definitions: the package
docstring)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rspose_tune._numbers import finite_or_none as _number
from rspose_tune.spaces import PARAM_NAMES

from ._load import RunSettings

__all__ = ["NOISE_Z", "Noise", "estimate_noise", "gpu_hours", "metric_mode", "noise_flag", "runner_up", "select_best",
           "summarize_trials", "trial_wall_seconds"]

#: z of the runner-up noise band: gap <= NOISE_Z * sqrt(2) * sigma is "within noise".
NOISE_Z = 1.96
_MIN_METRIC_WORDS = ("loss", "error", "epe", "nme", "mpjpe")


def metric_mode(metric_name: str | None, settings_mode: str | None = None) -> str:
    """``settings_mode`` when known; else ``min`` for loss/error-like names, ``max`` otherwise."""
    if settings_mode in ("max", "min"):
        return settings_mode
    leaf = (metric_name or "").rsplit("/", 1)[-1].lower()
    return "min" if any(word in leaf for word in _MIN_METRIC_WORDS) else "max"


def trial_wall_seconds(wall_s: Sequence[float | None]) -> float:
    """A trial's wall seconds from its ``wall_s`` column in epoch order (see the package docstring)."""
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
            for name, total in (("gpus", settings.gpus), ("cpus", settings.cpus))}


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
        }
        entry["params_key"] = _params_key(entry)
        rows.append(entry)
    columns = ["run", "backbone", "trial_id", "status", "stage", "seed", "last_epoch", *PARAM_NAMES, "metric_name", "metric", "ar",
               "spearman", "wall_s", "gpus", "cpus", "max_epochs", "params_key"]
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
                                 "once at full budget")
    band = z * math.sqrt(2.0) * noise.sigma
    how = (f"gap {gap:.4g} {'<=' if gap <= band else '>'} {z:g}·√2·σ̂ = {band:.4g} "
           f"(σ̂ = {noise.sigma:.4g} from {noise.groups} repeated setting(s), {noise.dof} dof)")
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
            "cpu_hours": total("cpus", False)}
