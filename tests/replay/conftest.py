"""Shared by the replay's tests: small synthetic tables (known best setting, curves whose order never
changes) and a run folder written as a live search writes it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rspose_tune.replay import CurveTable, table_from_frame
from rspose_tune.spaces import PARAM_NAMES

SPACE = {
    "delta_rank": {"low": 0.1, "high": 1.0, "log": False, "fixed": None, "allow_off": False},
    "coeff_rank": {"low": None, "high": None, "log": False, "fixed": 1.0, "allow_off": False},
    "delta_sort": {"low": 0.1, "high": 3.0, "log": True, "fixed": None, "allow_off": False},
    "coeff_sort": {"low": 0.1, "high": 4.0, "log": True, "fixed": None, "allow_off": True},
    "delta_inst": {"low": 0.25, "high": 5.0, "log": True, "fixed": None, "allow_off": False},
    "coeff_inst": {"low": 0.05, "high": 3.0, "log": True, "fixed": None, "allow_off": True},
}
#: The same space with every component always on (fewer, larger cells: random search hits each often).
SPACE_ON = {n: {**s, "allow_off": False} for n, s in SPACE.items()}
MAX_EPOCHS = 4


def _setting(dr, ds=None, cs=0.0, di=None, ci=0.0):
    return {"delta_rank": dr, "coeff_rank": 1.0, "delta_sort": ds, "coeff_sort": cs, "delta_inst": di, "coeff_inst": ci}


def _curve_rows(trial_id, setting, final, *, max_epochs=MAX_EPOCHS, seconds=1.0, status_last="completed"):
    rows = []
    for e in range(1, max_epochs + 1):
        rows.append({
            "trial_id": trial_id, "epoch": e, "status": status_last if e == max_epochs else "running",
            # the six only: a table written before pos_thr existed (read as its default)
            **{n: (None if setting[n] in (None, 0.0) else setting[n]) for n in setting},
            "metric": final * (1 - 0.5**e) / (1 - 0.5**max_epochs), "wall_s": seconds * e,
        })
    return rows


def _frame(values, settings, *, seeds=2, noise=0.002, max_epochs=MAX_EPOCHS):
    rows = []
    for i, (value, setting) in enumerate(zip(values, settings)):
        for s in range(seeds):
            rows += _curve_rows(f"s{i:02d}-seed{s}", setting, value + noise * (s - 0.5), max_epochs=max_epochs,
                                seconds=1.0 + 0.1 * i)
    return pd.DataFrame(rows)


def _grid_settings(all_on=True):
    out = [_setting(dr, ds, cs, di, ci) for dr in (0.2, 0.8) for ds in (0.3, 2.0) for cs in (0.3, 3.0)
           for di, ci in ((0.5, 0.1), (3.0, 2.0))]
    if not all_on:
        out += [_setting(0.3, di=1.0, ci=0.5), _setting(0.7, ds=1.0, cs=1.0), _setting(0.5)]
    return out


@pytest.fixture
def known_table() -> CurveTable:
    """16 settings, all components on; setting 11 is the best (0.9), the others 0.3-0.7."""
    settings = _grid_settings()
    values = list(np.linspace(0.3, 0.7, len(settings)))
    values[11] = 0.9
    return table_from_frame(_frame(values, settings), source="synthetic", max_epochs=MAX_EPOCHS, mode="max",
                            space=SPACE_ON, budget={"grace_epochs": 1, "reduction_factor": 2})


@pytest.fixture
def mixed_table() -> CurveTable:
    """19 settings including components switched off (the space allows it)."""
    settings = _grid_settings(all_on=False)
    values = list(np.linspace(0.3, 0.7, len(settings)))
    return table_from_frame(_frame(values, settings), source="mixed", max_epochs=MAX_EPOCHS, mode="max", space=SPACE)


def _write_run(tmp_path, frame, *, with_space=True):
    """Rows as a live search writes them (results.write_row) under <run>/trials/."""
    from rspose_tune.results import build_metadata, make_row, write_row
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo")
    meta = build_metadata(run="r", backbone="demo", max_epochs=MAX_EPOCHS,
                          search_space=preset if with_space else None)
    run = tmp_path / "run"
    for rec in frame.to_dict("records"):
        config = {n: (0.0 if rec[n] is None and n.startswith("coeff_") else rec[n]) for n in PARAM_NAMES if n in rec}
        row = make_row({"epoch": rec["epoch"], "metric": rec["metric"], "wall_s": rec["wall_s"]}, config,
                       run="r", backbone="demo", trial_id=rec["trial_id"], status=rec["status"])
        write_row(row, run / "trials", metadata=meta)
    return run


def _one_error_line(err: str, *names: str) -> None:
    """Exactly one ``error:`` line on stderr, naming each of ``names``, and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert all(n in lines[0] for n in names), lines[0]
