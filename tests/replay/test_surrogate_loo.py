"""``tools/surrogate_loo.py`` (issue 26): the leave-one-setting-out error it reports is the error of
predicting each setting from the others (zero for a metric a degree-1 trend reproduces exactly, the
spread of the values for the no-model baseline)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rspose_tune.replay import table_from_frame
from tests.replay.conftest import MAX_EPOCHS, SPACE_ON, _curve_rows, _setting

TOOL = Path(__file__).resolve().parents[2] / "tools" / "surrogate_loo.py"


def _tool():
    spec = importlib.util.spec_from_file_location("surrogate_loo", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _settings(n=24):
    """``n`` all-on settings drawn log-uniformly inside SPACE_ON (a grid would be rank-deficient)."""
    rng = np.random.default_rng(1)

    def draw(name):
        spec = SPACE_ON[name]
        return float(np.exp(rng.uniform(np.log(spec["low"]), np.log(spec["high"]))))

    return [_setting(draw("delta_rank"), draw("delta_sort"), draw("coeff_sort"), draw("delta_inst"), draw("coeff_inst"))
            for _ in range(n)]


def _table(final_of_point):
    from rspose_tune.replay._table import _unit_point
    from rspose_tune.spaces import LossSetting

    rows, settings = [], _settings()
    probe = table_from_frame(pd.DataFrame([r for i, s in enumerate(settings) for r in _curve_rows(f"p{i}", s, 0.5)]),
                             source="probe", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)
    for i, setting in enumerate(settings):  # the point the table will give this setting
        final = final_of_point(np.array(_unit_point(LossSetting.from_dict(setting), probe.space)))
        for seed in (0, 1):
            rows += _curve_rows(f"s{i:02d}-seed{seed}", setting, final + (0.01 if seed else -0.01))
    return table_from_frame(pd.DataFrame(rows), source="t", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)


def _numbers(line):
    return [float(x) for x in re.findall(r"-?\d+\.\d+", line)]


def test_a_linear_metric_is_predicted_exactly_and_the_baseline_is_the_values_spread():
    table = _table(lambda x: 0.4 + 0.1 * x[0] - 0.05 * x[2])
    head, *kernels = _tool().loo_report(table, "linear")
    assert len(kernels) == 3
    for line in kernels:  # RMSE, RMSE on the 10 best, Spearman
        rmse, rmse_top, rho = _numbers(line)
        assert rmse < 1e-3 and rmse_top < 1e-3 and rho == pytest.approx(1.0)
    values = np.array([table.value(i) for i in range(len(table.settings))])
    baseline = np.sqrt(np.mean([(np.delete(values, k).mean() - v) ** 2 for k, v in enumerate(values)]))
    seed_sd, gap, mean_rmse = _numbers(head)
    assert mean_rmse == pytest.approx(baseline, abs=1e-4)
    assert seed_sd == pytest.approx(np.std([-0.01, 0.01], ddof=1), abs=1e-4)  # the two seeds' spread
    ordered = np.sort(values)[::-1]
    assert gap == pytest.approx(ordered[0] - ordered[2], abs=1e-4)


def test_a_metric_without_structure_is_not_predicted():
    rng = np.random.default_rng(0)
    values = iter(rng.uniform(0.3, 0.7, size=24))
    _, *kernels = _tool().loo_report(_table(lambda x: next(values)), "noise")
    assert all(_numbers(line)[0] > 0.05 for line in kernels)
