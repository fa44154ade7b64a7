"""``python -m rspose_tune.search``: Optuna TPE + ASHA over the RSPose loss settings on Ray.

Wiring only: the preset (:mod:`rspose_tune.spaces`), the trainable (``--trainable MODULE:NAME``,
loaded by name: default ``trainables.mmpose_trainable:train_rspose``), the searcher (:mod:`rspose_tune.searcher`), the Parquet
callback (:mod:`rspose_tune.results`), then the report (:mod:`rspose_tune.report`) and the export
(:mod:`rspose_tune.export`) of the best setting.

With no arguments it runs the CPU ``demo`` preset on a local Ray and finishes in a few minutes.

One module per concept, each importing only the ones before it: the flags, declared once in the table
:class:`SearchOptions` that the rest receives instead of argparse's ``Namespace`` (``_parser``), the plan
resolved from them before Ray starts, with the run spec and ``--dry-run`` (``_plan``), the Ray
session (``_session``), the run: the Tuner, the confirm stage, :func:`main` and its exit codes
(``_run``). This package re-exports their names; ``__main__`` runs :func:`main`.
"""

from __future__ import annotations

from rspose_tune.search._parser import (
    DEFAULT_PRESET,
    DEFAULT_TRIALS,
    FALLBACK_TRIALS,
    RESUME_MAY_CHANGE,
    Flag,
    SearchOptions,
    build_parser,
    parse_options,
    search_flags,
)
from rspose_tune.search._plan import Plan, SearchError, dry_run, plan, resume_conflicts
from rspose_tune.search._run import (
    _stage_callbacks,
    main,
    run_confirm_stage,
    run_search,
    trial_outcomes,
)
from rspose_tune.search._session import _check_cluster_can_hold_a_trial, _print_dashboard, check_reachable, start_ray

__all__ = ["SearchError", "SearchOptions", "build_parser", "main"]
