"""Replay one search policy on a :class:`~rspose_tune.replay.CurveTable` with a simulated clock.

The decisions are made by the code a live search runs (``rspose_tune.search.run_search``):

- proposals: :class:`rspose_tune.searcher.PruningAwareOptunaSearch` (Optuna's TPESampler with
  :data:`rspose_tune.searcher.TPE_OPTIONS`; random search is the same searcher with Optuna's
  RandomSampler, as ``--sampler random``), wrapped in
  :class:`rspose_tune.searcher.ResumableConcurrencyLimiter` (Ray's ``ConcurrencyLimiter``);
- stopping: Ray's :class:`~ray.tune.schedulers.ASHAScheduler` (``time_attr="epoch"``) or
  :class:`~ray.tune.schedulers.FIFOScheduler` (full budget), called with no Ray cluster: the
  schedulers only read ``trial.trial_id`` and the result.

Only Ray's trial controller is replaced, by :func:`replay`, which calls the scheduler and the
searcher in the order ``ray.tune.execution.tune_controller.TuneController`` does for each result:
``scheduler.on_trial_result``; if it says STOP (or the curve ends), ``scheduler.on_trial_complete``
then ``search_alg.on_trial_complete`` with that result; otherwise ``search_alg.on_trial_result``.

Simulated clock: ``workers`` trials run at once; a trial's result at its k-th reported epoch
arrives after the recorded wall seconds of that interval; a free worker at once starts the next
proposal. Each proposal is answered by the table's nearest recorded setting
(:meth:`CurveTable.nearest`) and one of its curves. As in a live search, where every search trial
trains on ``--seed``, a replay draws one training seed (from the replay seed, among the seeds every
setting has: :attr:`CurveTable.common_seeds`) and replays that seed's curve of each setting; the
confirm stage (:mod:`rspose_tune.replay._confirm`) then uses the other seeds. A table whose curves
have no common seed answers each trial with a curve drawn from the replay seed.
The budget is in epochs trained: a replay stops before the first result that would exceed it.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from rspose_tune.replay._common import ReplayError
from rspose_tune.replay._table import CurveTable
from rspose_tune.searcher._rules import SAMPLERS

__all__ = ["POLICIES", "Policy", "REPEAT_CURVES", "ReplaySettings", "Trace", "TrialRecord", "make_scheduler", "make_searcher",
           "option_rule", "replay", "simulate"]


@dataclass(frozen=True)
class Policy:
    """A search policy: how settings are proposed and whether ASHA stops trials early."""

    name: str
    sampler: str  # "tpe" | "gp" | "random"
    scheduler: str  # "asha" | "fifo" | "pasha" (rspose_tune._pasha: replay only)


#: The policies, by CLI name.
POLICIES = {
    "asha-tpe": Policy("ASHA+TPE", "tpe", "asha"),
    "asha-random": Policy("ASHA+random", "random", "asha"),
    "full-tpe": Policy("full-budget TPE", "tpe", "fifo"),
    "full-random": Policy("full-budget random", "random", "fifo"),
    "asha-gp": Policy("ASHA+GP", "gp", "asha"),
    "full-gp": Policy("full-budget GP", "gp", "fifo"),
    "pasha-tpe": Policy("PASHA-style+TPE", "tpe", "pasha"),
}
#: The policies replayed when none is named (GP is slower to replay: named on request).
DEFAULT_POLICIES = ("asha-tpe", "asha-random", "full-tpe", "full-random")


@dataclass(frozen=True)
class ReplaySettings:
    """What a replay may spend and the searcher's/scheduler's options.

    Attributes:
        budget_epochs: Epochs trained, over all trials, before the replay stops (>= 0).
        workers: Trials running at once (W, >= 1).
        grace_epochs: ASHA grace period (>= 1, <= the table's max_epochs).
        reduction_factor: ASHA reduction factor (> 1).
        n_startup_trials: TPE's random start-up trials (default ``None``: the live search's rule,
            :func:`rspose_tune.searcher.startup_trials`, for one trial per recorded setting; see
            :meth:`for_table`).
        known_good: Ask the table's known-good settings first (as the live search does).
        search_space: The space the searcher proposes from, ``{name: {low, high, log, fixed,
            allow_off}}`` (default ``None``: the table's own). The table's space still matches each
            proposal to a recorded setting (:meth:`CurveTable.nearest`), so a policy with another
            scaling of a parameter is measured with the same instrument.
        tpe_options: ``TPESampler`` options over :data:`rspose_tune.searcher.TPE_OPTIONS` (default
            ``None``: the live search's, unchanged).
        repeat_curves: What answers a proposal matched to a setting this replay already tried:
            ``"same"`` (default): its curve on the search's training seed again, as a live search
            training that very setting again would see; ``"other-seeds"``: unless the proposal is
            the recorded setting itself, the setting's curve on its next recorded training seed
            (cycling), as a live search training a *nearby* setting would see fresh training
            noise instead of a copy of the first result (docs/replay.md, "Fourth round").
    """

    budget_epochs: int
    workers: int = 4
    grace_epochs: int = 2
    reduction_factor: float = 3
    n_startup_trials: int | None = None
    known_good: bool = False
    search_space: dict | None = None
    tpe_options: dict | None = None
    repeat_curves: str = "same"

    def for_table(self, table: CurveTable) -> ReplaySettings:
        """These settings with ``n_startup_trials`` filled in when ``None``, as the live search of
        ``len(table.settings)`` trials sets it (:func:`rspose_tune.searcher.startup_trials`)."""
        if self.n_startup_trials is not None:
            return self
        from rspose_tune.searcher import startup_trials

        return dataclasses.replace(self, n_startup_trials=startup_trials(len(table.settings)))

    def check(self, max_epochs: int, sources: dict[str, str] | None = None) -> None:
        """Raise :class:`ReplayError` naming the option (or, in ``sources``, where its value came
        from: a flag, a table's recorded budget) and the rule (:func:`option_rule`) it breaks."""
        if self.repeat_curves not in REPEAT_CURVES:
            raise ReplayError(f"The value of `repeat_curves` is {self.repeat_curves!r}, but must be one of "
                              f"{list(REPEAT_CURVES)}.")
        for name in _OPTION_LOWEST:
            value = getattr(self, name)
            rule = None if name == "n_startup_trials" and value is None else option_rule(name, value, max_epochs)
            if rule and sources and name in sources:
                raise ReplayError(f"{sources[name]} is {value!r}, but must be {rule}")
            if rule:
                raise ReplayError(f"The value of `{name}` is {value!r}, but must be {rule}.")


#: The values of :attr:`ReplaySettings.repeat_curves`.
REPEAT_CURVES = ("same", "other-seeds")
#: The checked options of :class:`ReplaySettings` and their lowest value (``reduction_factor``: above 1).
_OPTION_LOWEST = {"budget_epochs": 0, "workers": 1, "grace_epochs": 1, "reduction_factor": 1, "n_startup_trials": 0}


def option_rule(name: str, value: object, max_epochs: int | None = None) -> str | None:
    """The rule ``value`` breaks as option ``name`` of :class:`ReplaySettings`, or ``None``: the one
    home of these rules (``check`` and the replay CLI's flags use it). ``max_epochs=None`` (a flag,
    read before the table): ``grace_epochs``'s upper bound is not checked."""
    if name == "reduction_factor":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 1
        return None if ok else "a finite number > 1"
    low = _OPTION_LOWEST[name]
    if name == "grace_epochs" and max_epochs is not None:
        ok = _is_int(value) and low <= value <= max_epochs  # type: ignore[operator]
        return None if ok else f"an integer in [{low}, {max_epochs}] (the table's max_epochs)"
    return None if _is_int(value) and value >= low else f"an integer >= {low}"  # type: ignore[operator]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class TrialRecord:
    """One simulated trial."""

    trial_id: str
    config: dict
    setting: int  # index of the recorded setting that answered
    curve: str  # trial id of the recorded curve replayed
    distance: float
    exact: bool
    same_pattern: bool
    start_s: float
    end_s: float | None = None
    last_epoch: int = 0
    stopped: bool = False  # the scheduler stopped it before the full budget
    startup: bool = False  # proposed while fewer than n_startup_trials trials had ended (TPE/GP: at random)


@dataclass
class Trace:
    """What one replay did.

    Attributes:
        trials: Every trial started, in order.
        events: ``(epochs spent, simulated seconds)`` after each processed result.
        incumbents: ``(epochs spent, simulated seconds, observed metric, setting index)`` each time
            a full-budget trial became the best so far (by its observed metric, as a live search
            reports it); under the PASHA-style scheduler, a trial that ended at the top level then
            reached (the best of the highest level reached is the answer).
        spent_epochs, clock_s: Totals at the end.
        decisions: ``(trial_id, epoch, metric, decision)`` for every result given to the scheduler.
        search_seed: The training seed whose curves the search trials replayed.
        final_epochs: The epoch level the answer is chosen at: the full budget, or the PASHA-style
            scheduler's top level at the end.
    """

    policy: Policy
    seed: int
    trials: list[TrialRecord] = field(default_factory=list)
    events: list[tuple[int, float]] = field(default_factory=list)
    incumbents: list[tuple[int, float, float, int]] = field(default_factory=list)
    decisions: list[tuple[str, int, float, str]] = field(default_factory=list)
    spent_epochs: int = 0
    clock_s: float = 0.0
    search_seed: int | None = None  # the training seed of every search trial (None: drawn per trial)
    final_epochs: int | None = None


class _SimTrial:
    """What Ray's schedulers read of a trial."""

    __slots__ = ("trial_id",)

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def make_scheduler(policy: Policy, table: CurveTable, settings: ReplaySettings):
    """Ray's scheduler for ``policy``, built by the live search's own factory (the PASHA-style one,
    replay only, by :class:`rspose_tune._pasha.ProgressiveASHAScheduler`)."""
    from rspose_tune.searcher import build_scheduler

    if policy.scheduler == "pasha":
        from rspose_tune._pasha import ProgressiveASHAScheduler

        return ProgressiveASHAScheduler(metric="metric", mode=table.mode, time_attr="epoch", max_t=table.max_epochs,
                                        grace_period=settings.grace_epochs,
                                        reduction_factor=settings.reduction_factor)

    return build_scheduler(policy.scheduler, mode=table.mode, max_epochs=table.max_epochs,
                           grace_epochs=settings.grace_epochs, reduction_factor=settings.reduction_factor)


def make_searcher(policy: Policy, table: CurveTable, settings: ReplaySettings, seed: int):
    """The project's searcher (in memory) in its concurrency limiter, as the live search builds it."""
    settings = settings.for_table(table)
    from rspose_tune.searcher import TPE_OPTIONS, PruningAwareOptunaSearch, ResumableConcurrencyLimiter

    searcher = PruningAwareOptunaSearch(
        table.space if settings.search_space is None else settings.search_space,
        max_epochs=table.max_epochs,
        metric="metric",
        mode=table.mode,
        known_good=table.known_good if settings.known_good else (),
        journal_path=None,
        seed=seed,
        n_startup_trials=settings.n_startup_trials,
        tpe_options={**TPE_OPTIONS, **(settings.tpe_options or {})},  # constant liar, as rspose_tune.search
        sampler=policy.sampler,  # random: Optuna's RandomSampler, as `--sampler random`
    )
    return ResumableConcurrencyLimiter(searcher, max_concurrent=settings.workers)


def replay(table: CurveTable, policy: Policy, seed: int, settings: ReplaySettings) -> Trace:
    """Replay ``policy`` once (search seed ``seed``) on ``table``; see the module docstring."""
    settings = settings.for_table(table)
    settings.check(table.max_epochs)
    if policy.sampler not in SAMPLERS or policy.scheduler not in ("asha", "fifo", "pasha"):
        raise ValueError(f"Unknown policy {policy!r}: sampler must be one of {list(SAMPLERS)}, "
                         "scheduler 'asha', 'fifo' or 'pasha'.")
    scheduler = make_scheduler(policy, table, settings)
    search_alg = make_searcher(policy, table, settings, seed)
    return simulate(table, scheduler, search_alg, settings=settings, seed=seed, policy=policy)


def simulate(table: CurveTable, scheduler, search_alg, *, settings: ReplaySettings, seed: int,
             policy: Policy | None = None) -> Trace:
    """Run ``search_alg`` (a Ray ``Searcher``) and ``scheduler`` (a Ray ``TrialScheduler``) on the table.

    This is the part of Ray's trial controller the replay replaces (module docstring); ``seed``
    draws which curve of a setting each trial replays.
    """
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    settings = settings.for_table(table)
    settings.check(table.max_epochs)
    rng = np.random.default_rng(seed)
    trace = Trace(policy=policy or Policy("custom", "custom", "custom"), seed=seed)
    common = table.common_seeds
    trace.search_seed = int(common[int(rng.integers(len(common)))]) if common else None
    queue: list[tuple[float, int, int, int]] = []  # (time, sequence, trial number, curve index k)
    running: dict[int, tuple[_SimTrial, object]] = {}
    clock, spent, seq, ended = 0.0, 0, 0, 0
    best: float | None = None
    best_level = 0  # the level (epochs) of the current answer
    # Optuna's samplers propose at random until n_startup_trials trials are COMPLETE or PRUNED, so
    # with W workers more than n_startup_trials start at random (Ray issue #52535): counted here.
    random_policy = policy is not None and policy.sampler == "random"
    answered: dict[int, int] = {}  # setting -> trials it answered so far (repeat_curves="other-seeds")

    while True:
        while len(running) < settings.workers and spent < settings.budget_epochs:
            number = len(trace.trials)
            trial = _SimTrial(f"replay{seed}_{number:05d}")
            config = search_alg.suggest(trial.trial_id)
            if config is None or config == Searcher.FINISHED:
                break
            match = table.nearest(config)
            curves = table.curves[match.index]
            if trace.search_seed is not None:
                curve = table.curve_of_seed(match.index, trace.search_seed)
                repeats = answered.get(match.index, 0)
                if settings.repeat_curves == "other-seeds" and repeats and not match.exact:
                    seeds = sorted(c.seed for c in curves)  # common seeds: every curve's seed is known
                    start = seeds.index(trace.search_seed)
                    curve = table.curve_of_seed(match.index, seeds[(start + repeats) % len(seeds)])
                answered[match.index] = repeats + 1
            else:
                curve = curves[int(rng.integers(len(curves)))]
            scheduler.on_trial_add(None, trial)
            record = TrialRecord(trial.trial_id, dict(config), match.index, curve.trial_id, match.distance,
                                 match.exact, match.same_pattern, start_s=clock,
                                 startup=random_policy or ended < settings.n_startup_trials)
            trace.trials.append(record)
            running[number] = (trial, curve)
            heapq.heappush(queue, (clock + curve.seconds[0], seq, number, 0))
            seq += 1
        if not queue:
            break
        when, _, number, k = heapq.heappop(queue)
        trial, curve = running[number]
        epoch = curve.epochs[k]
        step = epoch - (curve.epochs[k - 1] if k else 0)
        if spent + step > settings.budget_epochs:
            break
        clock, spent = when, spent + step
        trace.events.append((spent, clock))
        record = trace.trials[number]
        record.last_epoch = epoch
        result = {"epoch": epoch, "metric": curve.metric[k], "trial_id": trial.trial_id, "training_iteration": k + 1}
        decision = scheduler.on_trial_result(None, trial, result)
        trace.decisions.append((trial.trial_id, epoch, curve.metric[k], decision))
        last = k == len(curve.epochs) - 1
        if decision == TrialScheduler.STOP or last:
            if decision != TrialScheduler.STOP:
                search_alg.on_trial_result(trial.trial_id, result)  # the trial then ends by itself
            scheduler.on_trial_complete(None, trial, result)
            search_alg.on_trial_complete(trial.trial_id, result=result)
            ended += 1
            del running[number]
            record.end_s, record.stopped = clock, epoch < table.max_epochs
            level = getattr(scheduler, "top_epochs", table.max_epochs)  # the answer's level (PASHA: grows)
            if epoch >= level and (epoch > best_level or best is None or table.better(curve.metric[k], best)):
                best, best_level = curve.metric[k], epoch
                trace.incumbents.append((spent, clock, best, record.setting))
        else:
            search_alg.on_trial_result(trial.trial_id, result)
            heapq.heappush(queue, (clock + curve.seconds[k + 1], seq, number, k + 1))
            seq += 1
    trace.spent_epochs, trace.clock_s = spent, clock
    trace.final_epochs = int(getattr(scheduler, "top_epochs", table.max_epochs))
    return trace

