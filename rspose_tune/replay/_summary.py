"""Aggregate replays over search seeds: median and inter-quartile range, regret, epochs to a target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rspose_tune.replay._simulator import Trace
from rspose_tune.replay._table import CurveTable
from rspose_tune.spaces import loss_param

__all__ = ["PolicySummary", "checkpoints", "format_report", "incumbent_at", "summarize", "time_at"]


def checkpoints(max_epochs: int, budget: int) -> list[int]:
    """Epoch budgets to report: 1, 2, 5, 10, 20, 50, ... full trainings, up to ``budget`` (included)."""
    out, k = [], 0
    while True:
        mult = (1, 2, 5)[k % 3] * 10 ** (k // 3)
        value = mult * max_epochs
        if value >= budget:
            break
        out.append(value)
        k += 1
    return [*out, budget] if budget > 0 else [0]


def incumbent_at(trace: Trace, epochs: int) -> tuple[float, int] | None:
    """``(observed metric, setting index)`` of the best full-budget trial after ``epochs`` epochs."""
    found = None
    for spent, _, metric, setting in trace.incumbents:
        if spent > epochs:
            break
        found = (metric, setting)
    return found


def time_at(trace: Trace, epochs: int) -> float:
    """Simulated seconds when ``epochs`` epochs had been spent (the end, if never)."""
    for spent, clock in trace.events:
        if spent >= epochs:
            return clock
    return trace.clock_s


def _reach(trace: Trace, table: CurveTable, target: float) -> tuple[float, float]:
    """(epochs, seconds) at which the incumbent first had regret <= target; inf if never."""
    for spent, clock, _, setting in trace.incumbents:
        if table.regret(table.value(setting)) <= target + 1e-12:
            return float(spent), float(clock)
    return math.inf, math.inf


_BIG = 1e300


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, q25, q75); infinite values (nothing found) stay infinite where they take part."""
    v = np.asarray(values, dtype=float)
    q = np.percentile(np.clip(v, -_BIG, _BIG), [25, 50, 75], method="linear")
    q = np.where(np.abs(q) >= _BIG / 4, np.copysign(math.inf, q), q)  # interpolated with a missing seed
    return float(q[1]), float(q[0]), float(q[2])


@dataclass
class PolicySummary:
    """Statistics of one policy over search seeds (quartiles are (median, q25, q75)).

    A seed with nothing found yet counts as the worst value (shown as "-" when it decides a
    quartile).
    """

    name: str
    seeds: int
    rows: list[dict]  # per checkpoint: epochs, time, found, best, regret
    reach_epochs: tuple[float, float, float]
    reach_time: tuple[float, float, float]
    reached: int
    trials: float  # median trials started
    stopped_share: float  # trials the scheduler stopped early, over all seeds
    exact_share: float  # proposals that were a recorded setting
    other_pattern_share: float  # proposals answered from another on/off pattern
    median_distance: float


def summarize(table: CurveTable, traces: Sequence[Trace], budget: int, target: float) -> PolicySummary:
    """Quartiles over ``traces`` (one policy, one trace per seed) at :func:`checkpoints`."""
    if not traces:
        raise ValueError("`traces` is empty; replay at least one seed.")
    sign = 1.0 if table.mode == "max" else -1.0
    rows = []
    for epochs in checkpoints(table.max_epochs, budget):
        best, regret, found = [], [], 0
        for trace in traces:
            inc = incumbent_at(trace, epochs)
            if inc is None:
                best.append(-math.inf * sign)
                regret.append(math.inf)
            else:
                found += 1
                best.append(inc[0])
                regret.append(table.regret(table.value(inc[1])))
        rows.append({
            "epochs": epochs,
            "time": float(np.median([time_at(t, epochs) for t in traces])),
            "found": found,
            "best": _quartiles(best),
            "regret": _quartiles(regret),
        })  # fmt: skip
    reach = [_reach(t, table, target) for t in traces]
    trials = [t for trace in traces for t in trace.trials]
    n = max(len(trials), 1)
    return PolicySummary(
        name=traces[0].policy.name,
        seeds=len(traces),
        rows=rows,
        reach_epochs=_quartiles([r[0] for r in reach]),
        reach_time=_quartiles([r[1] for r in reach]),
        reached=sum(math.isfinite(r[0]) for r in reach),
        trials=float(np.median([len(t.trials) for t in traces])),
        stopped_share=sum(t.stopped for t in trials) / n,
        exact_share=sum(t.exact for t in trials) / n,
        other_pattern_share=sum(not t.same_pattern for t in trials) / n,
        median_distance=float(np.median([t.distance for t in trials])) if trials else math.nan,
    )


def _num(value: float, fmt: str = ".3f") -> str:
    return format(value, fmt) if math.isfinite(value) else "-"


def _q(q: tuple[float, float, float], fmt: str = ".3f") -> str:
    return f"{_num(q[0], fmt)} [{_num(q[1], fmt)}, {_num(q[2], fmt)}]"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _qt(q: tuple[float, float, float]) -> str:
    return f"{_clock(q[0])} [{_clock(q[1])}, {_clock(q[2])}]"


def format_report(table: CurveTable, summaries: Sequence[PolicySummary], *, header: str, target: float) -> str:
    """The text the CLI prints."""
    m = table.metric_name
    best = table.settings[table.best_index]
    shown = ", ".join(f"{k}={'off' if v is None else f'{v:g}'}" for k, v in best.items() if loss_param(k).kind != "coeff" or v != 0)
    lines = [
        header,
        f"table: {table.source}",
        f"  {len(table.settings)} settings, {table.n_curves} full {table.max_epochs}-epoch curves"
        + (f" ({table.skipped_trials} shorter trials ignored)" if table.skipped_trials else "")
        + f"; metric {m} ({table.mode})",
        f"  table's best: {table.best_value:.4f} (mean over its curves) at {shown}",
        "",
        f"Best full-budget {m} found (observed, as the search reports it) and regret (table's best minus the",
        "found setting's mean over its curves) vs epochs spent: median [inter-quartile range] over seeds;",
        "sim. time is the median simulated wall clock; '-' where seeds had found nothing yet.",
    ]
    for s in summaries:
        lines += ["", f"{s.name}", f"  {'epochs':>7}  {'sim. time':>9}  {'found':>6}  {'best ' + m:<26}  regret"]
        for row in s.rows:
            lines.append(
                f"  {row['epochs']:>7}  {_clock(row['time']):>9}  {row['found']:>2}/{s.seeds:<3}  "
                f"{_q(row['best']):<26}  {_q(row['regret'])}"
            )
    lines += [
        "",
        f"To get within {target:g} {m} of the table's best (regret <= {target:g}); median [IQR] over seeds:",
        f"  {'policy':<20} {'reached':>8}  {'epochs':<22} {'sim. time':<30} {'trials':>6}  {'stopped':>7}  "
        f"{'nearest':>7}  {'other on/off':>12}  {'median dist.':>12}",
    ]
    for s in summaries:
        lines.append(
            f"  {s.name:<20} {s.reached:>4}/{s.seeds:<3}  {_q(s.reach_epochs, '.0f'):<22} {_qt(s.reach_time):<30} "
            f"{s.trials:>6.0f}  {s.stopped_share:>7.0%}  {1 - s.exact_share:>7.1%}  {s.other_pattern_share:>12.1%}  "
            f"{s.median_distance:>12.3f}"
        )
    lines += [
        "",
        "nearest: share of proposals answered by the nearest recorded setting instead of exactly; other on/off:",
        "share answered from a setting with other components switched on/off (none recorded with the proposal's);",
        "median dist.: proposal to answer, in the unit cube of the searched parameters (log where the space is).",
    ]
    return "\n".join(lines)
