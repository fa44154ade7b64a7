"""The searcher: :class:`PruningAwareOptunaSearch`, Optuna ask/tell for Ray Tune (docs/trust.md#the-searcher)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from rspose_tune._numbers import finite_or_none as _finite
from rspose_tune.spaces import validate_space

from ._journal import journal_location
from ._persistence import Persistence
from ._rules import SAMPLERS, TPE_OPTION_KEYS, TPE_OPTIONS, to_optuna_state
from ._space import known_good_params, sample, spec_json, warm_entry
from ._state import (
    ATTR_FAIL_REASON,
    ATTR_KNOWN_GOOD,
    ATTR_LAST_EPOCH,
    ATTR_RAY_ID,
    ATTR_RERUN_OF,
    ATTR_WARM_START,
    COMPLETE,
    FAIL,
    INTERRUPTED,
    PRUNED,
    RECORD_OF_STATE,
    RUNNING,
    Record,
)

logger = logging.getLogger("rspose_tune.searcher")


class PruningAwareOptunaSearch(Persistence, Searcher):
    """Optuna TPE (ask/tell) for Ray Tune with correct states for scheduler-stopped trials.

    The semantics (pruning, off components, warm start, resume): docs/trust.md#the-searcher. Saving,
    restoring and pickling are the :class:`~rspose_tune.searcher._persistence.Persistence` half.

    Args:
        space: ``{name: spec}`` for every :data:`PARAM_NAMES` (one with a default may be left out:
            fixed at it); a spec is a preset's ``{low, high, log, allow_off}`` or ``{fixed}``, the
            five keys ``low``, ``high`` (both None: fixed), ``log``, ``fixed`` and ``allow_off`` (a
            saved state), or a :class:`rspose_tune.spaces.ParamSpec`; validated by
            :func:`rspose_tune.spaces.validate_space` (:class:`~rspose_tune.spaces.SearchSpaceError`).
        max_epochs: The full budget; only trials reaching it are COMPLETE.
        metric: Result key to optimise (``None``: taken from ``tune.TuneConfig``).
        mode: ``"max"`` or ``"min"`` (``None``: taken from ``tune.TuneConfig``).
        known_good: Settings tried first, in order (``None``/0 coefficient: component off).
        warm_start: Settings tried right after ``known_good``: ``{"params": {the values},
            "source": str}``; the Optuna trial records ``source`` (user attribute
            ``rspose:warm_start``). The values must lie in ``space``.
        tpe_options: ``TPESampler`` keyword arguments and ``random_fraction`` (the share of
            proposals after the start-up drawn at random; :data:`TPE_OPTION_KEYS`; default
            :data:`TPE_OPTIONS`); e.g. ``{}`` for Optuna's independent TPE.
        sampler: One of :data:`SAMPLERS`: ``"tpe"`` (the default), ``"random"`` (every trial
            random, as TPE's start-up trials; ``n_startup_trials`` and ``tpe_options`` do not
            apply) or ``"gp"``: Optuna's ``GPSampler`` (a Gaussian process over the COMPLETE
            trials; parameters outside the space every trial shares, such as the delta of a
            component that may be off, are sampled at random). Compared on recorded curves by
            ``python -m rspose_tune.replay --policies asha-tpe asha-random asha-gp``.
        journal_path: Optuna journal file (``<run dir>/optuna.journal``), a local path or a URI
            that :mod:`pyarrow.fs` opens (``s3://...``: a local working copy is uploaded at every
            :meth:`save`, docs/trust.md#resume); ``None``: in memory (no resume across processes).
        study_name: Optuna study name inside the journal.
        seed: TPE seed (``None``: nondeterministic).
        n_startup_trials: Random trials before TPE models the history.
        time_attr: Result key holding the (1-based) epoch.
    """

    CKPT_FILE_TMPL = "searcher-state-{}.json"

    def __init__(
        self,
        space: Mapping[str, Any],
        *,
        max_epochs: int,
        metric: str | None = None,
        mode: str | None = None,
        known_good: Sequence[Mapping[str, float | None]] = (),
        journal_path: str | os.PathLike[str] | None = None,
        study_name: str = "rspose",
        seed: int | None = 0,
        n_startup_trials: int = 10,
        time_attr: str = "epoch",
        warm_start: Sequence[Mapping[str, Any]] = (),
        tpe_options: Mapping[str, Any] | None = None,
        sampler: str = "tpe",
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` is {sampler!r}, but must be one of {list(SAMPLERS)}.")
        if mode not in (None, "max", "min"):
            raise ValueError(f"`mode` is {mode!r}, but must be 'max', 'min' or None.")
        if metric is not None and not isinstance(metric, str):
            raise ValueError(f"`metric` is {metric!r}, but must be a str (one objective) or None.")
        to_optuna_state(None, max_epochs, False)  # validates max_epochs
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 0:
            raise ValueError(f"`n_startup_trials` is {n_startup_trials!r}, but must be an int >= 0.")
        super().__init__(metric=metric, mode=mode)
        self._dims = validate_space(space)
        self._known_good = [dict(e) if isinstance(e, Mapping) else e for e in known_good]
        self._warm_start = [warm_entry(e, i) for i, e in enumerate(warm_start)]
        self._known_good_params = [known_good_params(e, i, self._dims) for i, e in enumerate(self._known_good)]
        self._known_good_params += [
            known_good_params(e["params"], len(self._known_good) + i, self._dims) for i, e in enumerate(self._warm_start)
        ]
        self._tpe_options = dict(TPE_OPTIONS if tpe_options is None else tpe_options)
        unknown = sorted(set(self._tpe_options) - set(TPE_OPTION_KEYS))
        if unknown:
            raise ValueError(f"`tpe_options` has unsupported keys {unknown}.")
        self._max_epochs = max_epochs
        self._journal_path = journal_location(journal_path)
        self._journal_local: str | None = None  # local working copy of a journal on an object store
        self._study_name = study_name
        self._seed = seed
        self._n_startup_trials = n_startup_trials
        self._time_attr = time_attr
        self._init_kwargs = {
            "space": {n: spec_json(d) for n, d in self._dims.items()}, "max_epochs": max_epochs,
            "metric": metric, "mode": mode, "known_good": self._known_good,
            "journal_path": self._journal_path, "study_name": study_name, "seed": seed,
            "n_startup_trials": n_startup_trials, "time_attr": time_attr, "warm_start": self._warm_start,
            "tpe_options": self._tpe_options, "sampler": sampler,
        }
        self._sampler = sampler
        self._study: optuna.Study | None = None
        self._live: dict[str, optuna.Trial] = {}  # Ray trial id -> running Optuna trial
        self._records: dict[str, Record] = {}
        self._recorded: dict[str, dict[int, float]] = {}  # the run's rows' metrics (use_recorded_metrics)
        self._known_good_used = 0
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- properties
    @property
    def journal_path(self) -> str | None:
        return self._journal_path

    @property
    def max_epochs(self) -> int:
        return self._max_epochs

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (opened, or created, on first use)."""
        return self._open_study()

    # ---------------------------------------------------------------- Ray Tune API
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``tune.TuneConfig`` where not given to the constructor.

        Returns False (Ray then explains) when ``config`` holds Ray search domains: the space
        belongs to this searcher; constant entries of ``param_space`` are fine.
        """
        from ray.tune.search.variant_generator import parse_spec_vars

        _, domains, grids = parse_spec_vars(config or {})
        if domains or grids:
            return False
        for key, new in (("metric", metric), ("mode", mode)):
            old = getattr(self, f"_{key}")
            if new is None or new == old:
                continue
            if old is not None:
                raise ValueError(
                    f"tune.TuneConfig({key}={new!r}) conflicts with "
                    f"PruningAwareOptunaSearch({key}={old!r}); pass the same value to both or only one."
                )
            if key == "mode" and new not in ("max", "min"):
                raise ValueError(f"`mode` is {new!r}, but must be 'max' or 'min'.")
            setattr(self, f"_{key}", new)
            self._init_kwargs[key] = new
        return True

    def suggest(self, trial_id: str) -> dict[str, float | None]:
        """The next config: known-good settings first (in order), then TPE proposals."""
        study = self._open_study()
        if trial_id in self._records:
            raise ValueError(f"Ray trial id {trial_id!r} was already suggested; ids must be unique.")
        if self._known_good_used < len(self._known_good_params):
            index = self._known_good_used
            attrs: dict[str, Any] = {ATTR_KNOWN_GOOD: index}
            if index >= len(self._known_good):
                attrs[ATTR_WARM_START] = self._warm_start[index - len(self._known_good)]["source"]
            study.enqueue_trial(self._known_good_params[index], user_attrs=attrs)
            self._known_good_used += 1
        trial = study.ask()
        trial.set_user_attr(ATTR_RAY_ID, trial_id)
        config = sample(trial, self._dims)
        self._live[trial_id] = trial
        self._records[trial_id] = Record(number=trial.number, params=dict(trial.params))
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Report ``result[metric]`` as the intermediate value at step ``result[time_attr]``."""
        record = self._record(trial_id)
        if record is not None:
            self._report(trial_id, record, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Finish the Optuna trial: COMPLETE / PRUNED / FAIL (see :func:`to_optuna_state`).

        Ray passes the result that made the scheduler stop the trial only here (not to
        ``on_trial_result``), so it is reported first.
        """
        record = self._record(trial_id)
        if record is None:
            return
        if result and not error:
            self._report(trial_id, record, result)
        if record.state == INTERRUPTED:  # already FAIL in Optuna; no new epoch came
            record.state = FAIL
        if record.state != RUNNING:
            return
        trial = self._live.pop(trial_id)
        state = to_optuna_state(record.last_epoch, self._max_epochs, error)
        value = None
        reason = None
        if state == TrialState.COMPLETE:
            value = record.last_value
            if value is None:
                state, reason = TrialState.FAIL, f"no finite `{self._metric}` at epoch {record.last_epoch}"
        elif state == TrialState.FAIL:
            reason = "the trial raised an error" if error else f"ended before reporting any `{self._time_attr}`"
        trial.set_user_attr(ATTR_LAST_EPOCH, record.last_epoch)
        if reason is not None:
            trial.set_user_attr(ATTR_FAIL_REASON, reason)
        self._open_study().tell(trial, value, state=state)
        record.state = RECORD_OF_STATE[state]

    def use_recorded_metrics(self, metrics: Mapping[str, Mapping[int, float | None]]) -> None:
        """Give a restored searcher the run's record of each trial's metric by epoch (its Parquet
        rows: ``{ray_trial_id: {epoch: metric}}``; non-finite values are left out).

        The rows are written at every result; the journal reaches the storage only with an
        experiment snapshot. A driver killed in between leaves the journal without the last epochs
        of a running trial, which resumes from its newest checkpoint with a row and reports the
        epoch after it: the Optuna trial that continues it takes the epochs before that from these
        metrics, where the journal has them too or not at all. Held for this start only (not saved:
        the next start reads the rows again)."""
        self._recorded = {str(tid): {int(e): v for e, v in steps.items() if _finite(v) is not None}
                          for tid, steps in metrics.items()}

    def unfinished_trial_ids(self) -> list[str]:
        """Ray trials this searcher suggested that have not finished (after a restore: those that
        were running when the state was saved; Ray resumes them)."""
        return sorted(tid for tid, r in self._records.items() if r.state in (RUNNING, INTERRUPTED))

    # ---------------------------------------------------------------- internals
    def _record(self, trial_id: str) -> Record | None:
        if self._study is None and self._records:  # unpickled mid-search: reconcile first
            self._open_study()
        record = self._records.get(trial_id)
        if record is None and trial_id not in self._warned:
            self._warned.add(trial_id)
            logger.warning(
                "PruningAwareOptunaSearch: ignoring Ray trial %r, which this searcher did not suggest "
                "(a trial restarted under a new id?); it is not recorded in the Optuna study.",
                trial_id,
            )
        return record

    def _report(self, trial_id: str, record: Record, result: Mapping[str, Any]) -> None:
        epoch = result.get(self._time_attr)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch != int(epoch):
            if f"epoch:{trial_id}" not in self._warned:
                self._warned.add(f"epoch:{trial_id}")
                logger.warning("Result of trial %r has no integer %r (got %r); not told to Optuna.",
                               trial_id, self._time_attr, epoch)
            return
        epoch = int(epoch)
        if record.state in (RUNNING, COMPLETE, PRUNED) and epoch <= record.last_epoch:
            return  # a retried trial re-reports epochs Optuna has, or Ray repeats a completion
        if record.state != RUNNING:
            self._rerun(trial_id, record, epoch)
        value = _finite(result.get(self._metric))
        if value is not None:
            self._live[trial_id].report(value, step=epoch)
        record.last_epoch, record.last_value = epoch, value

    def _rerun(self, trial_id: str, record: Record, epoch: int) -> None:
        """A finished/interrupted trial reports again (Ray resumed it): continue in a new trial."""
        study = self._open_study()
        old = next(t for t in study.get_trials(deepcopy=False) if t.number == record.number)
        study.enqueue_trial(record.params, user_attrs={ATTR_RERUN_OF: record.number, ATTR_RAY_ID: trial_id})
        trial = study.ask()
        sample(trial, self._dims)
        known = {**old.intermediate_values, **self._recorded.get(trial_id, {})}  # the rows are the record
        kept = {s: v for s, v in known.items() if s < epoch}
        for step in sorted(kept):
            trial.report(kept[step], step=step)
        logger.info("PruningAwareOptunaSearch: Ray trial %r resumed at %s %d; Optuna trial #%d continues #%d.",
                    trial_id, self._time_attr, epoch, trial.number, record.number)
        self._live[trial_id] = trial
        last = max(kept, default=0)
        record.number, record.state = trial.number, RUNNING
        record.last_epoch, record.last_value = last, _finite(kept.get(last))


# Pickles (Ray's tuner.pkl) name the class by the package, as before the split, so a move inside it breaks none.
PruningAwareOptunaSearch.__module__ = "rspose_tune.searcher"
