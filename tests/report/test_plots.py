"""rspose_tune.report._plots: the curves plot marks each rung's fidelity."""

from __future__ import annotations

from rspose_tune import report as rep
from tests.report.conftest import CURVES, MAX_T, RUNGS, _rows


def test_curves_plot_marks_fidelity(tmp_path):
    from rspose_tune.report import _plots

    frame = _rows(CURVES).assign(run="r")
    fid = rep.rung_fidelity(frame, RUNGS, MAX_T)
    path = tmp_path / "curves.png"
    _plots.plot_curves(frame, path, run="r", metric_name="coco/AP", max_epochs=MAX_T, rungs=RUNGS, fidelity=fid)
    assert path.stat().st_size > 1000
