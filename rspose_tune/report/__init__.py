"""``python -m rspose_tune.report``: the best RSPose loss setting per backbone, as in Table E.8.

Reads every run under a storage root (``<storage>/<run>/trials/*.parquet``, written by
:mod:`rspose_tune.results`), selects per backbone the best **full-budget** trial (status
``completed``; a pruned trial's low-fidelity metric never wins) and prints one row per backbone::

    | Backbone | S. Rank δ / c | S. Sort δ / c | Ins. Sort δ / c | Metric | AR | Spearman | ...

with "–" for a switched-off component, the trials run, pruned and failed, the GPU-hours the
search spent and the GPU-hours the same trials would have cost without early stopping.

How it counts (mode, a trial's metric and wall time, GPU-hours, seed noise, the plots) is in
docs/trust.md, "How the report counts"; the confirm stage, baseline and ASHA fidelity statistics
(:func:`confirmed_settings`, :func:`paired_difference`, :func:`rung_fidelity`) in its sections of
the same names.

Exit status: 0 on success, 2 on bad input (no runs under the storage path, unknown ``--run``).

Modules (each imports only the ones before it): :mod:`._load` (runs, their rows and settings),
:mod:`._summary` (trial summaries, selection, noise, cost), :mod:`._stats` (confirm stage,
baseline, ASHA fidelity), :mod:`._backbone` (:class:`BackboneReport`), :mod:`._table` (table,
notes, CSV), :mod:`._importance`, :mod:`._plots` (matplotlib only) and :mod:`._cli` (the command
line, imported on first use of :func:`main`, :func:`report_runs`, :func:`build_parser`,
:func:`make_plots` or :func:`upload_folder`, so the layers below the CLIs can import the rest without it).

"""

from __future__ import annotations

from typing import Any

from rspose_tune import DEFAULT_STORAGE
from rspose_tune._asha import asha_rungs
from rspose_tune.spaces import PARAM_NAMES

# Each module's ``__all__`` is the one list of its public names; this package re-exports them.
from . import _backbone, _importance, _load, _stats, _summary, _table
from ._backbone import *  # noqa: F403
from ._importance import *  # noqa: F403
from ._load import *  # noqa: F403
from ._load import storage_argument
from ._stats import *  # noqa: F403
from ._summary import *  # noqa: F403
from ._table import *  # noqa: F403

__all__ = [
    "DEFAULT_STORAGE", "PARAM_NAMES", "asha_rungs", "main", "report_runs", "storage_argument",
    *_backbone.__all__, *_importance.__all__, *_load.__all__, *_stats.__all__, *_summary.__all__, *_table.__all__,
]

#: The CLI's names, imported from :mod:`._cli` on first use (PEP 562).
_CLI_NAMES = ("build_parser", "main", "make_plots", "report_runs", "upload_folder")


def __getattr__(name: str) -> Any:
    if name in _CLI_NAMES:
        from . import _cli

        return getattr(_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLI_NAMES})
