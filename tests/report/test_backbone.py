"""rspose_tune.report._backbone: one backbone's report from fake runs (selection, counts, cost, noise) and
from hand-made confirm and baseline stages (the winner, the baseline delta, merged runs)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rspose_tune import report as rep
from rspose_tune.spaces import PARAM_NAMES
from tests.conftest import B
from tests.report.conftest import (
    HAND,
    KNOWN_GOOD,
    OTHER,
    SORT_OFF,
    _hand_run,
    _independent_t,
    _trials,
    trial,
    write_run,
)


def test_backbone_report_selection_counts_and_cost(storage):
    runs = rep.load_runs(storage)
    assert [r.name for r in runs] == ["demo-run", "vitb-run"]
    r = rep.backbone_report("vit-b", runs)
    assert r.best_trial == "b_best" and r.metric == pytest.approx(0.8)  # not a_pruned (0.97 at epoch 3)
    assert r.params["coeff_sort"] is None and r.params["delta_sort"] is None
    assert r.params["delta_rank"] == 0.4 and r.params["coeff_inst"] == 0.25
    assert (r.trials, r.completed, r.pruned, r.errors, r.running) == (7, 4, 2, 1, 0)
    assert r.mode == "max" and r.metric_name == "coco/AP" and r.gpus_per_trial == 2
    # independent arithmetic: wall seconds per trial (c_known resumed after epoch 5)
    walls = {"a": 300, "b": 900, "c": 500 + 340, "d": 900, "e": 900, "f": 100, "g": 0}
    epochs = {"a": 3, "b": 9, "c": 9, "d": 9, "e": 9, "f": 1, "g": 0}
    assert r.gpu_hours == pytest.approx(sum(walls.values()) * 2 / 3600)
    assert r.cpu_hours == pytest.approx(sum(walls.values()) * 4 / 3600)
    full = sum(walls[k] / epochs[k] * 9 * 2 for k in walls if epochs[k])
    assert r.full_budget_gpu_hours == pytest.approx(full / 3600)
    # runner-up: c/d/e share KNOWN_GOOD (0.790, 0.796, 0.784); best is d at 0.796
    assert r.runner_up_trial == "d_known" and r.runner_up_metric == pytest.approx(0.796)
    sigma = math.sqrt(((0.790 - 0.79) ** 2 + (0.796 - 0.79) ** 2 + (0.784 - 0.79) ** 2) / 2)
    assert r.noise_sigma == pytest.approx(sigma) and r.noise_dof == 2
    assert r.noise_flag == "within noise"  # gap 0.004 <= 1.96*sqrt(2)*0.006


def test_report_mode_min_prefers_the_lowest_completed(tmp_path):
    write_run(tmp_path, "r", [
        trial("lo_pruned", OTHER, [0.01], "pruned"),
        trial("hi", KNOWN_GOOD, [0.9, 0.5, 0.4], "completed"),
        trial("lo", SORT_OFF, [0.9, 0.5, 0.3], "completed"),
    ], max_epochs=3, mode="min", metric_name="val/loss")
    r = rep.backbone_report("vit-b", rep.load_runs(tmp_path))
    assert r.mode == "min" and r.best_trial == "lo" and r.runner_up_trial == "hi" and r.noise_flag == "noise unknown"


def test_report_without_budget_metadata_infers_mode_and_marks_cost_unknown(tmp_path):
    write_run(tmp_path, "r", [trial("t", KNOWN_GOOD, [0.5, 0.6], "completed")], backbone="custom", max_epochs=2,
              search_space={"delta_rank": {"low": 0.1}})
    r = rep.backbone_report("custom", rep.load_runs(tmp_path))
    assert r.mode == "max" and r.gpu_hours is None and r.full_budget_gpu_hours is None
    assert any("inferred" in n for n in r.notes)
    assert "?" in rep.format_markdown([r])


def test_backbone_report_chooses_the_confirm_winner_and_the_baseline_delta():
    frame_rows = []
    for _, t in HAND.iterrows():
        frame_rows.append({**{k: t[k] for k in ("run", "backbone", "trial_id", "status", "stage", "seed",
                                                "metric_name", "metric", *PARAM_NAMES)},
                           "epoch": 10, "ar": None, "spearman": None, "wall_s": 10.0, "world_size": None})
    run = rep.RunData("r", "/nowhere/r", pd.DataFrame(frame_rows), {},
                      rep.RunSettings(mode="max", gpus=0.0, cpus=1.0, max_epochs=10, grace_epochs=2,
                                      reduction_factor=3))
    r = rep.backbone_report("demo", [run])
    assert r.best_trial == "s2" and r.params["delta_rank"] == pytest.approx(0.7)  # what export writes
    assert r.trials == 4 and r.completed == 3 and r.pruned == 1  # the table counts search trials
    diff = rep.paired_difference({1: 0.71, 2: 0.70, 3: 0.72}, {1: 0.70, 2: 0.68, 3: 0.69})
    assert r.confirm_comparison.mean == pytest.approx(diff.mean) and r.confirm_comparison.low == pytest.approx(diff.low)
    assert (r.baseline_delta.mean, r.baseline_delta.low, r.baseline_delta.high) == pytest.approx(
        _independent_t([0.11, 0.08, 0.11]))
    text = rep.format_notes([r])
    assert diff.distinguishable is False and r.confirm_comparison.distinguishable is False
    assert "winner    0.71 [" in text and "the winner is NOT distinguishable from the runner-up" in text
    assert "Stock-loss baseline" in text and "Δ coco/AP chosen setting - baseline: +0.1" in text
    record = r.record()
    assert record["confirmed_seeds"] == 3 and record["baseline_delta"] == pytest.approx(0.1)


def test_merged_runs_keep_every_seed_of_a_setting():
    """Before: seed 1 of setting B from the second run was dropped silently (setdefault)."""
    again = _trials([("d4", "confirm", 1, B, 0.75, "completed"), ("s9", "search", 0, B, 0.70, "completed")])
    r = rep.backbone_report("demo", [_hand_run("r", HAND), _hand_run("r2", again)])
    win = r.confirmed[0]
    assert win.by_seed == pytest.approx({1: (0.71 + 0.75) / 2, 2: 0.70, 3: 0.72})
    assert any("seed 1 was trained 2 times (r/c4, r2/d4)" in note for note in r.notes)


def test_settings_from_the_run_spec_need_no_note_a_fallback_does(tmp_path):
    """Issue 25: every run with a run spec printed a bare "note: <run>: run spec." line."""
    import dataclasses

    write_run(tmp_path, "r", [trial("t", KNOWN_GOOD, [0.5, 0.6], "completed")], max_epochs=2)
    runs = rep.load_runs(tmp_path)
    for source, noted in (("run spec", False), ("run metadata; mode from preset file p.yaml", True)):
        changed = [dataclasses.replace(r, settings=dataclasses.replace(r.settings, source=source)) for r in runs]
        notes = rep.backbone_report("vit-b", changed).notes
        assert any(f"r: mode, resources and budget read from {source}." == n for n in notes) == noted, notes
        assert noted or not [n for n in notes if "run spec" in n], notes
