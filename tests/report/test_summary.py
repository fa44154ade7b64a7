"""rspose_tune.report._summary: a trial's wall time, the metric's mode, seed noise and its flag, the best
full-budget trial and the runner-up."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rspose_tune import report as rep
from rspose_tune.report._summary import _params_key
from tests.report.conftest import KNOWN_GOOD, OTHER, SORT_OFF


@pytest.mark.parametrize(
    "walls, expected",
    [([100, 200, 300], 300), ([100, 200, 40, 140], 340), ([], 0.0), ([None, 50.0, float("nan")], 50.0),
     ([10, 5, 2], 17)],
)
def test_trial_wall_seconds(walls, expected):
    assert rep.trial_wall_seconds(walls) == pytest.approx(expected)


@pytest.mark.parametrize(
    "name, meta_mode, expected",
    [("coco/AP", None, "max"), ("PCK", None, "max"), ("crowdpose/AP", None, "max"), ("val/loss", None, "min"),
     ("NME", None, "min"), ("coco/AP", "min", "min"), ("val/loss", "max", "max"), (None, None, "max")],
)
def test_metric_mode(name, meta_mode, expected):
    assert rep.metric_mode(name, meta_mode) == expected


def _summary(values_by_params, status="completed"):
    rows = []
    for i, (params, value) in enumerate(values_by_params):
        entry = {"run": "r", "trial_id": f"t{i}", "status": status, "metric": value, **params}
        entry["params_key"] = _params_key(entry)
        rows.append(entry)
    return pd.DataFrame(rows)


def test_estimate_noise_pooled_std_against_independent_computation():
    trials = _summary([(KNOWN_GOOD, 0.70), (KNOWN_GOOD, 0.72), (KNOWN_GOOD, 0.74), (OTHER, 0.60), (OTHER, 0.61),
                       (SORT_OFF, 0.9)])
    noise = rep.estimate_noise(trials)
    ss = (0.02**2 + 0 + 0.02**2) + (0.005**2 * 2)
    assert noise.dof == 3 and noise.groups == 2
    assert noise.sigma == pytest.approx(math.sqrt(ss / 3))


def test_estimate_noise_without_repeats_is_unknown():
    noise = rep.estimate_noise(_summary([(KNOWN_GOOD, 0.7), (OTHER, 0.6)]))
    assert noise.sigma is None and noise.dof == 0
    flag, why = rep.noise_flag(0.7, 0.6, noise)
    assert flag == "noise unknown" and "no setting was evaluated more than once" in why


def test_estimate_noise_ignores_pruned_repeats():
    noise = rep.estimate_noise(_summary([(KNOWN_GOOD, 0.1), (KNOWN_GOOD, 0.5)], status="pruned"))
    assert noise.sigma is None


@pytest.mark.parametrize(
    "best, second, sigma, expected",
    [(0.80, 0.79, 0.01, "within noise"),  # band 1.96*sqrt(2)*0.01 = 0.0277
     (0.80, 0.75, 0.01, "beyond noise"),
     (0.80, 0.80 - 1.96 * math.sqrt(2) * 0.01, 0.01, "within noise"),  # on the edge
     (0.80, None, 0.01, "no runner-up"),
     (0.30, 0.31, 0.001, "beyond noise")],  # mode min: the gap is absolute
)
def test_noise_flag(best, second, sigma, expected):
    flag, _ = rep.noise_flag(best, second, rep.Noise(sigma=sigma, dof=2, groups=1))
    assert flag == expected


def test_select_best_skips_pruned_and_runner_up_differs_in_params():
    trials = _summary([(OTHER, 0.99), (KNOWN_GOOD, 0.8), (KNOWN_GOOD, 0.79), (SORT_OFF, 0.7)])
    trials.loc[0, "status"] = "pruned"
    best = rep.select_best(trials, "max")
    assert best["trial_id"] == "t1"
    assert rep.runner_up(trials, best, "max")["trial_id"] == "t3"  # t2 repeats t1's setting
    assert rep.select_best(trials, "min")["trial_id"] == "t3"
    assert rep.select_best(trials[trials.status == "pruned"], "max") is None
    with pytest.raises(ValueError, match="must be 'max' or 'min'"):
        rep.select_best(trials, "maximize")
