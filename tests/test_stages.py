"""rspose_tune._stages: the confirm stage's and the baseline's settings, projecting a setting into a
space, and the stages' trial configs (hand-made settings; the end-to-end run is
tests/search/test_stages_e2e.py)."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from rspose_tune._stages import StageError, project_setting, stage_configs, stage_settings
from rspose_tune.spaces import PARAM_NAMES, load_preset
from tests.conftest import KG, B, C


def test_stage_settings_defaults_flags_and_errors():
    demo = load_preset("demo")
    assert stage_settings(demo, 5) == {"confirm_top": 0, "confirm_seeds": (), "baseline": False,
                                       "baseline_seeds": ()}  # (the demo: off)
    assert stage_settings(load_preset("vit-b"), 5) == {"confirm_top": 3, "confirm_seeds": (6, 7, 8),
                                                       "baseline": True, "baseline_seeds": (6, 7, 8)}
    got = stage_settings(demo, 0, top=0, baseline=True)
    assert got["confirm_seeds"] == () and got["baseline_seeds"] == (0,)
    assert stage_settings(demo, 0, top=3, seeds=4, baseline=False)["confirm_seeds"] == (1, 2, 3, 4)
    with pytest.raises(StageError, match="--confirm-seeds must be >= 2"):
        stage_settings(demo, 0, top=2, seeds=1)
    with pytest.raises(StageError, match="--confirm-seeds 3 needs --confirm-top"):
        stage_settings(demo, 0, top=0, seeds=3)


def test_project_setting_clips_fixes_and_refuses():
    from tests.conftest import switchable_demo

    space = switchable_demo().params
    got, changes = project_setting({**KG, "delta_rank": 1.7, "coeff_rank": 2.0, "coeff_inst": 9.0}, space)
    assert got["delta_rank"] == 1.0 and got["coeff_rank"] == 1.0 and got["coeff_inst"] == 3.0
    assert len(changes) == 4 and any("coeff_rank 2.0 -> 1" in c for c in changes)
    assert got["pos_thr"] == 1e-6 and "pos_thr 0.0 -> 1e-06 ([1e-06, 0.7] log)" in changes  # KG has none: 0
    off, _ = project_setting(C, space)
    assert off["coeff_inst"] == 0.0 and off["delta_inst"] is None
    with pytest.raises(StageError, match="cannot switch it off"):
        project_setting({**KG, "coeff_rank": None, "delta_rank": None}, space)


def test_stage_configs_take_the_top_distinct_settings_on_every_seed():
    rows = pd.DataFrame([
        {"trial_id": t, "epoch": 10, "status": s, "stage": "search", "seed": 0, "run": "r", "backbone": "demo",
         "metric_name": "coco/AP", "metric": m, "ar": None, "spearman": None, "wall_s": 1.0, "world_size": None,
         **{n: p.get(n) for n in PARAM_NAMES}}
        for t, p, m, s in (("a", KG, 0.7, "completed"), ("b", KG, 0.69, "completed"), ("c", C, 0.6, "completed"),
                           ("d", B, 0.9, "pruned"))
    ])
    spec = argparse.Namespace(confirm_top=3, confirm_seeds=(1, 2), baseline=True, baseline_seeds=(1, 2),
                              preset=load_preset("demo"))
    configs, notes = stage_configs(spec, rows)
    confirm = [c for c in configs if c["stage"] == "confirm"]
    assert [(c["confirms"], c["seed"]) for c in confirm] == [("a", 1), ("a", 2), ("c", 1), ("c", 2)]
    assert confirm[2]["coeff_inst"] == 0.0 and confirm[2]["delta_inst"] is None
    assert [c["seed"] for c in configs if c["stage"] == "baseline"] == [1, 2]
    assert notes and "fewer than --confirm-top 3" in notes[0]
