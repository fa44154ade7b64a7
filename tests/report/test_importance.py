"""rspose_tune.report._importance: |Spearman ρ| at the most reported epoch, and Optuna's PED-ANOVA from the
run's journal once enough trials completed."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rspose_tune import report as rep
from tests.report.conftest import KNOWN_GOOD


def test_spearman_importance_uses_the_most_reported_epoch():
    rows = []
    for i, delta in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
        params = {**KNOWN_GOOD, "delta_rank": delta, "coeff_sort": None if i == 0 else 2.0,
                  "delta_sort": None if i == 0 else 1.5, "pos_thr": 0.0}
        rows.append({"run": "r", "trial_id": f"t{i}", "epoch": 1, "metric": delta, **params})
        if i < 2:
            rows.append({"run": "r", "trial_id": f"t{i}", "epoch": 3, "metric": 1 - delta, **params})
    values, epoch, n = rep.spearman_importance(pd.DataFrame(rows))
    assert epoch == 1 and n == 5
    assert values["delta_rank"] == pytest.approx(1.0)
    assert math.isnan(values["coeff_rank"]) and math.isnan(values["pos_thr"])  # fixed
    assert math.isnan(values["delta_sort"])  # constant where on; off rows left out
    assert values["coeff_sort"] == pytest.approx(abs(pd.Series([0, 2, 2, 2, 2.0]).rank().corr(pd.Series(range(5)))))


def test_importance_uses_optuna_journal_when_enough_complete_trials(storage):
    import optuna

    run = next(r for r in rep.load_runs(storage) if r.name == "vitb-run")
    fallback = rep.param_importance(run)
    assert fallback.method.startswith("fallback: |Spearman ρ|") and "no optuna.journal" in fallback.method

    journal = storage / "vitb-run" / "optuna.journal"
    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    study = optuna.create_study(study_name="rspose", direction="maximize",
                                storage=optuna.storages.JournalStorage(backend),
                                sampler=optuna.samplers.RandomSampler(seed=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def add(n, state=optuna.trial.TrialState.COMPLETE):
        for _ in range(n):
            t = study.ask()
            x = t.suggest_float("delta_rank", 0.1, 1.0)
            t.suggest_float("delta_sort", 0.1, 3.0, log=True)
            study.tell(t, 1 - abs(x - 0.4) if state == optuna.trial.TrialState.COMPLETE else None, state=state)

    add(5)
    add(4, optuna.trial.TrialState.PRUNED)  # pruned trials do not count
    few = rep.param_importance(run)
    assert few.method.startswith("fallback") and f"5 complete trials < {rep.MIN_COMPLETED_FOR_OPTUNA}" in few.method
    add(rep.MIN_COMPLETED_FOR_OPTUNA - 5)
    enough = rep.param_importance(run)
    assert enough.method.startswith("Optuna PED-ANOVA") and set(enough.values) == {"delta_rank", "delta_sort"}
    add(30)  # enough trials for the estimate to find the one parameter that matters
    full = rep.param_importance(run)
    assert full.values["delta_rank"] > 2 * full.values["delta_sort"]
