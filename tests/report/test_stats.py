"""Issue 11: ASHA fidelity (Spearman ρ per rung) on a hand-made table, checked independently."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rspose_tune import report as rep

RUNGS = [1, 3]
MAX_T = 9


def _rows(curves: dict[str, list[float]], status: dict[str, str] | None = None, stage: dict | None = None):
    rows = []
    for tid, values in curves.items():
        for epoch, value in enumerate(values, start=1):
            last = epoch == len(values)
            rows.append({"trial_id": tid, "epoch": epoch, "metric": value,
                         "status": (status or {}).get(tid, "completed" if len(values) == MAX_T else "pruned")
                         if last else "running", "stage": (stage or {}).get(tid, "search")})  # fmt: skip
    return pd.DataFrame(rows)


# Hand-made: 5 trials reach the full budget, 2 were pruned at rung 1 (excluded from ρ).
CURVES = {
    "a": [0.10, 0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60],
    "b": [0.30, 0.32, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.52],
    "c": [0.20, 0.25, 0.40, 0.42, 0.45, 0.50, 0.55, 0.58, 0.70],
    "d": [0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45],
    "e": [0.25, 0.30, 0.35, 0.40, 0.42, 0.44, 0.46, 0.48, 0.50],
    "p1": [0.01],
    "p2": [0.02, 0.03, 0.04],
}


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
                                           (-0.8, "weak"), (None, "n/a"), (math.nan, "n/a")])  # fmt: skip
def test_deepcave_bands(rho, band):
    assert rep.fidelity_band(rho) == band


def test_fidelity_lines_warn_with_a_larger_grace_and_state_the_selection_bias():
    fid = rep.rung_fidelity(_rows(CURVES), RUNGS, MAX_T)
    lines = rep.fidelity_lines("r", fid, rep.RunSettings(max_epochs=MAX_T, grace_epochs=1, reduction_factor=3))
    text = "\n".join(lines)
    assert "ρ = 0.20 (weak), n = 5" in text and "ρ = 0.70 (very strong)" in text and "biased sample" in text
    assert "WARNING r:" in lines[1] and "--grace-epochs 3" in lines[1]


def test_curves_plot_marks_fidelity(tmp_path):
    from rspose_tune.report import _plots

    frame = _rows(CURVES).assign(run="r")
    fid = rep.rung_fidelity(frame, RUNGS, MAX_T)
    path = tmp_path / "curves.png"
    _plots.plot_curves(frame, path, run="r", metric_name="coco/AP", max_epochs=MAX_T, rungs=RUNGS, fidelity=fid)
    assert path.stat().st_size > 1000
