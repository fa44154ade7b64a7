"""Hyperparameter importance for :mod:`rspose_tune.report`: Optuna's PED-ANOVA from the run's
``optuna.journal`` when enough trials completed, else |Spearman ρ| of each parameter."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rspose_tune.runspec import JOURNAL_FILE
from rspose_tune.spaces import PARAM_NAMES, loss_param

from ._load import ReportError, RunData

__all__ = ["MIN_COMPLETED_FOR_OPTUNA", "PED_ANOVA_TOP_TRIALS", "Importance", "param_importance", "spearman_importance"]

#: Fewest COMPLETE Optuna trials for which Optuna's PED-ANOVA importance is computed.
MIN_COMPLETED_FOR_OPTUNA = 8
#: PED-ANOVA compares the top trials with all: target_quantile = this / n, within [0.1, 0.5].
PED_ANOVA_TOP_TRIALS = 5


@dataclass(frozen=True)
class Importance:
    """Importance per parameter (NaN: undefined, e.g. a fixed parameter) and how it was found."""

    values: dict[str, float]
    method: str
    label: str  # x-axis label


def spearman_importance(frame: pd.DataFrame) -> tuple[dict[str, float], int | None, int]:
    """|Spearman ρ| of each parameter vs ``metric`` at the epoch most trials reported.

    Ties go to the later epoch. Off coefficients count as 0; off deltas are left out. Fewer
    than 3 points or a constant parameter gives NaN. Returns (values, epoch, number of trials).
    """
    from scipy import stats

    rows = frame[frame["metric"].notna()]
    if rows.empty:
        return {n: math.nan for n in PARAM_NAMES}, None, 0
    counts = rows.groupby("epoch")["trial_id"].nunique()
    epoch = int(max(counts.index, key=lambda e: (counts[e], e)))
    at = rows[rows["epoch"] == epoch].drop_duplicates(["run", "trial_id"])
    out = {}
    for name in PARAM_NAMES:
        x = at[name].astype(float)
        if loss_param(name).kind == "coeff":
            x = x.fillna(0.0)
        keep = x.notna().to_numpy()
        xs, ys = x.to_numpy()[keep], at["metric"].astype(float).to_numpy()[keep]
        if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            out[name] = math.nan
            continue
        out[name] = float(abs(stats.spearmanr(xs, ys).statistic))
    return out, epoch, len(at)


@contextlib.contextmanager
def _local_copy(path: str):
    """``path`` itself when local, else a temporary local copy of it; None when it does not exist."""
    from rspose_tune._storage import copy_file
    from rspose_tune.runspec import is_uri

    if not is_uri(path):
        yield Path(path) if os.path.isfile(path) else None
        return
    with tempfile.TemporaryDirectory(prefix="rspose_report_") as tmp:
        local = Path(tmp) / path.rstrip("/").rsplit("/", 1)[-1]
        try:
            copy_file(path, local)
        except FileNotFoundError:
            local = None
        yield local



def _load_study(journal: Path):
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if not names:
        raise ReportError(f"{journal} holds no Optuna study")
    name = "rspose" if "rspose" in names else names[0]
    return optuna.load_study(study_name=name, storage=storage)


def param_importance(run: RunData, min_completed: int = MIN_COMPLETED_FOR_OPTUNA) -> Importance:
    """Optuna importance from ``<run>/optuna.journal`` when it has ``min_completed`` COMPLETE
    trials; else :func:`spearman_importance` (the method string says which and why).

    The evaluator is PED-ANOVA (:class:`optuna.importance.PedAnovaImportanceEvaluator`): numpy
    only and deterministic; Optuna's default fANOVA needs scikit-learn, which rspose_tune does
    not install. Its ``target_quantile`` keeps about :data:`PED_ANOVA_TOP_TRIALS` trials in the
    top group (Optuna recommends at least 5). It only sees COMPLETE (full-budget) trials.
    """
    reason = f"no {JOURNAL_FILE}"
    with _local_copy(f"{run.path.rstrip('/')}/{JOURNAL_FILE}") as journal:  # the study reads it lazily
        if journal is not None:
            import optuna

            study = _load_study(journal)
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(complete) >= min_completed:
                quantile = min(0.5, max(0.1, PED_ANOVA_TOP_TRIALS / len(complete)))
                try:
                    values = optuna.importance.get_param_importances(
                        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
                    )
                except (ValueError, RuntimeError) as exc:  # e.g. no parameter common to all trials
                    reason = f"Optuna importance failed: {exc}"
                else:
                    method = (f"Optuna PED-ANOVA importance ({len(complete)} complete trials, "
                              f"top {quantile:.0%} vs all)")
                    return Importance(dict(values), method, "importance (sums to 1)")
            else:
                reason = f"{len(complete)} complete trials < {min_completed} for Optuna importance"
    values, epoch, n = spearman_importance(run.frame)
    metric = _first_metric_name(run.frame)
    method = f"fallback: |Spearman ρ| vs {metric} at epoch {epoch} ({n} trials; {reason})"
    return Importance(values, method, "|Spearman ρ|")


def _first_metric_name(frame: pd.DataFrame) -> str:
    names = [n for n in frame["metric_name"] if isinstance(n, str)]
    return names[0] if names else "metric"
