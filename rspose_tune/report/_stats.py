"""Statistics for choosing a setting you can trust (:mod:`rspose_tune.report`): the confirm stage's
Student-t intervals, paired differences over shared seeds, the stock-loss baseline, and the
Spearman fidelity of each ASHA rung (scipy)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rspose_tune._numbers import finite_or_none as _number
from rspose_tune.spaces import PARAM_NAMES

from ._load import RunSettings
from ._summary import _ranked, _stage

__all__ = ["CONFIDENCE", "FIDELITY_BANDS", "FIDELITY_LOW", "SELECTION_BIAS_NOTE", "Comparison", "ConfirmedSetting",
           "RungFidelity", "baseline_by_seed", "confirmed_settings", "fidelity_band", "fidelity_lines",
           "paired_difference", "repeated_seeds", "rung_fidelity", "t_interval", "top_settings"]

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
                f"{self.high:+.{digits}g}] over {len(self.seeds)} paired seeds")


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
                "mean": self.mean, "low": self.low, "high": self.high, **self.params}


def _by_seed(rows: pd.DataFrame) -> dict[int, float]:
    """Final metric per training seed. A seed trained more than once (the same setting and seed
    in several merged runs) counts once, as the mean of its trials (:func:`repeated_seeds` names
    them for the report's notes): nothing is dropped, and no seed weighs twice in an interval."""
    seeded = rows[rows["seed"].notna()]
    return {int(seed): float(group["metric"].astype(float).mean())
            for seed, group in seeded.groupby("seed", sort=True)}


def repeated_seeds(rows: pd.DataFrame) -> dict[int, list[str]]:
    """Seeds with more than one trial among ``rows``: seed -> ``run/trial`` of each."""
    seeded = rows[rows["seed"].notna()]
    return {int(seed): sorted(f"{r}/{t}" for r, t in zip(group["run"], group["trial_id"]))
            for seed, group in seeded.groupby("seed", sort=True) if len(group) > 1}


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
        ))
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
              for c in confirmed]
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
                     f"grace period, e.g. --grace-epochs {suggestion}.")
    return lines
