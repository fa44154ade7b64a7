"""What the searcher knows about each Ray trial (:class:`Record`), its saved JSON state (version
:data:`STATE_VERSION`), and the merge of a reopened journal's history into the records."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rspose_tune._numbers import finite_or_none as _finite

logger = logging.getLogger("rspose_tune.searcher")

#: Version of the JSON state written by :meth:`PruningAwareOptunaSearch.save`.
STATE_VERSION = 1
STATE_FORMAT = "rspose_tune.PruningAwareOptunaSearch"

# Optuna user attributes of the study's trials.
ATTR_RAY_ID = "rspose:ray_trial_id"
ATTR_KNOWN_GOOD = "rspose:known_good"
ATTR_WARM_START = "rspose:warm_start"
ATTR_RERUN_OF = "rspose:rerun_of"
ATTR_FAIL_REASON = "rspose:fail_reason"
ATTR_LAST_EPOCH = "rspose:last_epoch"

# Record states: the first three mirror Optuna's finished states.
COMPLETE, PRUNED, FAIL, RUNNING, INTERRUPTED = "complete", "pruned", "fail", "running", "interrupted"
RECORD_OF_STATE = {TrialState.COMPLETE: COMPLETE, TrialState.PRUNED: PRUNED, TrialState.FAIL: FAIL}


@dataclass
class Record:
    """What the searcher knows about one Ray trial."""

    number: int  # Optuna trial number (the latest one for re-runs)
    params: dict[str, Any]  # Optuna params (switches included), to re-run the trial
    last_epoch: int = 0  # highest epoch told to Optuna
    last_value: float | None = None  # metric at ``last_epoch`` (None: not finite / missing)
    state: str = RUNNING

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "params": self.params, "last_epoch": self.last_epoch,
                "last_value": self.last_value, "state": self.state}


def check_format(state: Any) -> None:
    """A :meth:`PruningAwareOptunaSearch.get_state` dict of this version, else ``ValueError``."""
    found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
    if found != STATE_FORMAT:
        raise ValueError(f"Not a PruningAwareOptunaSearch state: format is {found!r}, expected {STATE_FORMAT!r}.")
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"The searcher state has version {state.get('version')!r}, but this rspose_tune reads "
            f"version {STATE_VERSION}."
        )


def reconcile(
    study: optuna.Study, trials: list[FrozenTrial], records: dict[str, Record], *, known_good_used: int,
    journal_path: str | None, study_name: str,
) -> int:
    """Merge the journal's history into ``records``; finish what nobody can finish anymore.
    Returns how many known-good (and warm-start) settings the study has used."""
    by_number = {t.number: t for t in trials}
    for tid, rec in records.items():
        trial = by_number.get(rec.number)
        if trial is None or trial.user_attrs.get(ATTR_RAY_ID) != tid:
            found = None if trial is None else trial.user_attrs.get(ATTR_RAY_ID)
            raise ValueError(
                f"The searcher state maps Ray trial {tid!r} to Optuna trial #{rec.number}, but the "
                f"journal {journal_path!r} (study {study_name!r}) "
                + ("has no such trial." if trial is None else f"records Ray trial {found!r} there.")
                + " Restore with the journal of the same run."
            )
    # The journal may be newer than the state file (state is saved periodically).
    for trial in trials:
        tid = trial.user_attrs.get(ATTR_RAY_ID)
        if ATTR_KNOWN_GOOD in trial.user_attrs:
            known_good_used = max(known_good_used, int(trial.user_attrs[ATTR_KNOWN_GOOD]) + 1)
        if tid is None or (tid in records and records[tid].number > trial.number):
            continue
        steps = trial.intermediate_values
        last = max(steps, default=0)
        records[tid] = Record(
            number=trial.number, params=dict(trial.params), last_epoch=last,
            last_value=_finite(steps.get(last)), state=RECORD_OF_STATE.get(trial.state, RUNNING),
        )
    # Nobody else can finish these: finish them as FAIL (Ray may resume them: re-run).
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        stale = study.ask()
        study.tell(stale, state=TrialState.FAIL)
        logger.warning("PruningAwareOptunaSearch: failed stale queued Optuna trial #%d.", stale.number)
    interrupted = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        interrupted.append(trial.number)
    for rec in records.values():
        if rec.state == RUNNING:
            rec.state = INTERRUPTED
    if interrupted:
        logger.warning(
            "PruningAwareOptunaSearch: Optuna trials %s were running when the previous driver stopped; "
            "they are now FAIL and are re-run as new Optuna trials if Ray resumes them.",
            interrupted,
        )
    return known_good_used
