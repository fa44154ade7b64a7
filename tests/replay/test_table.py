"""rspose_tune.replay._table: curve tables from rows (settings, seeds, wall clocks, errors), the nearest
recorded setting, and a live run folder read as a table."""

from __future__ import annotations

import pandas as pd
import pytest

from rspose_tune.replay import TableError, load_table, table_from_frame
from tests.replay.conftest import MAX_EPOCHS, SPACE, SPACE_ON, _curve_rows, _frame, _grid_settings, _setting, _write_run


def test_table_groups_seeds_into_settings(known_table):
    assert len(known_table.settings) == 16
    assert all(len(c) == 2 for c in known_table.curves)
    assert known_table.best_index == 11
    assert known_table.best_value == pytest.approx(0.9)
    curve = known_table.curves[0][0]
    assert curve.epochs == (1, 2, 3, 4)
    assert curve.seconds == pytest.approx((1.0, 1.0, 1.0, 1.0))
    assert known_table.regret(0.8) == pytest.approx(0.1)


def test_table_ignores_trials_short_of_the_budget_and_errors():
    rows = _curve_rows("full", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)
    rows += _curve_rows("pruned", _setting(0.2, 1.0, 1.0, 1.0, 1.0), 0.7, max_epochs=2, status_last="pruned")
    rows += [{**r, "status": "error"} for r in _curve_rows("err", _setting(0.9, 1.0, 1.0, 1.0, 1.0), 0.8)]
    table = table_from_frame(pd.DataFrame(rows), source="t", max_epochs=4, mode="max", space=SPACE)
    assert [c[0].trial_id for c in table.curves] == ["full"]
    assert table.skipped_trials == 1  # the pruned one; error rows are dropped before grouping


def test_wall_clock_restart_counts_the_new_segment():
    rows = _curve_rows("t", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)
    for r, w in zip(rows, (2.0, 4.0, 1.5, 3.5)):  # resumed after epoch 2: its clock restarted
        r["wall_s"] = w
    table = table_from_frame(pd.DataFrame(rows), source="t", max_epochs=4, mode="max", space=SPACE)
    assert table.curves[0][0].seconds == pytest.approx((2.0, 2.0, 1.5, 2.0))


@pytest.mark.parametrize("column", ["metric", "wall_s", "delta_inst", "trial_id"])
def test_missing_column_is_named(column):
    frame = pd.DataFrame(_curve_rows("t", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)).drop(columns=[column])
    with pytest.raises(TableError, match=rf"missing column\(s\) \['{column}'\]"):
        table_from_frame(frame, source="t", max_epochs=4, mode="max", space=SPACE)


def test_no_full_curve_and_bad_values_are_errors():
    rows = _curve_rows("t", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)
    with pytest.raises(TableError, match="no setting has a full-budget"):
        table_from_frame(pd.DataFrame(rows), source="t", max_epochs=10, mode="max", space=SPACE)
    with pytest.raises(TableError, match="mode"):
        table_from_frame(pd.DataFrame(rows), source="t", max_epochs=4, mode="maximize", space=SPACE)
    with pytest.raises(TableError, match="search space"):
        table_from_frame(pd.DataFrame(rows), source="t", max_epochs=4, mode="max", space={"delta_rank": {}})
    rows[1]["wall_s"] = float("nan")
    with pytest.raises(TableError, match=r"trial 't' has wall_s \[1.0, nan"):
        table_from_frame(pd.DataFrame(rows), source="t", max_epochs=4, mode="max", space=SPACE)


def test_min_mode_best_and_regret():
    settings = _grid_settings()[:3]
    table = table_from_frame(_frame([0.5, 0.2, 0.4], settings), source="t", max_epochs=4, mode="min", space=SPACE)
    assert table.best_index == 1
    assert table.regret(table.value(0)) == pytest.approx(0.3)
    assert table.better(0.1, 0.2) and not table.better(0.3, 0.2)


def test_nearest_exact_pattern_and_fallback(mixed_table):
    for i, setting in enumerate(mixed_table.settings):
        match = mixed_table.nearest(setting)
        assert (match.index, match.exact, match.same_pattern) == (i, True, True)
    near = dict(mixed_table.settings[0], delta_rank=0.25)  # 0.2 -> 0.25: nearest is still setting 0
    match = mixed_table.nearest(near)
    assert match.index == 0 and not match.exact and match.distance == pytest.approx(0.05 / 0.9)
    only_sort_off = _setting(0.35, di=1.0, ci=0.5)  # pattern (rank, inst) is recorded once
    assert mixed_table.settings[mixed_table.nearest(only_sort_off).index]["coeff_sort"] == 0.0
    mixed_table.settings.pop(16), mixed_table.curves.pop(16)  # drop the sort-off setting
    mixed_table.__post_init__()
    match = mixed_table.nearest(only_sort_off)
    assert not match.same_pattern and not match.exact


def test_reads_a_live_run_folder(tmp_path):
    frame = _frame([0.5, 0.6, 0.7], _grid_settings()[:3])
    run = _write_run(tmp_path, frame)
    table = load_table([run])
    assert len(table.settings) == 3 and table.n_curves == 6 and table.mode == "max"
    assert table.space["delta_sort"]["log"] is True  # the demo preset's space, from the metadata
    assert table.budget["grace_epochs"] == 2 and table.metric_name == "coco/AP"
    assert len(table.known_good) == 1
    both = load_table([run, run / "trials"])
    assert both.n_curves == 12 and len(both.settings) == 3


def test_seeds_are_read_from_the_rows_or_the_trial_id():
    rows = _curve_rows("s00-seed3", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)
    rows += [{**r, "seed": 7} for r in _curve_rows("t-other", _setting(0.6, 1.0, 1.0, 1.0, 1.0), 0.6)]
    table = table_from_frame(pd.DataFrame(rows), source="s", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)
    assert sorted(c[0].seed for c in table.curves) == [3, 7]
    assert table.common_seeds == []  # no seed every setting has


def test_nearest_counts_a_value_outside_the_range_as_its_nearest_end(mixed_table):
    """Issue 26: a proposal from a wider search space (``replay --search-space``) matches as if it
    were at the table's edge, in linear and log dimensions alike."""
    setting = mixed_table.settings[0]
    for name, outside, edge in (("delta_rank", 50.0, 1.0), ("delta_rank", 0.01, 0.1)):  # a delta is >= 0
        a = mixed_table.nearest(dict(setting, **{name: outside}))
        b = mixed_table.nearest(dict(setting, **{name: edge}))
        assert (a.index, a.distance) == (b.index, pytest.approx(b.distance))
    log_dim = next(s for s in mixed_table.settings if s["delta_sort"])
    a = mixed_table.nearest(dict(log_dim, delta_sort=1e-9))  # below a log range: its low end, not log(1e-300)
    b = mixed_table.nearest(dict(log_dim, delta_sort=0.1))
    assert (a.index, a.distance) == (b.index, pytest.approx(b.distance))


@pytest.mark.parametrize(("space", "match"), [
    ({"delta_rank": {}}, r"^t: the search space: `params` is missing required key\(s\) \['coeff_rank'"),
    ("x", r"^t: the search space: `params` must be a mapping, got 'x' \(str\)$"),
    ({**SPACE, "delta_rank": {**SPACE["delta_rank"], "low": 2.0}}, r"`params.delta_rank` must have low < high"),
    ({**SPACE, "coeff_rank": {**SPACE["coeff_rank"], "fixed": 0.0}}, r"`params.delta_rank` must be \{fixed: null\}"),
])
def test_a_table_space_is_checked_by_the_one_validator(space, match):
    """The preset's rules (``spaces.validate_space``), as a TableError."""
    rows = _curve_rows("t", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)
    with pytest.raises(TableError, match=match):
        table_from_frame(pd.DataFrame(rows), source="t", max_epochs=4, mode="max", space=space)
