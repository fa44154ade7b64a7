"""``python -m rspose_tune.report``: the best RSPose loss setting per backbone, as in Table E.8.

Reads every run under a storage root (``<storage>/<run>/trials/*.parquet``, written by
:mod:`rspose_tune.results`), selects per backbone the best **full-budget** trial (status
``completed``; a pruned trial's low-fidelity metric never wins) and prints one row per backbone::

    | Backbone | S. Rank δ / c | S. Sort δ / c | Ins. Sort δ / c | Metric | AR | Spearman | ...

with "–" for a switched-off component, the trials run, pruned and failed, the GPU-hours the
search spent and the GPU-hours the same trials would have cost without early stopping.

Definitions (all pure helpers below, tested directly):

- **Mode** of the metric: the run metadata's ``mode`` (stored by the search; else the serialised
  preset's ``search_space.mode``); else from the name
  (:func:`metric_mode`: ``min`` for names containing loss/error/EPE/NME/MPJPE, else ``max``:
  AP, AR, PCK, AUC ...).
- **A trial's metric** is its last row's (the ``completed`` row at ``max_epochs``); ties go to
  the lower trial id.
- **Wall time of a trial** (:func:`trial_wall_seconds`): ``wall_s`` counts seconds since the
  trial's process started, so it restarts at 0 when a trial is resumed from a checkpoint. The
  trial's time is the sum of the last ``wall_s`` of every run of non-decreasing values. Time
  after a trial's last report (e.g. before an error) is not recorded: a lower bound.
- **GPU-hours spent** = Σ over trials of wall seconds × GPUs per trial / 3600, with GPUs (and
  CPUs) per trial from the run metadata: the ``resources`` the search gave Ray, else the
  serialised preset's ``search_space.resources``, else the preset file of the same name (said in
  the notes); when the rows record ``world_size`` and the metadata ``resources.workers``, GPUs per
  trial = the per-rank GPUs × the ranks that trained it. CPU-hours likewise with CPUs per trial.
- **Full-budget GPU-hours** = Σ over trials that reported an epoch of
  (wall seconds / last epoch) × ``max_epochs`` × GPUs / 3600: what training every trial to the
  full budget would have cost at its own speed.
- **Seed noise** (:func:`estimate_noise`): the pooled within-setting standard deviation of the
  final metric over completed trials that share identical parameters (re-runs of known-good
  settings, or repeated runs across runs of the same backbone):
  ``σ̂² = Σ_g Σ_i (x_gi - x̄_g)² / Σ_g (n_g - 1)``. With no repeats the noise is *unknown* and
  the report says so. The runner-up (best completed trial with *different* parameters) is
  flagged **within noise** when ``best - runner-up <= 1.96·√2·σ̂`` (a two-sided 95 % band for the
  difference of two single evaluations, assuming Gaussian noise).

Choosing a setting you can trust (rows with ``stage`` ``confirm``/``baseline``, written by the
search's confirm stage; see docs/trust.md):

- **Confirm stage** (:func:`confirmed_settings`): per re-run setting, the mean final metric over
  its confirm seeds and a 95 % **Student-t** interval of that mean (``n - 1`` dof, scipy). The
  search trial that picked the setting is left out (it was selected as a maximum: optimistic).
  The setting with the best mean is **chosen** (the table's row, and what ``export`` writes).
  Winner vs runner-up (:func:`paired_difference`): all confirm settings train on the same seeds,
  so the per-seed differences get a paired t-interval; the winner is *distinguishable* when it
  excludes 0.
- **Baseline**: the stock-loss trials' metric per seed; Δ = chosen − baseline, paired over the
  common seeds with its t-interval (without a confirm stage: the chosen search trial and the
  baseline share the run's seed, one difference, no interval).
- **ASHA fidelity** (:func:`rung_fidelity`): per rung, Spearman's ρ (scipy) between the metric
  at the rung and the final metric over the search trials that reached the full budget, named by
  DeepCAVE's bands (≥ 0.7 very strong, ≥ 0.4 strong, ≥ 0.3 moderate, else weak); ρ < 0.4 gives a
  warning suggesting a larger grace period. Caveat printed with it: only promoted trials reach
  the full budget, so the sample is biased. ``curves.png`` marks ρ on each rung.

Plots (PNG, matplotlib Agg; default ``<storage>/<run>/report/``, or ``--plots DIR`` →
``DIR/<run>/``): ``curves.png`` (metric per epoch, by status, ASHA rungs),
``importance.png`` (Optuna PED-ANOVA importance from ``<run>/optuna.journal`` when the study has
at least :data:`MIN_COMPLETED_FOR_OPTUNA` complete trials, else |Spearman ρ| of each parameter vs the
metric at the epoch most trials reached; the title says which) and ``params.png`` (metric vs
each hyperparameter).

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
]  # fmt: skip

#: The CLI's names, imported from :mod:`._cli` on first use (PEP 562).
_CLI_NAMES = ("build_parser", "main", "make_plots", "report_runs", "upload_folder")


def __getattr__(name: str) -> Any:
    if name in _CLI_NAMES:
        from . import _cli

        return getattr(_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLI_NAMES})
