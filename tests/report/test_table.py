"""rspose_tune.report._table: the cells of Table E.8 and the notes, and the metric column when a confirm
stage chose the setting."""

from __future__ import annotations

from rspose_tune import report as rep
from tests.report.conftest import HAND, _hand_run


def test_table_cells_like_table_e8(storage):
    runs = rep.load_runs(storage)
    reports = [rep.backbone_report(b, runs) for b in ("demo", "vit-b")]
    text = rep.format_markdown(reports)
    lines = text.splitlines()
    assert lines[0].startswith("| Backbone") and "S. Rank δ / c" in lines[0] and set(lines[1]) <= {"|", "-"}
    demo = next(line for line in lines if line.startswith("| demo"))
    vitb = next(line for line in lines if line.startswith("| vit-b"))
    cells = [c.strip() for c in vitb.strip("|").split("|")]
    assert cells[1:5] == ["0.4 / 1.0", rep.OFF, "3.0 / 0.25", "0.0"]  # pos_thr: its default, 0
    assert lines[0].split("|")[5].strip() == "Pos. thr"
    assert cells[5] == "coco/AP 0.8" and cells[8] == "7 (1 failed)" and cells[9] == "2"
    assert cells[10] == f"{(300 + 900 + 840 + 900 + 900 + 100) * 2 / 3600:.2f}"
    demo_cells = [c.strip() for c in demo.strip("|").split("|")]
    assert demo_cells[1:5] == ["0.4 / 1.0", "1.5 / 2.0", rep.OFF, "0.0"] and demo_cells[10] == "0.00"
    assert demo_cells[12] == f"{(36 + 30 + 9) / 3600:.2f}" and demo_cells[13] == "noise unknown"
    notes = rep.format_notes(reports)
    assert "CPU-only trials: 0 GPU-h" in notes and "seed noise unknown" in notes


def test_the_metric_column_shows_the_confirm_mean_when_the_confirm_stage_chose():
    """Before: the table showed s2's search metric 0.74, the optimistic number."""
    r = rep.backbone_report("demo", [_hand_run("r", HAND)])
    assert r.best_trial == "s2" and r.chosen_by_confirm
    column = rep.TABLE_HEADER.index("Metric")
    metric_cell = rep.table_rows([r])[0][column]
    assert metric_cell == "coco/AP 0.71 (confirm mean, 3 seeds)"
    search_only = rep.backbone_report("demo", [_hand_run("r", HAND[HAND["stage"] == "search"])])
    assert rep.table_rows([search_only])[0][column] == "coco/AP 0.75"  # no confirm stage: the search's best
