"""The searcher: :class:`PruningAwareOptunaSearch`, Optuna ask/tell for Ray Tune (docs/trust.md#the-searcher)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from rspose_tune._numbers import finite_or_none as _finite
from rspose_tune._storage import read_text, write_text
from rspose_tune.spaces import validate_space

from ._journal import journal_location, local_journal, upload_journal
from ._rules import SAMPLERS, TPE_OPTION_KEYS, TPE_OPTIONS, make_sampler, to_optuna_state
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
    STATE_FORMAT,
    STATE_VERSION,
    Record,
    check_format,
    reconcile,
)

logger = logging.getLogger("rspose_tune.searcher")


class PruningAwareOptunaSearch(Searcher):
    """Optuna TPE (ask/tell) for Ray Tune with correct states for scheduler-stopped trials.

    The semantics (pruning, off components, warm start, resume): docs/trust.md#the-searcher.

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
        tpe_options: ``TPESampler`` keyword arguments (default :data:`TPE_OPTIONS`); e.g.
            ``{}`` for Optuna's independent TPE.
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
        }  # fmt: skip
        self._sampler = sampler
        self._study: optuna.Study | None = None
        self._live: dict[str, optuna.Trial] = {}  # Ray trial id -> running Optuna trial
        self._records: dict[str, Record] = {}
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

    def save(self, checkpoint_path: str) -> None:
        """Upload the journal when it lives on an object store (:meth:`sync_journal`), then write
        :meth:`get_state` as JSON (atomically) to ``checkpoint_path``."""
        self.sync_journal()
        write_text(checkpoint_path, json.dumps(self.get_state(), indent=1, allow_nan=False))

    def restore(self, checkpoint_path: str) -> None:
        """Read a :meth:`save` file and reopen the study from its journal (see :meth:`set_state`)."""
        try:
            state = json.loads(read_text(checkpoint_path))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{checkpoint_path!r} is not a PruningAwareOptunaSearch state file (JSON): {exc}"
            ) from exc
        self.set_state(state)

    def sync_journal(self) -> None:
        """Upload the local working copy of a journal on an object store (no-op otherwise)."""
        upload_journal(self._journal_local, self._journal_path)

    def unfinished_trial_ids(self) -> list[str]:
        """Ray trials this searcher suggested that have not finished (after a restore: those that
        were running when the state was saved; Ray resumes them)."""
        return sorted(tid for tid, r in self._records.items() if r.state in (RUNNING, INTERRUPTED))

    def get_state(self) -> dict[str, Any]:
        """The explicit, JSON-serialisable state (version :data:`STATE_VERSION`)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "study_name": self._study_name,
            "journal_path": self._journal_path,
            "metric": self._metric,
            "mode": self._mode,
            "max_epochs": self._max_epochs,
            "time_attr": self._time_attr,
            "seed": self._seed,
            "space": {n: spec_json(d) for n, d in self._dims.items()},
            "known_good_used": self._known_good_used,
            "trials": {tid: r.to_json() for tid, r in self._records.items()},
            "pending": sorted(tid for tid, r in self._records.items() if r.state == RUNNING),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`get_state` output and reopen the study from the journal.

        The settings in ``state`` must match this searcher's (space, budget, metric, mode, study
        name, time attribute); trials pending in ``state`` are interrupted: FAIL in Optuna,
        re-run if Ray resumes them (docs/trust.md#resume).
        """
        self._load_state(state)
        self._open_study()

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher inside tuner.pkl; keep that explicit as well (no live objects).
        return {"init": dict(self._init_kwargs), "state": self.get_state() if self._records else None}

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        self.__init__(**pickled["init"])  # type: ignore[misc]
        if pickled["state"] is not None:
            self._load_state(pickled["state"])  # the study is opened on first use

    # ---------------------------------------------------------------- internals
    def _local_journal(self) -> str:
        """The journal file Optuna writes: the path itself, or a local copy of a URI's journal."""
        path = local_journal(self._journal_path, self._journal_local)  # type: ignore[arg-type]
        if path != self._journal_path:
            self._journal_local = path
        return path

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

    def _load_state(self, state: Mapping[str, Any]) -> None:
        check_format(state)
        ours = {"study_name": self._study_name, "max_epochs": self._max_epochs, "time_attr": self._time_attr,
                "space": {n: spec_json(d) for n, d in self._dims.items()}}  # fmt: skip
        saved_space = state.get("space")
        if isinstance(saved_space, Mapping):  # one saved before a parameter with a default existed has it fixed there
            specs = validate_space(saved_space, source="the saved searcher state's space")
            state = {**state, "space": {n: spec_json(d) for n, d in specs.items()}}
        for key, mine in ours.items():
            if state[key] != mine:
                raise ValueError(
                    f"The saved searcher has {key}={state[key]!r}, but this searcher has {key}={mine!r}; "
                    "resume with the settings of the original run."
                )
        for key in ("metric", "mode"):
            mine, saved = getattr(self, f"_{key}"), state[key]
            if mine is not None and saved is not None and mine != saved:
                raise ValueError(f"The saved searcher has {key}={saved!r}, but this searcher has {key}={mine!r}.")
            if mine is None and saved is not None:
                setattr(self, f"_{key}", saved)
                self._init_kwargs[key] = saved
        if self._journal_path is None:
            self._journal_path = journal_location(state["journal_path"])
            self._init_kwargs["journal_path"] = self._journal_path
        if self._journal_path is None and state["trials"]:
            raise ValueError(
                "Cannot restore the search history: the saved searcher used an in-memory study and this "
                "one has no `journal_path`. Only journal-backed searches can be resumed."
            )
        self._records = {tid: Record(**rec) for tid, rec in state["trials"].items()}
        self._known_good_used = max(self._known_good_used, int(state["known_good_used"]))
        self._study, self._live = None, {}

    def _open_study(self) -> optuna.Study:
        if self._study is not None:
            return self._study
        if self._metric is None or self._mode is None:
            raise ValueError(
                f"PruningAwareOptunaSearch needs `metric` and `mode` (got metric={self._metric!r}, "
                f"mode={self._mode!r}): pass them to PruningAwareOptunaSearch(...) or to "
                "tune.TuneConfig(metric=..., mode=...) with a non-empty `param_space`."
            )
        if self._journal_path is None:
            storage: optuna.storages.BaseStorage = optuna.storages.InMemoryStorage()
        else:
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(self._local_journal()))
        direction = "maximize" if self._mode == "max" else "minimize"
        study = optuna.create_study(
            storage=storage,
            study_name=self._study_name,
            direction=direction,
            load_if_exists=True,
            pruner=optuna.pruners.NopPruner(),
            sampler=optuna.samplers.RandomSampler(),  # replaced below, once the history is known
        )
        if study.direction.name.lower() != direction:
            raise ValueError(
                f"The study {self._study_name!r} in {self._journal_path!r} has direction "
                f"{study.direction.name.lower()}, but mode={self._mode!r} needs {direction}."
            )
        trials = study.get_trials(deepcopy=False)
        study.sampler = make_sampler(self._sampler, self._seed, len(trials), self._n_startup_trials, self._tpe_options)
        self._known_good_used = reconcile(study, trials, self._records, known_good_used=self._known_good_used,
                                          journal_path=self._journal_path, study_name=self._study_name)
        self._study = study
        return study

    def _report(self, trial_id: str, record: Record, result: Mapping[str, Any]) -> None:
        epoch = result.get(self._time_attr)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch != int(epoch):
            if f"epoch:{trial_id}" not in self._warned:
                self._warned.add(f"epoch:{trial_id}")
                logger.warning("Result of trial %r has no integer %r (got %r); not told to Optuna.",
                               trial_id, self._time_attr, epoch)  # fmt: skip
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
        kept = {s: v for s, v in old.intermediate_values.items() if s < epoch}
        for step in sorted(kept):
            trial.report(kept[step], step=step)
        logger.info("PruningAwareOptunaSearch: Ray trial %r resumed at %s %d; Optuna trial #%d continues #%d.",
                    trial_id, self._time_attr, epoch, trial.number, record.number)  # fmt: skip
        self._live[trial_id] = trial
        last = max(kept, default=0)
        record.number, record.state = trial.number, RUNNING
        record.last_epoch, record.last_value = last, _finite(kept.get(last))


# Pickles (Ray's tuner.pkl) name the class by the package, as before the split, so a move inside it breaks none.
PruningAwareOptunaSearch.__module__ = "rspose_tune.searcher"
