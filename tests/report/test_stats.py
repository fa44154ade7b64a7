"""rspose_tune.report._stats: the confirm stage's Student-t intervals, paired differences and ranking on
hand-made summaries, and ASHA fidelity (Spearman ρ per rung) on a hand-made table, each checked
independently."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rspose_tune import report as rep
from tests.report.conftest import CURVES, HAND, MAX_T, RUNGS, _independent_t, _rows


def test_t_interval_matches_the_textbook_formula():
    values = [0.71, 0.69, 0.74]
    mean, low, high = rep.t_interval(values)
    assert (mean, low, high) == pytest.approx(_independent_t(values))
    assert rep.t_interval([0.5]) == (0.5, None, None)
    assert rep.t_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="empty"):
        rep.t_interval([])


def test_paired_difference_uses_common_seeds_and_says_whether_zero_is_excluded():
    a = {1: 0.70, 2: 0.72, 3: 0.71, 9: 0.1}
    b = {1: 0.60, 2: 0.63, 3: 0.60}
    c = rep.paired_difference(a, b)
    assert c.seeds == (1, 2, 3)
    mean, low, high = _independent_t([0.10, 0.09, 0.11])
    assert (c.mean, c.low, c.high) == pytest.approx((mean, low, high)) and c.distinguishable is True
    close = rep.paired_difference({1: 0.70, 2: 0.60}, {1: 0.65, 2: 0.66})
    assert close.distinguishable is False and close.low < 0 < close.high
    one = rep.paired_difference({1: 0.7}, {1: 0.6})
    assert one.distinguishable is None and one.mean == pytest.approx(0.1) and "no interval" in one.text()
    assert rep.paired_difference({1: 0.7}, {2: 0.6}).mean is None


def test_confirmed_settings_rank_by_mean_over_confirm_seeds_only():
    confirmed = rep.confirmed_settings(HAND, "max")
    assert [c.search_trial for c in confirmed] == ["s2", "s1"]  # B wins on the seeds, KG won the search
    win = confirmed[0]
    assert win.by_seed == {1: 0.71, 2: 0.70, 3: 0.72} and win.search_metric == pytest.approx(0.74)
    assert (win.mean, win.low, win.high) == pytest.approx(_independent_t([0.71, 0.70, 0.72]))
    assert rep.top_settings(HAND, "max", 2)["trial_id"].tolist() == ["s1", "s2"]
    assert rep.baseline_by_seed(HAND) == {1: 0.60, 2: 0.62, 3: 0.61}


def _independent_rho(xs, ys) -> float:
    """Spearman ρ without scipy: Pearson correlation of average ranks (pandas)."""
    rx = pd.Series(xs).rank(method="average")
    ry = pd.Series(ys).rank(method="average")
    return float(np.corrcoef(rx, ry)[0, 1])


def test_rung_fidelity_matches_an_independent_computation():
    fid = rep.rung_fidelity(_rows(CURVES), RUNGS, MAX_T)
    full = ["a", "b", "c", "d", "e"]
    finals = [CURVES[t][-1] for t in full]
    for f, rung in zip(fid, RUNGS):
        assert f.rung == rung and f.n == 5
        expected = _independent_rho([CURVES[t][rung - 1] for t in full], finals)
        assert f.rho == pytest.approx(expected, abs=1e-12)
        assert f.band == rep.fidelity_band(expected)
    # by hand: rung 1 ranks (a2 b5 c3 d1 e4) vs final (a4 b3 c5 d1 e2): d = 2,-2,2,0,-2 -> ρ = 1 - 6·16/120 = 0.2
    assert fid[0].rho == pytest.approx(0.2) and fid[0].band == "weak" and fid[0].low
    # rung 3 ranks (a3 b2 c5 d1 e4) vs final: d = -1,-1,0,0,2 -> ρ = 1 - 6·6/120 = 0.7
    assert fid[1].rho == pytest.approx(0.7) and fid[1].band == "very strong" and not fid[1].low


def test_rung_fidelity_uses_the_first_validation_at_or_after_the_rung():
    sparse = _rows(CURVES)
    sparse = sparse[~((sparse["epoch"] == 3) & sparse["trial_id"].isin(["a", "b", "c", "d", "e"]))]
    fid = rep.rung_fidelity(sparse, [3], MAX_T)
    full = ["a", "b", "c", "d", "e"]
    expected = _independent_rho([CURVES[t][3] for t in full], [CURVES[t][-1] for t in full])  # epoch 4
    assert fid[0].rho == pytest.approx(expected)


def test_rung_fidelity_ignores_confirm_and_baseline_trials_and_needs_three():
    curves = {"a": CURVES["a"], "b": CURVES["b"], "x": CURVES["c"], "y": CURVES["d"]}
    fid = rep.rung_fidelity(_rows(curves, stage={"x": "confirm", "y": "baseline"}), RUNGS, MAX_T)
    assert all(f.n == 2 and f.rho is None and f.band == "n/a" and not f.low for f in fid)


@pytest.mark.parametrize(("rho", "band"), [(0.95, "very strong"), (0.7, "very strong"), (0.69, "strong"),
                                           (0.4, "strong"), (0.35, "moderate"), (0.3, "moderate"), (0.1, "weak"),
                                           (-0.8, "weak"), (None, "n/a"), (math.nan, "n/a")])
def test_deepcave_bands(rho, band):
    assert rep.fidelity_band(rho) == band


def test_fidelity_lines_warn_with_a_larger_grace_and_state_the_selection_bias():
    fid = rep.rung_fidelity(_rows(CURVES), RUNGS, MAX_T)
    lines = rep.fidelity_lines("r", fid, rep.RunSettings(max_epochs=MAX_T, grace_epochs=1, reduction_factor=3))
    text = "\n".join(lines)
    assert "ρ = 0.20 (weak), n = 5" in text and "ρ = 0.70 (very strong)" in text and "biased sample" in text
    assert "WARNING r:" in lines[1] and "--grace-epochs 3" in lines[1]
