"""Optuna TPE for Ray Tune that tells Optuna the truth about ASHA-stopped trials.

Ray's stock ``OptunaSearch`` finishes a trial the scheduler stopped as ``COMPLETE`` with its
low-fidelity metric. :class:`PruningAwareOptunaSearch` reports every result as an intermediate
value and tells Optuna :func:`to_optuna_state`: ``COMPLETE`` only at ``max_epochs``, ``PRUNED``
earlier, ``FAIL`` on errors or without any epoch. How it maps the space (on/off switches),
enqueues known-good and warm-start settings, keeps its journal (an object store too) and resumes:
docs/trust.md#the-searcher.

Modules: ``_rules`` (sampler names, TPE options, start-up count, trial states), ``_space`` (the
space as Optuna sees it), ``_state`` (records, saved state, reconciling a journal), ``_journal``
(where the journal lives), ``_persistence`` (saving, restoring, pickling), ``_search`` (the
searcher). Use :class:`ResumableConcurrencyLimiter` (re-exported, as :func:`build_scheduler`)
around it for parallel trials.
"""

from __future__ import annotations

from typing import Any

from rspose_tune._layout import JOURNAL_FILE
from rspose_tune._scheduler import build_scheduler  # re-exported
from rspose_tune.spaces import COMPONENTS, PARAM_NAMES

from ._rules import SAMPLERS, TPE_OPTIONS, startup_trials, to_optuna_state

__all__ = [
    "COMPONENTS",
    "JOURNAL_FILE_NAME",
    "PARAM_NAMES",
    "SAMPLERS",
    "STATE_VERSION",
    "TPE_OPTIONS",
    "PruningAwareOptunaSearch",
    "ResumableConcurrencyLimiter",
    "build_scheduler",
    "startup_trials",
    "to_optuna_state",
]

#: Conventional file name of the journal inside the run directory (defined by the run layout).
JOURNAL_FILE_NAME = JOURNAL_FILE


def __getattr__(name: str) -> Any:
    """The names whose modules import Optuna or Ray, imported on first use (PEP 562), so that reading
    :data:`SAMPLERS` (the search's parser) starts neither. A run's tuner.pkl names
    rspose_tune.searcher.PruningAwareOptunaSearch and rspose_tune.searcher.ResumableConcurrencyLimiter."""
    if name == "PruningAwareOptunaSearch":
        from ._search import PruningAwareOptunaSearch

        return PruningAwareOptunaSearch
    if name == "STATE_VERSION":
        from ._state import STATE_VERSION

        return STATE_VERSION
    if name == "ResumableConcurrencyLimiter":
        from rspose_tune._limiter import ResumableConcurrencyLimiter

        return ResumableConcurrencyLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
