"""The confirm stage, replayed: after a replayed search, re-run its best settings on further seeds.

What the live search does (``--confirm-top K --confirm-seeds N``, :mod:`rspose_tune._stages`):
take the K best *distinct* full-budget search trials by their observed metric (under the
PASHA-style scheduler: trials of the top level it reached, by their metric there), train each again
on the N seeds after the search's training seed, never pruned, and choose the setting with the
best mean over those seeds; the report calls the winner *distinguishable* from the runner-up when
the paired t-interval of their per-seed differences excludes 0
(:func:`rspose_tune.report.paired_difference`).

Here every search trial of a replay replayed the curves of one training seed
(:attr:`rspose_tune.replay.Trace.search_seed`); a candidate's confirm curves are its recorded
curves on the N other seeds, taken in the order ``search seed + 1, + 2, ...`` (wrapping around the
recorded seeds), the same seeds for every candidate, as the live stage trains all on the same
seeds. Candidates are distinct *recorded settings* (two proposals answered by the same setting
replay the same curves). A candidate without a curve on a wanted seed is confirmed on fewer
(counted in :attr:`ConfirmOutcome.short`); one without any confirm curve cannot be confirmed.

Racing (``race_after=R``, the replay's ``--confirm-race R``; not in the live stage): the seeds are
trained in rounds, one seed for every remaining candidate per round; after round R and each later
one, a candidate whose paired t-interval against the current leader (best mean over the rounds so
far) lies wholly on the worse side is dropped and trains no further seed, as Optuna's
``WilcoxonPruner`` or SMAC's intensifier drop a configuration once paired seeds show it worse.
"""

from __future__ import annotations

from dataclasses import dataclass

from rspose_tune.replay._simulator import Trace
from rspose_tune.replay._table import CurveTable

__all__ = ["ConfirmOutcome", "confirm", "confirm_seeds"]


@dataclass(frozen=True)
class ConfirmOutcome:
    """What one replayed confirm stage chose.

    Attributes:
        candidates: Setting indices confirmed, best search trial first.
        seeds: The training seeds of the confirm stage.
        by_seed: Per candidate, its final metric on each confirm seed it has.
        winner: The candidate with the best mean over its confirm seeds (None: nothing confirmable).
        correct: The winner is the table's best setting (by its mean over all recorded curves).
        regret: Table's best minus the winner's mean over all its recorded curves (0 when correct).
        epochs: Epochs the confirm stage trained (one full budget per confirm curve).
        distinguishable: The paired t-interval of winner minus runner-up excludes 0 (None: fewer
            than 2 candidates or 2 paired seeds).
        short: Candidates confirmed on fewer than the wanted seeds (the table lacks their curves).
        dropped: Candidates racing dropped before their last seed.
    """

    candidates: tuple[int, ...]
    seeds: tuple[int, ...]
    by_seed: dict[int, dict[int, float]]
    winner: int | None
    correct: bool
    regret: float
    epochs: int
    distinguishable: bool | None
    short: int
    dropped: int = 0


def confirm_seeds(table: CurveTable, search_seed: int | None, n: int) -> tuple[int, ...]:
    """The ``n`` recorded training seeds after ``search_seed`` (wrapping around), excluding it."""
    recorded = sorted({c.seed for cs in table.curves for c in cs if c.seed is not None})
    if search_seed is None or search_seed not in recorded:
        return tuple(recorded[:n])
    start = recorded.index(search_seed)
    others = recorded[start + 1:] + recorded[:start]
    return tuple(others[:n])


def confirm(table: CurveTable, trace: Trace, top: int, seeds: int, race_after: int = 0,
            rank_epochs: int | None = None) -> ConfirmOutcome:
    """Replay the confirm stage of ``--confirm-top top --confirm-seeds seeds`` after ``trace``
    (``race_after`` >= 2: with racing from that round on, see the module docstring; 0: none).

    ``rank_epochs``: rank the candidates by their metric at this epoch, among every trial that
    reached it (e.g. the top ASHA rung below the full budget, so a trial ASHA stopped there can be
    a candidate); default: the answer's level (the full budget)."""
    from rspose_tune.report import paired_difference

    if top < 1 or seeds < 1:
        raise ValueError(f"`top` and `seeds` are {top} and {seeds}, but must both be >= 1.")
    if race_after != 0 and race_after < 2:
        raise ValueError(f"`race_after` is {race_after}, but must be 0 (no racing) or >= 2 (a paired test needs 2 seeds).")
    finals: dict[int, float] = {}  # setting -> best observed full-budget metric of its search trials
    order: list[int] = []
    level = trace.final_epochs or table.max_epochs  # the full budget; PASHA-style: its top level at the end
    if rank_epochs is not None:
        level = rank_epochs
    for record in trace.trials:
        if record.last_epoch < level:
            continue
        curve = next(c for c in table.curves[record.setting] if c.trial_id == record.curve)
        value = curve.metric[list(curve.epochs).index(level)]  # as observed at the ranking level
        if record.setting not in finals:
            order.append(record.setting)
            finals[record.setting] = value
        elif table.better(value, finals[record.setting]):
            finals[record.setting] = value
    # Best first; a tie keeps the earlier trial first, as a stable sort of the live trials does.
    ranked = sorted(order, key=lambda i: -finals[i] if table.mode == "max" else finals[i])
    candidates = tuple(ranked[:top])
    wanted = confirm_seeds(table, trace.search_seed, seeds)
    by_seed: dict[int, dict[int, float]] = {}
    short = 0
    for index in candidates:
        got = {s: curve.metric[-1] for s in wanted if (curve := table.curve_of_seed(index, s)) is not None}
        short += len(got) < seeds
        by_seed[index] = got
    dropped = _race(table, by_seed, wanted, race_after, paired_difference) if race_after else 0
    confirmable = [i for i in candidates if by_seed[i]]
    epochs = sum(len(v) for v in by_seed.values()) * table.max_epochs
    if not confirmable:
        return ConfirmOutcome(candidates, wanted, by_seed, None, False, float("nan"), epochs, None, short, dropped)

    def mean(i: int) -> float:
        return sum(by_seed[i].values()) / len(by_seed[i])

    ranked_confirm = sorted(confirmable, key=lambda i: -mean(i) if table.mode == "max" else mean(i))
    winner = ranked_confirm[0]
    distinguishable = None
    if len(ranked_confirm) > 1:
        distinguishable = paired_difference(by_seed[winner], by_seed[ranked_confirm[1]]).distinguishable
    correct = winner == table.best_index
    return ConfirmOutcome(candidates, wanted, by_seed, winner, correct, table.regret(table.value(winner)), epochs,
                          distinguishable, short, dropped)


def _race(table: CurveTable, by_seed: dict[int, dict[int, float]], wanted: tuple[int, ...], race_after: int,
          paired_difference) -> int:
    """Cut ``by_seed`` (in place) to the seeds each candidate trains under racing; return how many
    candidates were dropped before their last seed."""
    alive = [i for i in by_seed if by_seed[i]]
    trained = {i: {} for i in by_seed}
    dropped = 0
    for r, seed in enumerate(wanted, start=1):
        for i in alive:
            if seed in by_seed[i]:
                trained[i][seed] = by_seed[i][seed]
        if r < race_after or r == len(wanted) or len(alive) < 2:
            continue

        def mean(i: int) -> float:
            return sum(trained[i].values()) / len(trained[i]) if trained[i] else float("nan")

        leader = max(alive, key=mean) if table.mode == "max" else min(alive, key=mean)
        keep = [leader]
        for i in alive:
            if i == leader:
                continue
            diff = paired_difference(trained[leader], trained[i])  # leader minus i, per shared seed
            worse = diff.distinguishable and (diff.mean > 0 if table.mode == "max" else diff.mean < 0)
            if worse:
                dropped += 1
            else:
                keep.append(i)
        alive = keep
    for i in by_seed:
        by_seed[i] = trained[i]
    return dropped
