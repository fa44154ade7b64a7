"""Optuna TPE for Ray Tune that tells Optuna the truth about ASHA-stopped trials.

Why this exists: Ray's stock :class:`ray.tune.search.optuna.OptunaSearch` finishes every trial
that Ray stops as ``COMPLETE`` with its last (low-fidelity) metric, because Ray's controller
calls ``on_trial_complete`` for trials the scheduler stopped. TPE then ranks a 1-epoch score
next to a full-budget score. :class:`PruningAwareOptunaSearch` instead

- reports every result as an Optuna intermediate value (``trial.report(metric, step=epoch)``);
- when Ray ends a trial, tells Optuna :func:`to_optuna_state`: ``COMPLETE`` (with the final
  metric) only when the trial reached ``max_epochs``, ``PRUNED`` when it ended earlier (ASHA
  stopped it; TPE ranks pruned trials below all complete ones), ``FAIL`` on errors and for
  trials that ended before reporting any epoch (no evidence about their parameters).

Search space (define-by-run, Optuna ask/tell): each RSPose loss hyperparameter
(:data:`PARAM_NAMES`) is a float range (``log`` where asked) or a fixed value; one with a default
(``pos_thr``) may be left out and is then fixed at it. A component whose
coefficient has ``allow_off`` gets a categorical switch ``<component>_on`` in ``{True, False}``
(``rank_on``, ``sort_on``, ``inst_on``); only when it is on are its coefficient and delta
sampled. A coefficient fixed at 0 makes the component always off; a coefficient range starting
at 0 can also give "off" (then the delta is not sampled). Fixed values are not Optuna
parameters (the study shows only what was searched). The space is checked by the preset's own
model (:func:`rspose_tune.spaces.validate_space`: one rule set for presets, saved searcher states
and replay tables); a bad one raises :class:`~rspose_tune.spaces.SearchSpaceError` naming the key
path, e.g. ``params.delta_rank.low``.

Suggested configs always hold every key of :data:`PARAM_NAMES`. **An off component is ``coeff_<c> = 0.0`` and
``delta_<c> = None``** (the delta is meaningless; the results table stores both as null).

Known-good settings are enqueued (``study.enqueue_trial``) and asked one at a time before any
TPE proposal; their trials carry the user attribute ``rspose:known_good`` (index) so a resumed
study never re-runs them. **Warm-start** settings (the best of earlier runs, ``warm_start``)
come right after them, the same way; their trials also carry ``rspose:warm_start`` (where the
setting came from, e.g. ``/runs/vit-b-coco trial_ab12_00003 coco/AP=0.771``).

Parallel TPE (:data:`TPE_OPTIONS`, set explicitly, not left to Optuna's defaults):
``constant_liar=True`` (a running trial counts as a bad result while TPE proposes, so concurrent
proposals spread out instead of clustering) and ``multivariate=False``. Multivariate TPE with
``group=True`` (the form that copes with the on/off switches: one joint density per group of
parameters that occur together) was measured **worse** with 8 trials in flight and is left off:
``python -m rspose_tune.bench._tpe`` over 100 searches each, best setting found after 32 trials
worse than constant liar alone in 52 and better in 30 (paired Wilcoxon p = 0.0035), no
difference after 64 (p = 0.34); constant liar against independent TPE: better, p = 0.0018 (32)
and 0.0011 (64). Optuna 5's own defaults (constant liar, multivariate without groups, so the
switch-dependent parameters fall back to independent sampling) were no better than constant
liar alone either (docs/trust.md).

Persistence and resume (``--resume``):

- The study lives in an Optuna :class:`~optuna.storages.JournalStorage` file (conventionally
  ``<run dir>/optuna.journal``, :data:`JOURNAL_FILE_NAME`) that ``optuna-dashboard`` opens.
  Every Optuna trial records its Ray trial id (user attribute ``rspose:ray_trial_id``).
- **Journal on an object store** (``journal_path`` a URI such as ``s3://bucket/run/optuna.journal``;
  ``file://`` URIs are plain local files): Optuna's :class:`JournalFileBackend` needs a POSIX
  file (appends, locks), so the searcher works on a local copy (a fresh temporary folder per
  process, first filled from the URI when it exists) and uploads it with :mod:`pyarrow.fs` in
  every :meth:`~PruningAwareOptunaSearch.save`, i.e. at every Ray Tune experiment snapshot, before
  Ray uploads the searcher state of the same snapshot: the stored journal is never older than
  the stored state. Failure modes: what the study learned after the last snapshot exists only in
  the local copy; a driver killed before the next snapshot loses it, and the resumed study
  reconciles with the older stored journal (the state file of that snapshot agrees with it);
  an upload error makes Ray log "Experiment state snapshotting failed" and go on with the previous
  stored journal; two drivers on one run would overwrite each other's uploads (one driver per run).
- :meth:`~PruningAwareOptunaSearch.save` / :meth:`~PruningAwareOptunaSearch.restore` (called by
  Ray Tune for experiment checkpoints and by ``Tuner.restore``) write/read an explicit,
  versioned JSON state (:data:`STATE_VERSION`): settings, the Ray trial id -> Optuna trial
  number mapping, the last epoch told per trial and the pending (running) trials. Restoring
  reloads the study from the journal and checks that state file and journal agree.
- **Interrupted trials are told FAIL, then re-run on demand.** A trial that was RUNNING in the
  journal when the study is (re)opened by a new driver cannot be finished by anybody else, so
  it is finished as ``FAIL`` right away (it never stays RUNNING forever, whatever Ray's resume
  policy is). If Ray then resumes that trial under the same id (``resume_unfinished=True``, or a
  resumed errored trial), its next result opens a new Optuna trial with the same parameters
  (user attribute ``rspose:rerun_of`` = the old number) holding the old trial's intermediate
  values up to the resumed epoch, so the history is complete and nothing is counted twice.
- After a restore the TPE seed is derived from ``(seed, number of trials in the study)``, so a
  resumed search does not replay the proposals of its first start.
- Trials that Ray *restarts* under a new id (``ResumeConfig.RESTART``) were never suggested by
  this searcher and are ignored (a warning is logged); resume with ``resume_unfinished=True``.

Use :class:`ray.tune.search.ConcurrencyLimiter` around this searcher for parallel trials.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

# Re-exported (``from rspose_tune.searcher import ...`` keeps working; a run's tuner.pkl written before
# the move names rspose_tune.searcher.ResumableConcurrencyLimiter and still unpickles).
from rspose_tune._layout import JOURNAL_FILE
from rspose_tune._limiter import ResumableConcurrencyLimiter
from rspose_tune._numbers import finite_or_none as _finite
from rspose_tune._scheduler import build_scheduler  # re-exported
from rspose_tune.spaces import COMPONENTS, LOSS_PARAMS, PARAM_NAMES, ParamSpec, component_names, validate_space

__all__ = [
    "COMPONENTS",
    "JOURNAL_FILE_NAME",
    "PARAM_NAMES",
    "STATE_VERSION",
    "TPE_OPTIONS",
    "PruningAwareOptunaSearch",
    "ResumableConcurrencyLimiter",
    "build_scheduler",
    "to_optuna_state",
]

logger = logging.getLogger(__name__)

# COMPONENTS (from rspose_tune.spaces): component ``c`` has ``delta_<c>``, ``coeff_<c>`` and switch ``<c>_on``.
#: Conventional file name of the journal inside the run directory (defined by the run layout).
JOURNAL_FILE_NAME = JOURNAL_FILE
#: Version of the JSON state written by :meth:`PruningAwareOptunaSearch.save`.
STATE_VERSION = 1
_STATE_FORMAT = "rspose_tune.PruningAwareOptunaSearch"
#: The model-based samplers :class:`PruningAwareOptunaSearch` can use after its start-up trials.
SAMPLERS = ("tpe", "gp")
#: Optuna TPESampler options for parallel trials (see the module docstring).
TPE_OPTIONS = {"constant_liar": True, "multivariate": False}

_ATTR_RAY_ID = "rspose:ray_trial_id"
_ATTR_KNOWN_GOOD = "rspose:known_good"
_ATTR_WARM_START = "rspose:warm_start"
_ATTR_RERUN_OF = "rspose:rerun_of"
_ATTR_FAIL_REASON = "rspose:fail_reason"
_ATTR_LAST_EPOCH = "rspose:last_epoch"

# Record states: the first three mirror Optuna's finished states.
_COMPLETE, _PRUNED, _FAIL, _RUNNING, _INTERRUPTED = "complete", "pruned", "fail", "running", "interrupted"
_RECORD_OF_STATE = {TrialState.COMPLETE: _COMPLETE, TrialState.PRUNED: _PRUNED, TrialState.FAIL: _FAIL}


def startup_trials(num_trials: int, sampler: str = "tpe") -> int:
    """TPE's random start-up trials in a search of ``num_trials`` trials: a third of them, at least
    2 (``sampler="random"``: all of them). The live search records it in the run spec; the offline
    replay and ``bench tpe`` call this too, so they run what the search runs.

    No cap: it was at most 10 (Optuna's default) until the replays of issue 26 (docs/replay.md,
    "Why the search missed the best setting"): with a third of the ~100 trials a replayed search
    runs (32) instead of 10, TPE's confirm stage named the best setting in 14 instead of 12 of 40
    replays on the shipped demo table and 18 instead of 8 on the held-out one, each with a lower
    mean regret. Searches of up to 32 trials (the default for the real presets) are unchanged."""
    if sampler == "random":
        return num_trials
    return max(2, num_trials // 3)


def to_optuna_state(last_epoch: int | None, max_epochs: int, error: bool) -> TrialState:
    """The Optuna state of a trial that Ray Tune has ended.

    Args:
        last_epoch: The highest epoch the trial reported (``None`` or 0: none).
        max_epochs: The full budget; a trial that reached it is complete.
        error: Whether the trial raised an error.

    Returns:
        ``FAIL`` on error or when no epoch was reported (nothing was learned about the
        parameters), ``COMPLETE`` when ``last_epoch >= max_epochs``, else ``PRUNED`` (the
        scheduler stopped it early).
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"The value of `max_epochs` is {max_epochs!r}, but must be an int >= 1.")
    if last_epoch is not None and (
        isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < 0
    ):
        raise ValueError(f"The value of `last_epoch` is {last_epoch!r}, but must be None or an int >= 0.")
    if error or not last_epoch:
        return TrialState.FAIL
    if last_epoch >= max_epochs:
        return TrialState.COMPLETE
    return TrialState.PRUNED


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------


def _spec_json(spec: ParamSpec) -> dict[str, Any]:
    """A spec as the saved searcher state writes it (all five keys; ``low`` None: fixed)."""
    return {"low": spec.low, "high": spec.high, "log": spec.log, "fixed": spec.fixed, "allow_off": spec.allow_off}


def _known_good_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, but must be a finite number.")
    return float(value)


def _component_mode(coeff: ParamSpec) -> str:
    """'off' (always), 'switch' (sampled on/off) or 'on' (always) for a component's coefficient."""
    if coeff.is_fixed and coeff.fixed == 0:
        return "off"
    if coeff.allow_off:
        return "switch"
    return "on"


def _sample(trial: optuna.Trial, dims: Mapping[str, ParamSpec]) -> dict[str, float | None]:
    """Define-by-run sampling of one config (every key; off: coeff 0.0, delta None).

    Components first (in :data:`COMPONENTS` order), then the parameters of no component, so a
    space whose extra parameters are fixed asks Optuna exactly what it asked before they existed.
    """
    config: dict[str, float | None] = {}
    for c in COMPONENTS:
        delta, coeff = (dims[n] for n in component_names(c))
        mode = _component_mode(coeff)
        on = mode == "on" or (mode == "switch" and trial.suggest_categorical(f"{c}_on", (True, False)))
        value = _suggest(trial, coeff) if on else 0.0
        config[coeff.name] = value
        config[delta.name] = _suggest(trial, delta) if value != 0.0 else None  # coeff 0 (range from 0): off
    for p in LOSS_PARAMS:
        if p.component is None:
            config[p.name] = _suggest(trial, dims[p.name])
    return {name: config[name] for name in PARAM_NAMES}


def _suggest(trial: optuna.Trial, dim: ParamSpec) -> float | None:
    if dim.is_fixed:
        return dim.fixed
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)  # type: ignore[arg-type]


def _known_good_params(entry: Mapping[str, Any], i: int, dims: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Optuna parameters (switches and sampled values) that reproduce a known-good setting.

    ``None`` or 0 for a coefficient switches the component off (its delta is then ignored);
    a missing key is left to the sampler; fixed parameters must match their fixed value.
    """
    where = f"`known_good[{i}]`"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping of {list(PARAM_NAMES)}, got {entry!r}.")
    unknown = [k for k in entry if k not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"{where} has unknown parameters {unknown}; valid names are {list(PARAM_NAMES)}.")
    params: dict[str, Any] = {}

    def take(dim: ParamSpec) -> None:
        """The entry's value of ``dim``, checked against it; kept when the searcher samples ``dim``."""
        value = _known_good_value(entry[dim.name], f"{where}[{dim.name!r}]")
        if not dim.contains(value):
            rule = f"fixed at {dim.fixed!r}" if dim.is_fixed else f"in [{dim.low}, {dim.high}]"
            raise ValueError(f"{where}[{dim.name!r}] is {value!r}, but must be {rule}.")
        if not dim.is_fixed:
            params[dim.name] = value

    for p in LOSS_PARAMS:
        if p.component is None and p.name in entry:
            take(dims[p.name])
    for c in COMPONENTS:
        delta, coeff = (dims[n] for n in component_names(c))
        mode = _component_mode(coeff)
        if coeff.name in entry and entry[coeff.name] in (None, 0):
            if mode == "on" and not coeff.is_fixed and coeff.low == 0:
                params[coeff.name] = 0.0  # a range starting at 0 contains "off"
            elif mode == "on":
                raise ValueError(
                    f"{where} switches the {c} component off ({coeff.name}={entry[coeff.name]!r}), but "
                    f"the space does not allow it: give `{coeff.name}` allow_off, a fixed 0 or low 0."
                )
            elif mode == "switch":
                params[f"{c}_on"] = False
            continue
        present = [d for d in (delta, coeff) if d.name in entry]
        if not present:
            continue
        if mode == "off":
            raise ValueError(
                f"{where} sets the {c} component on ({', '.join(f'{d.name}={entry[d.name]!r}' for d in present)}), "
                f"but the space fixes `{coeff.name}` at 0 (always off)."
            )
        if mode == "switch":
            params[f"{c}_on"] = True
        for dim in present:
            take(dim)
    return params


def _warm_entry(entry: Any, i: int) -> dict[str, Any]:
    where = f"`warm_start[{i}]`"
    if not isinstance(entry, Mapping) or set(entry) != {"params", "source"}:
        raise ValueError(f"{where} must be a mapping with keys 'params' and 'source', got {entry!r}.")
    if not isinstance(entry["source"], str) or not isinstance(entry["params"], Mapping):
        raise ValueError(f"{where}: 'source' must be a str and 'params' a mapping, got {entry!r}.")
    return {"params": dict(entry["params"]), "source": entry["source"]}


def _journal_location(path: str | os.PathLike[str] | None) -> str | None:
    """An absolute local path; a URI on a non-local filesystem as is (``file://``: its path)."""
    if path is None:
        return None
    text = os.fspath(path)
    if "://" in text:
        fs, where = pafs.FileSystem.from_uri(text)
        return where if isinstance(fs, pafs.LocalFileSystem) else text
    return str(Path(text).expanduser().absolute())


def _derive_seed(seed: int | None, n_trials: int) -> int | None:
    """The TPE seed after ``n_trials`` trials exist (a reopened study must not replay proposals)."""
    if seed is None or n_trials == 0:
        return seed
    return (seed * 1_000_003 + n_trials * 7_919) % (2**32)


@dataclass
class _Record:
    """What the searcher knows about one Ray trial."""

    number: int  # Optuna trial number (the latest one for re-runs)
    params: dict[str, Any]  # Optuna params (switches included), to re-run the trial
    last_epoch: int = 0  # highest epoch told to Optuna
    last_value: float | None = None  # metric at ``last_epoch`` (None: not finite / missing)
    state: str = _RUNNING

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "params": self.params, "last_epoch": self.last_epoch,
                "last_value": self.last_value, "state": self.state}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The searcher
# --------------------------------------------------------------------------------------------


class PruningAwareOptunaSearch(Searcher):
    """Optuna TPE (ask/tell) for Ray Tune with correct states for scheduler-stopped trials.

    See the module docstring for the semantics (pruning, off components, resume).

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
        sampler: ``"tpe"`` (the default) or ``"gp"``: Optuna's ``GPSampler`` (a Gaussian process
            over the COMPLETE trials; parameters outside the space every trial shares, such as the
            delta of a component that may be off, are sampled at random). Compared on recorded
            curves by ``python -m rspose_tune.replay --policies asha-tpe asha-gp``.
        journal_path: Optuna journal file (``<run dir>/optuna.journal``), a local path or a URI
            that :mod:`pyarrow.fs` opens (``s3://...``: a local working copy is uploaded at every
            :meth:`save`, see the module docstring); ``None``: in memory (no resume across processes).
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
        self._warm_start = [_warm_entry(e, i) for i, e in enumerate(warm_start)]
        self._known_good_params = [_known_good_params(e, i, self._dims) for i, e in enumerate(self._known_good)]
        self._known_good_params += [
            _known_good_params(e["params"], len(self._known_good) + i, self._dims) for i, e in enumerate(self._warm_start)
        ]
        self._tpe_options = dict(TPE_OPTIONS if tpe_options is None else tpe_options)
        unknown = sorted(set(self._tpe_options) - {"constant_liar", "multivariate", "group", "consider_endpoints",
                                                   "n_ei_candidates", "prior_weight"})  # fmt: skip
        if unknown:
            raise ValueError(f"`tpe_options` has unsupported keys {unknown}.")
        self._max_epochs = max_epochs
        self._journal_path = _journal_location(journal_path)
        self._journal_local: str | None = None  # local working copy of a journal on an object store
        self._study_name = study_name
        self._seed = seed
        self._n_startup_trials = n_startup_trials
        self._time_attr = time_attr
        self._init_kwargs = {
            "space": {n: _spec_json(d) for n, d in self._dims.items()}, "max_epochs": max_epochs,
            "metric": metric, "mode": mode, "known_good": self._known_good,
            "journal_path": self._journal_path, "study_name": study_name, "seed": seed,
            "n_startup_trials": n_startup_trials, "time_attr": time_attr, "warm_start": self._warm_start,
            "tpe_options": self._tpe_options, "sampler": sampler,
        }  # fmt: skip
        self._sampler = sampler
        self._study: optuna.Study | None = None
        self._live: dict[str, optuna.Trial] = {}  # Ray trial id -> running Optuna trial
        self._records: dict[str, _Record] = {}
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
            attrs: dict[str, Any] = {_ATTR_KNOWN_GOOD: index}
            if index >= len(self._known_good):
                attrs[_ATTR_WARM_START] = self._warm_start[index - len(self._known_good)]["source"]
            study.enqueue_trial(self._known_good_params[index], user_attrs=attrs)
            self._known_good_used += 1
        trial = study.ask()
        trial.set_user_attr(_ATTR_RAY_ID, trial_id)
        config = _sample(trial, self._dims)
        self._live[trial_id] = trial
        self._records[trial_id] = _Record(number=trial.number, params=dict(trial.params))
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
        if record.state == _INTERRUPTED:  # already FAIL in Optuna; no new epoch came
            record.state = _FAIL
        if record.state != _RUNNING:
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
        trial.set_user_attr(_ATTR_LAST_EPOCH, record.last_epoch)
        if reason is not None:
            trial.set_user_attr(_ATTR_FAIL_REASON, reason)
        self._open_study().tell(trial, value, state=state)
        record.state = _RECORD_OF_STATE[state]

    def save(self, checkpoint_path: str) -> None:
        """Upload the journal when it lives on an object store (:meth:`sync_journal`), then write
        :meth:`get_state` as JSON (atomically) to ``checkpoint_path``."""
        self.sync_journal()
        path = Path(checkpoint_path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_text(json.dumps(self.get_state(), indent=1, allow_nan=False))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def restore(self, checkpoint_path: str) -> None:
        """Read a :meth:`save` file and reopen the study from its journal (see :meth:`set_state`)."""
        data = Path(checkpoint_path).read_bytes()
        try:
            state = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{checkpoint_path!r} is not a PruningAwareOptunaSearch state file (JSON): {exc}"
            ) from exc
        self.set_state(state)

    def sync_journal(self) -> None:
        """Upload the local working copy of a journal on an object store (no-op otherwise)."""
        if self._journal_local is None or not os.path.isfile(self._journal_local):
            return
        fs, remote = pafs.FileSystem.from_uri(self._journal_path)
        with open(self._journal_local, "rb") as src, fs.open_output_stream(remote) as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)

    def unfinished_trial_ids(self) -> list[str]:
        """Ray trials this searcher suggested that have not finished (after a restore: those that
        were running when the state was saved; Ray resumes them)."""
        return sorted(tid for tid, r in self._records.items() if r.state in (_RUNNING, _INTERRUPTED))

    def get_state(self) -> dict[str, Any]:
        """The explicit, JSON-serialisable state (version :data:`STATE_VERSION`)."""
        return {
            "format": _STATE_FORMAT,
            "version": STATE_VERSION,
            "study_name": self._study_name,
            "journal_path": self._journal_path,
            "metric": self._metric,
            "mode": self._mode,
            "max_epochs": self._max_epochs,
            "time_attr": self._time_attr,
            "seed": self._seed,
            "space": {n: _spec_json(d) for n, d in self._dims.items()},
            "known_good_used": self._known_good_used,
            "trials": {tid: r.to_json() for tid, r in self._records.items()},
            "pending": sorted(tid for tid, r in self._records.items() if r.state == _RUNNING),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`get_state` output and reopen the study from the journal.

        The settings in ``state`` must match this searcher's (space, budget, metric, mode, study
        name, time attribute); trials pending in ``state`` are interrupted: FAIL in Optuna,
        re-run if Ray resumes them (module docstring).
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
        if "://" not in self._journal_path:  # type: ignore[operator]
            Path(self._journal_path).parent.mkdir(parents=True, exist_ok=True)
            return self._journal_path
        if self._journal_local is None:
            fs, remote = pafs.FileSystem.from_uri(self._journal_path)
            local = os.path.join(tempfile.mkdtemp(prefix="rspose_journal_"), JOURNAL_FILE_NAME)
            if fs.get_file_info(remote).type == pafs.FileType.File:
                with fs.open_input_stream(remote) as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)
            self._journal_local = local
        return self._journal_local

    def _record(self, trial_id: str) -> _Record | None:
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
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        if found != _STATE_FORMAT:
            raise ValueError(f"Not a PruningAwareOptunaSearch state: format is {found!r}, expected {_STATE_FORMAT!r}.")
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"The searcher state has version {state.get('version')!r}, but this rspose_tune reads "
                f"version {STATE_VERSION}."
            )
        ours = {"study_name": self._study_name, "max_epochs": self._max_epochs, "time_attr": self._time_attr,
                "space": {n: _spec_json(d) for n, d in self._dims.items()}}  # fmt: skip
        saved_space = state.get("space")
        if isinstance(saved_space, Mapping):  # one saved before a parameter with a default existed has it fixed there
            specs = validate_space(saved_space, source="the saved searcher state's space")
            state = {**state, "space": {n: _spec_json(d) for n, d in specs.items()}}
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
            self._journal_path = _journal_location(state["journal_path"])
            self._init_kwargs["journal_path"] = self._journal_path
        if self._journal_path is None and state["trials"]:
            raise ValueError(
                "Cannot restore the search history: the saved searcher used an in-memory study and this "
                "one has no `journal_path`. Only journal-backed searches can be resumed."
            )
        self._records = {tid: _Record(**rec) for tid, rec in state["trials"].items()}
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
        with warnings.catch_warnings():  # `group` is marked experimental in Optuna 5; chosen knowingly
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                    message=".*``group``.*")  # fmt: skip
            if self._sampler == "gp":  # Optuna's Gaussian-process sampler (learns the noise); tpe_options do not apply
                study.sampler = optuna.samplers.GPSampler(
                    seed=_derive_seed(self._seed, len(trials)), n_startup_trials=self._n_startup_trials,
                    warn_independent_sampling=False,  # off components make the space conditional
                )
            else:
                study.sampler = optuna.samplers.TPESampler(
                    seed=_derive_seed(self._seed, len(trials)), n_startup_trials=self._n_startup_trials,
                    **self._tpe_options,
                )
        self._reconcile(study, trials)
        self._study = study
        return study

    def _reconcile(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        """Merge the journal's history into the records; finish what nobody can finish anymore."""
        by_number = {t.number: t for t in trials}
        for tid, rec in self._records.items():
            trial = by_number.get(rec.number)
            if trial is None or trial.user_attrs.get(_ATTR_RAY_ID) != tid:
                found = None if trial is None else trial.user_attrs.get(_ATTR_RAY_ID)
                raise ValueError(
                    f"The searcher state maps Ray trial {tid!r} to Optuna trial #{rec.number}, but the "
                    f"journal {self._journal_path!r} (study {self._study_name!r}) "
                    + ("has no such trial." if trial is None else f"records Ray trial {found!r} there.")
                    + " Restore with the journal of the same run."
                )
        # The journal may be newer than the state file (state is saved periodically).
        for trial in trials:
            tid = trial.user_attrs.get(_ATTR_RAY_ID)
            if _ATTR_KNOWN_GOOD in trial.user_attrs:
                self._known_good_used = max(self._known_good_used, int(trial.user_attrs[_ATTR_KNOWN_GOOD]) + 1)
            if tid is None or (tid in self._records and self._records[tid].number > trial.number):
                continue
            steps = trial.intermediate_values
            last = max(steps, default=0)
            self._records[tid] = _Record(
                number=trial.number, params=dict(trial.params), last_epoch=last,
                last_value=_finite(steps.get(last)), state=_RECORD_OF_STATE.get(trial.state, _RUNNING),
            )  # fmt: skip
        # Nobody else can finish these: finish them as FAIL (Ray may resume them: re-run).
        while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            stale = study.ask()
            study.tell(stale, state=TrialState.FAIL)
            logger.warning("PruningAwareOptunaSearch: failed stale queued Optuna trial #%d.", stale.number)
        interrupted = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            interrupted.append(trial.number)
        for rec in self._records.values():
            if rec.state == _RUNNING:
                rec.state = _INTERRUPTED
        if interrupted:
            logger.warning(
                "PruningAwareOptunaSearch: Optuna trials %s were running when the previous driver stopped; "
                "they are now FAIL and are re-run as new Optuna trials if Ray resumes them.",
                interrupted,
            )

    def _report(self, trial_id: str, record: _Record, result: Mapping[str, Any]) -> None:
        epoch = result.get(self._time_attr)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or epoch != int(epoch):
            if f"epoch:{trial_id}" not in self._warned:
                self._warned.add(f"epoch:{trial_id}")
                logger.warning("Result of trial %r has no integer %r (got %r); not told to Optuna.",
                               trial_id, self._time_attr, epoch)  # fmt: skip
            return
        epoch = int(epoch)
        if record.state in (_RUNNING, _COMPLETE, _PRUNED) and epoch <= record.last_epoch:
            return  # a retried trial re-reports epochs Optuna has, or Ray repeats a completion
        if record.state != _RUNNING:
            self._rerun(trial_id, record, epoch)
        value = _finite(result.get(self._metric))
        if value is not None:
            self._live[trial_id].report(value, step=epoch)
        record.last_epoch, record.last_value = epoch, value

    def _rerun(self, trial_id: str, record: _Record, epoch: int) -> None:
        """A finished/interrupted trial reports again (Ray resumed it): continue in a new trial."""
        study = self._open_study()
        old = next(t for t in study.get_trials(deepcopy=False) if t.number == record.number)
        study.enqueue_trial(record.params, user_attrs={_ATTR_RERUN_OF: record.number, _ATTR_RAY_ID: trial_id})
        trial = study.ask()
        _sample(trial, self._dims)
        kept = {s: v for s, v in old.intermediate_values.items() if s < epoch}
        for step in sorted(kept):
            trial.report(kept[step], step=step)
        logger.info("PruningAwareOptunaSearch: Ray trial %r resumed at %s %d; Optuna trial #%d continues #%d.",
                    trial_id, self._time_attr, epoch, trial.number, record.number)  # fmt: skip
        self._live[trial_id] = trial
        last = max(kept, default=0)
        record.number, record.state = trial.number, _RUNNING
        record.last_epoch, record.last_value = last, _finite(kept.get(last))
