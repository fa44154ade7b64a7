"""The per-backbone report of :mod:`rspose_tune.report`: the chosen setting (the confirm stage's
winner, else the best full-budget search trial), the search's cost, the runner-up check, the
confirm stage, the baseline and the ASHA fidelity, over one or more runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from rspose_tune._asha import asha_rungs
from rspose_tune._numbers import finite_or_none as _number
from rspose_tune.spaces import PARAM_NAMES

from ._load import ReportError, RunData
from ._stats import (
    Comparison,
    ConfirmedSetting,
    RungFidelity,
    _repeated_seed_notes,
    baseline_by_seed,
    confirmed_settings,
    fidelity_lines,
    paired_difference,
    rung_fidelity,
)
from ._summary import (
    _stage,
    estimate_noise,
    gpu_hours,
    metric_mode,
    noise_flag,
    runner_up,
    select_best,
    summarize_trials,
)

__all__ = ["BackboneReport", "backbone_report"]


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
                   baseline_delta_high=self.baseline_delta and self.baseline_delta.high)
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
        if run.settings.source not in ("run metadata", "run spec"):  # a fallback: say where the settings came from
            notes.append(f"{run.name}: mode, resources and budget read from {run.settings.source}.")
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
                           "includes 0): either setting is as good as this evidence can tell")
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
