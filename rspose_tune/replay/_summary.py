"""Aggregate replays over search seeds: median and inter-quartile range, regret, epochs to a target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rspose_tune.replay._simulator import Trace
from rspose_tune.replay._table import CurveTable
from rspose_tune.spaces import loss_param

__all__ = ["ConfirmSummary", "PolicySummary", "checkpoints", "format_confirm", "format_report", "incumbent_at", "summarize",
           "summarize_confirm", "time_at"]


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
    startup: float  # median trials started while fewer than n_startup_trials had ended (TPE: at random)
    stopped_share: float  # trials the scheduler stopped early, over all seeds
    exact_share: float  # proposals that were a recorded setting
    other_pattern_share: float  # proposals answered from another on/off pattern
    median_distance: float
    distinct: float = math.nan  # median recorded settings tried per search
    repeated_share: float = math.nan  # epochs that replayed a curve segment the same search had seen


def repeated_epochs(trace: Trace) -> int:
    """Epochs of ``trace`` that replayed a stretch of a curve its search had already seen: a trial
    answered by a recorded setting an earlier trial also got (same search seed, so the same curve)
    learns nothing new up to the epoch the earlier ones reached. In a live search those proposals
    are distinct settings near the recorded one; the table cannot say how they would differ, so a
    large share means the table, not the policy, decides the outcome (docs/replay.md)."""
    seen: dict[tuple[int, str], int] = {}
    repeated = 0
    for record in sorted(trace.trials, key=lambda r: r.start_s):
        key = (record.setting, record.curve)
        if key in seen:
            repeated += min(record.last_epoch, seen[key])
        seen[key] = max(seen.get(key, 0), record.last_epoch)
    return repeated


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
        })
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
        startup=float(np.median([sum(r.startup for r in t.trials) for t in traces])),
        stopped_share=sum(t.stopped for t in trials) / n,
        exact_share=sum(t.exact for t in trials) / n,
        other_pattern_share=sum(not t.same_pattern for t in trials) / n,
        median_distance=float(np.median([t.distance for t in trials])) if trials else math.nan,
        distinct=float(np.median([len({r.setting for r in t.trials}) for t in traces])),
        repeated_share=sum(repeated_epochs(t) for t in traces) / max(sum(t.spent_epochs for t in traces), 1),
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
        f"  {'policy':<20} {'reached':>8}  {'epochs':<22} {'sim. time':<30} {'trials':>6}  {'start-up':>8}  "
        f"{'stopped':>7}  {'nearest':>7}  {'other on/off':>12}  {'median dist.':>12}  {'distinct':>8}  {'repeated':>8}",
    ]
    for s in summaries:
        lines.append(
            f"  {s.name:<20} {s.reached:>4}/{s.seeds:<3}  {_q(s.reach_epochs, '.0f'):<22} {_qt(s.reach_time):<30} "
            f"{s.trials:>6.0f}  {s.startup:>8.0f}  {s.stopped_share:>7.0%}  {1 - s.exact_share:>7.1%}  {s.other_pattern_share:>12.1%}  "
            f"{s.median_distance:>12.3f}  {s.distinct:>8.0f}  {s.repeated_share:>8.0%}"
        )
    lines += [
        "",
        "start-up: median trials proposed before TPE/GP took over (fewer than the start-up count had ended; all,",
        "for random); with W workers it exceeds the start-up count (Ray issue #52535).",
        "nearest: share of proposals answered by the nearest recorded setting instead of exactly; other on/off:",
        "share answered from a setting with other components switched on/off (none recorded with the proposal's);",
        "median dist.: proposal to answer, in the unit cube of the searched parameters (log where the space is).",
        "distinct: median recorded settings a search tried; repeated: share of epochs replaying a stretch of a curve",
        "the same search had already seen (a proposal answered by a setting tried before): the table cannot tell",
        "those proposals apart, so where this is large the table's resolution, not the policy, limits the replay.",
    ]
    return "\n".join(lines)


@dataclass
class ConfirmSummary:
    """One policy's replayed confirm stages over search seeds (see :mod:`rspose_tune.replay._confirm`).

    Attributes:
        replays: Replays (search seeds).
        correct: Replays whose confirm winner is the table's best setting.
        search_correct: Replays whose search alone (its best observed full-budget trial) named it.
        regret: (median, q25, q75) of the winner's regret over all replays (inf: nothing confirmable).
        regret_wrong: The same over the replays whose winner was not the table's best.
        epochs: Median epochs of the confirm stage.
        wrong_distinguishable: Wrong winners the paired test still called distinguishable.
        right_distinguishable: Right winners it called distinguishable.
        short: Candidates confirmed on fewer seeds than asked (their curves are not in the table).
        unconfirmed: Replays with no candidate to confirm.
        dropped: Candidates racing dropped before their last seed, over all replays.
        correct_seeds: The search seeds (:attr:`Trace.seed`) of the replays counted in ``correct``, so two
            policies replayed on the same seeds can be compared seed by seed (:func:`paired_comparison`).
    """

    name: str
    replays: int
    correct: int
    search_correct: int
    regret: tuple[float, float, float]
    regret_wrong: tuple[float, float, float]
    epochs: float
    wrong_distinguishable: int
    right_distinguishable: int
    short: int
    unconfirmed: int
    dropped: int = 0
    correct_seeds: tuple[int, ...] = ()


def summarize_confirm(table: CurveTable, traces: Sequence[Trace], outcomes: Sequence) -> ConfirmSummary:
    """Aggregate :func:`rspose_tune.replay._confirm.confirm` outcomes (one per trace)."""
    if not outcomes or len(outcomes) != len(traces):
        raise ValueError("`outcomes` must hold one confirm outcome per trace.")
    regrets = [o.regret if o.winner is not None else math.inf for o in outcomes]
    wrong = [r for r, o in zip(regrets, outcomes) if not o.correct]
    search_correct = 0
    for trace in traces:
        last = trace.incumbents[-1] if trace.incumbents else None
        search_correct += last is not None and last[3] == table.best_index
    return ConfirmSummary(
        name=traces[0].policy.name,
        replays=len(outcomes),
        correct=sum(o.correct for o in outcomes),
        search_correct=search_correct,
        regret=_quartiles(regrets),
        regret_wrong=_quartiles(wrong) if wrong else (math.nan, math.nan, math.nan),
        epochs=float(np.median([o.epochs for o in outcomes])),
        wrong_distinguishable=sum(bool(o.distinguishable) for o in outcomes if not o.correct),
        right_distinguishable=sum(bool(o.distinguishable) for o in outcomes if o.correct),
        short=sum(o.short for o in outcomes),
        unconfirmed=sum(o.winner is None for o in outcomes),
        dropped=sum(o.dropped for o in outcomes),
        correct_seeds=tuple(t.seed for t, o in zip(traces, outcomes) if o.correct),
    )


@dataclass(frozen=True)
class PairedComparison:
    """Two policies' confirm stages on the same search seeds, seed by seed (McNemar's exact test).

    Attributes:
        first, second: The policies' names.
        both, first_only, second_only, neither: Replays (seeds) where both, only the first, only the
            second, or neither named the table's best.
        p_value: Two-sided exact McNemar p-value: the binomial test of ``first_only`` in
            ``first_only + second_only`` discordant seeds at 1/2 (``scipy.stats.binomtest``); 1.0 with
            no discordant seed.
    """

    first: str
    second: str
    both: int
    first_only: int
    second_only: int
    neither: int
    p_value: float


def paired_comparison(first: ConfirmSummary, second: ConfirmSummary, seeds: Sequence[int]) -> PairedComparison:
    """Compare two policies replayed on the same ``seeds`` by the seeds on which each named the best.

    The seeds pair the replays: a search seed fixes the training seed the search trials replay and
    the samplers' seeds, and TPE's start-up trials are random search's first trials, so the two
    counts are not independent and a paired test is the fair one."""
    from scipy.stats import binomtest

    a, b = set(first.correct_seeds), set(second.correct_seeds)
    every = set(seeds)
    if not (a | b) <= every:
        raise ValueError("`seeds` must hold every seed of both summaries' correct_seeds.")
    first_only, second_only = len(a - b), len(b - a)
    discordant = first_only + second_only
    p = float(binomtest(first_only, discordant, 0.5).pvalue) if discordant else 1.0
    return PairedComparison(first.name, second.name, len(a & b), first_only, second_only,
                            len(every - a - b), p)


def format_paired(comparisons: Sequence[PairedComparison]) -> str:
    """The CLI's seed-by-seed comparison lines (one per pair of policies)."""
    lines = ["", "Seed by seed (the same search seeds; exact McNemar test on the seeds where only one names the best):"]
    for c in comparisons:
        lines.append(f"  {c.first} vs {c.second}: both {c.both}, only {c.first} {c.first_only}, only {c.second} "
                     f"{c.second_only}, neither {c.neither}; two-sided p = {c.p_value:.3f}")
    return "\n".join(lines)


def format_confirm(table: CurveTable, summaries: Sequence[ConfirmSummary], *, top: int, seeds: int,
                   race: int = 0, level: int | None = None) -> str:
    """The confirm-stage section the CLI prints (``level``: the candidates were ranked at that
    ASHA rung, ``--confirm-from rung``; None: at the full budget)."""
    m = table.metric_name
    racing = f" --confirm-race {race}" if race else ""
    if level is not None:
        racing += " --confirm-from rung"
    where = "full-budget settings" if level is None else f"settings at epoch {level} (the highest ASHA rung below the full budget)"
    lines = [
        "",
        f"Confirm stage (--confirm-top {top} --confirm-seeds {seeds}{racing}) after each replayed search: the {top} best "
        f"distinct {where}",
        "re-run on the other recorded training seeds; winner = best mean over them. 'names best': the winner is the",
        f"table's best setting (mean over all its curves); 'search alone': the search's best trial already was;",
        f"regret in {m}, median [IQR] over replays; 'wrong, distinguishable': wrong winners whose paired",
        "t-interval against the runner-up excluded 0 (the report would have called them distinguishable).",
        f"  {'policy':<20} {'names best':>12} {'search alone':>13}  {'regret':<24} {'regret when wrong':<24} "
        f"{'confirm epochs':>14} {'wrong, distinguishable':>22} {'short':>6}",
    ]
    for s in summaries:
        wrong = s.replays - s.correct
        lines.append(
            f"  {s.name:<20} {s.correct:>4}/{s.replays:<3} {s.correct / s.replays:>4.0%} "
            f"{s.search_correct:>5}/{s.replays:<3} {s.search_correct / s.replays:>3.0%}  {_q(s.regret, '.4f'):<24} "
            f"{(_q(s.regret_wrong, '.4f') if wrong else '-'):<24} {s.epochs:>14.0f} {s.wrong_distinguishable:>13} of {wrong:<6}"
            f" {s.short:>6}"
        )
    if race:
        lines.append(f"racing: from seed {race} on, a candidate whose paired t-interval against the leader was wholly "
                     "worse trained no further seed; dropped: " + ", ".join(f"{s.name} {s.dropped}" for s in summaries))
    if any(s.short for s in summaries):
        lines.append("short: candidates confirmed on fewer seeds than asked, because the table has no curve of theirs on a "
                     "wanted seed.")
    if any(s.unconfirmed for s in summaries):
        lines.append("Replays with nothing to confirm (no full-budget trial): "
                     + ", ".join(f"{s.name} {s.unconfirmed}" for s in summaries if s.unconfirmed))
    return "\n".join(lines)
