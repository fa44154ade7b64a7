"""Offline replay: compare search policies on recorded learning curves, without training or a Ray cluster.

``python -m rspose_tune.replay [RUN_OR_TABLE ...]`` replays search policies against a table of
full learning curves (the metric at every reported epoch of many settings, with each report's
wall time) on a simulated clock with ``W`` workers, over many search seeds, and prints per policy
the median and inter-quartile range of the best full-budget metric found against epochs (and
simulated time) spent, the regret to the table's best and the epochs needed to come within a
target of it. With no argument it replays the shipped demo table (:data:`DEMO_TABLE`).

The policies (:data:`POLICIES`) make their decisions with the live search's own code: the
project's :class:`rspose_tune.searcher.PruningAwareOptunaSearch` (Optuna TPE; random search as
``--sampler random``) in its ``ResumableConcurrencyLimiter``, and Ray's ``ASHAScheduler`` (or
``FIFOScheduler`` for full-budget policies) imported from :mod:`ray.tune.schedulers`. Only Ray's
trial controller is simulated (:mod:`rspose_tune.replay._simulator` says how). A proposal the
table lacks is answered by its nearest recorded setting (:meth:`CurveTable.nearest`); the report
says how often and how far.

Tables are rspose_tune results (:data:`rspose_tune.results.SCHEMA`): any run folder of a live
search (its completed, full-budget trials are the curves) or a table written by
``python -m rspose_tune.replay make-table`` (:mod:`rspose_tune.replay._make_table`), which trains a
space-filling design of settings on several training seeds.

Python use::

    from rspose_tune.replay import DEMO_TABLE, POLICIES, ReplaySettings, load_table, replay
    table = load_table([DEMO_TABLE])
    trace = replay(table, POLICIES["asha-tpe"], seed=0, settings=ReplaySettings(budget_epochs=200))
"""

from rspose_tune.replay._make_table import DEMO_TABLE, DENSE_TABLE, HELDOUT_TABLE, design_settings, local_settings
from rspose_tune.replay._confirm import ConfirmOutcome, confirm
from rspose_tune.replay._simulator import POLICIES, Policy, ReplaySettings, Trace, TrialRecord, replay
from rspose_tune.replay._summary import PolicySummary, checkpoints, format_report, incumbent_at, summarize
from rspose_tune.replay._table import REQUIRED_COLUMNS, Curve, CurveTable, Match, TableError, load_table, table_from_frame

__all__ = [
    "DEMO_TABLE",
    "DENSE_TABLE",
    "HELDOUT_TABLE",
    "POLICIES",
    "REQUIRED_COLUMNS",
    "ConfirmOutcome",
    "Curve",
    "CurveTable",
    "Match",
    "Policy",
    "PolicySummary",
    "ReplaySettings",
    "TableError",
    "Trace",
    "TrialRecord",
    "checkpoints",
    "confirm",
    "design_settings",
    "format_report",
    "incumbent_at",
    "load_table",
    "local_settings",
    "replay",
    "summarize",
    "table_from_frame",
]
