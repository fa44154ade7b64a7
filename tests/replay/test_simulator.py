"""rspose_tune.replay: tables, the simulated controller, the policies, the summary and the CLI.

Most tests use small synthetic tables (known best setting, curves whose order never changes);
the shipped demo table is checked for its contents; a slow test runs the same fixed sequence of
trials through a real Ray Tune controller and through the replay and compares ASHA's decisions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rspose_tune.replay import (
    DEMO_TABLE,
    POLICIES,
    CurveTable,
    ReplaySettings,
    TableError,
    checkpoints,
    design_settings,
    incumbent_at,
    load_table,
    replay,
    summarize,
    table_from_frame,
)
from rspose_tune.replay._cli import main
from rspose_tune.replay._simulator import DEFAULT_POLICIES, make_scheduler, simulate
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
        })  # fmt: skip
    return rows


def _frame(values, settings, *, seeds=2, noise=0.002, max_epochs=MAX_EPOCHS):
    rows = []
    for i, (value, setting) in enumerate(zip(values, settings)):
        for s in range(seeds):
            rows += _curve_rows(f"s{i:02d}-seed{s}", setting, value + noise * (s - 0.5), max_epochs=max_epochs,
                                seconds=1.0 + 0.1 * i)  # fmt: skip
    return pd.DataFrame(rows)


def _grid_settings(all_on=True):
    out = [_setting(dr, ds, cs, di, ci) for dr in (0.2, 0.8) for ds in (0.3, 2.0) for cs in (0.3, 3.0)
           for di, ci in ((0.5, 0.1), (3.0, 2.0))]  # fmt: skip
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
                            space=SPACE_ON, budget={"grace_epochs": 1, "reduction_factor": 2})  # fmt: skip


@pytest.fixture
def mixed_table() -> CurveTable:
    """19 settings including components switched off (the space allows it)."""
    settings = _grid_settings(all_on=False)
    values = list(np.linspace(0.3, 0.7, len(settings)))
    return table_from_frame(_frame(values, settings), source="mixed", max_epochs=MAX_EPOCHS, mode="max", space=SPACE)


# ------------------------------------------------------------------------------------- tables


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


# ------------------------------------------------------------------------------------- replay


@pytest.mark.parametrize("policy", DEFAULT_POLICIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_policy_with_enough_budget_finds_the_best(known_table, policy, seed):
    settings = ReplaySettings(budget_epochs=60 * MAX_EPOCHS, workers=2, grace_epochs=1, reduction_factor=2)
    trace = replay(known_table, POLICIES[policy], seed, settings)
    assert incumbent_at(trace, trace.spent_epochs)[1] == known_table.best_index
    summary = summarize(known_table, [trace], settings.budget_epochs, target=0.01)
    assert summary.rows[-1]["regret"][0] == pytest.approx(0.0)
    assert summary.reached == 1


@pytest.mark.parametrize("policy", [name for name, p in POLICIES.items() if p.scheduler != "pasha"])
@pytest.mark.parametrize("budget", [0, MAX_EPOCHS - 1, 2 * MAX_EPOCHS - 1])
def test_a_policy_without_budget_finds_nothing(known_table, policy, budget):
    """Too few epochs for any trial to reach the full budget (4 workers share them). (Not the
    PASHA-style policy: its answer comes from its top level, below the full budget; tests/test_pasha.py.)"""
    settings = ReplaySettings(budget_epochs=budget, workers=4, grace_epochs=1, reduction_factor=2)
    trace = replay(known_table, POLICIES[policy], 0, settings)
    assert trace.incumbents == [] and trace.spent_epochs <= budget
    if budget == 0:
        assert trace.trials == [] and trace.events == []
    summary = summarize(known_table, [trace], budget, target=0.01)
    assert summary.rows[-1]["found"] == 0 and math.isinf(summary.rows[-1]["regret"][0])
    assert summary.reached == 0


def _fingerprint(trace):
    return ([(t.config, t.setting, t.curve, t.last_epoch, t.start_s, t.end_s) for t in trace.trials],
            trace.decisions, trace.incumbents, trace.events)  # fmt: skip


@pytest.mark.parametrize("policy", ["asha-tpe", "full-random"])
def test_same_seed_same_replay(mixed_table, policy):
    settings = ReplaySettings(budget_epochs=30 * MAX_EPOCHS, workers=3, grace_epochs=1, reduction_factor=2)
    first = replay(mixed_table, POLICIES[policy], 7, settings)
    np.random.seed(123)  # Ray's ASHA draws its bracket from numpy's global RNG: must not matter
    again = replay(mixed_table, POLICIES[policy], 7, settings)
    other = replay(mixed_table, POLICIES[policy], 8, settings)
    assert _fingerprint(first) == _fingerprint(again)
    assert _fingerprint(first)[0] != _fingerprint(other)[0]


def test_budget_and_workers_bound_the_replay(known_table):
    one = replay(known_table, POLICIES["full-random"], 0, ReplaySettings(budget_epochs=5 * MAX_EPOCHS, workers=1))
    assert len(one.trials) == 5 and one.spent_epochs == 20
    assert all(b.start_s == pytest.approx(a.end_s) for a, b in zip(one.trials, one.trials[1:]))  # sequential
    many = replay(known_table, POLICIES["full-random"], 0, ReplaySettings(budget_epochs=5 * MAX_EPOCHS, workers=5))
    assert [t.start_s for t in many.trials[:5]] == [0.0] * 5
    assert all(t.start_s > 0 for t in many.trials[5:]) and many.spent_epochs == 20
    assert many.clock_s < one.clock_s / 3  # five at once


def test_asha_stops_early_and_tpe_differs_from_random_after_startup(known_table):
    settings = ReplaySettings(budget_epochs=40 * MAX_EPOCHS, workers=1, grace_epochs=1, reduction_factor=2,
                              n_startup_trials=4)  # fmt: skip
    asha = replay(known_table, POLICIES["asha-tpe"], 0, settings)
    assert any(t.stopped for t in asha.trials)
    assert all(t.last_epoch in (1, 2, MAX_EPOCHS) for t in asha.trials)  # ASHA rungs 1, 2 (then the end)
    tpe = replay(known_table, POLICIES["full-tpe"], 0, settings)
    rnd = replay(known_table, POLICIES["full-random"], 0, settings)
    assert [t.config for t in tpe.trials[:4]] == [t.config for t in rnd.trials[:4]]  # same random start-up
    assert [t.config for t in tpe.trials[4:]] != [t.config for t in rnd.trials[4:]]


def test_only_full_budget_trials_are_found():
    """Curves that fall with training: a stopped trial's early metric beats every final one."""
    settings = _grid_settings()
    rows = []
    for i, setting in enumerate(settings):
        for r in _curve_rows(f"s{i:02d}", setting, 0.3 + 0.02 * i):
            rows.append({**r, "metric": (0.3 + 0.02 * i) * (1 + 2 * 0.5 ** r["epoch"])})
    table = table_from_frame(pd.DataFrame(rows), source="falling", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)
    rs = ReplaySettings(budget_epochs=30 * MAX_EPOCHS, workers=4, grace_epochs=1, reduction_factor=2)
    trace = replay(table, POLICIES["asha-random"], 0, rs)
    assert any(t.stopped for t in trace.trials) and trace.incumbents
    for _, clock, metric, setting in trace.incumbents:
        ends = [t for t in trace.trials if t.end_s == clock and t.setting == setting]
        assert ends and all(t.last_epoch == MAX_EPOCHS and not t.stopped for t in ends)
        assert metric == pytest.approx(table.curves[setting][0].metric[-1])


def test_known_good_is_asked_first(known_table):
    known_table.known_good = [dict(known_table.settings[3])]
    settings = ReplaySettings(budget_epochs=3 * MAX_EPOCHS, workers=1, known_good=True)
    trace = replay(known_table, POLICIES["full-tpe"], 0, settings)
    assert trace.trials[0].setting == 3 and trace.trials[0].exact
    without = replay(known_table, POLICIES["full-tpe"], 0, ReplaySettings(budget_epochs=3 * MAX_EPOCHS, workers=1))
    assert not without.trials[0].exact


@pytest.mark.parametrize(
    ("field", "value"),
    [("budget_epochs", -1), ("workers", 0), ("grace_epochs", 0), ("grace_epochs", MAX_EPOCHS + 1),
     ("reduction_factor", 1), ("n_startup_trials", -1), ("workers", 2.0)],
)  # fmt: skip
def test_settings_are_checked(known_table, field, value):
    settings = ReplaySettings(**{"budget_epochs": 10, field: value})
    with pytest.raises(ValueError, match=f"`{field}` is {value!r}"):
        replay(known_table, POLICIES["asha-tpe"], 0, settings)


class _FixedSearcher:
    """Proposes a fixed list of configs (then FINISHED); for feeding the same trials to two controllers."""

    @staticmethod
    def make(configs):
        from ray.tune.search import Searcher

        class FixedSearcher(Searcher):
            def __init__(self):
                super().__init__(metric="metric", mode="max")
                self.configs = [dict(c) for c in configs]
                self.given = 0

            def suggest(self, trial_id):
                if self.given >= len(self.configs):
                    return Searcher.FINISHED
                self.given += 1
                return dict(self.configs[self.given - 1])

            def on_trial_complete(self, trial_id, result=None, error=False):
                pass

        return FixedSearcher()


def _stairs_table():
    """Constant curves over 4 epochs (values known), one curve per setting."""
    values = [0.5, 0.4, 0.6, 0.45, 0.7, 0.3, 0.55, 0.65]
    settings = [_setting(0.1 + 0.1 * i, 1.0, 1.0, 1.0, 1.0) for i in range(len(values))]
    rows = []
    for i, (v, s) in enumerate(zip(values, settings)):
        for r in _curve_rows(f"t{i}", s, v):
            rows.append({**r, "metric": v + 0.01 * r["epoch"] * (i % 3 - 1)})  # order changes with epochs
    return table_from_frame(pd.DataFrame(rows), source="stairs", max_epochs=4, mode="max", space=SPACE), settings


def test_replayed_asha_decides_as_asha_is_defined():
    """Sequential trials, grace 1, rf 2 (rungs 1, 2; 4 = the end): stop when below the rung's median."""
    table, settings = _stairs_table()
    rs = ReplaySettings(budget_epochs=1000, workers=1, grace_epochs=1, reduction_factor=2)
    trace = simulate(table, make_scheduler(POLICIES["asha-tpe"], table, rs), _FixedSearcher.make(settings),
                     settings=rs, seed=0)  # fmt: skip
    rungs: dict[int, list[float]] = {1: [], 2: []}
    expected = []
    for i in range(len(settings)):
        curve = table.curves[i][0]
        stop = 4
        for e in (1, 2):
            value = curve.metric[e - 1]
            if rungs[e] and value < np.percentile(rungs[e], 50):
                rungs[e].append(value)
                stop = e
                break
            rungs[e].append(value)
        expected.append(stop)
    assert [t.last_epoch for t in trace.trials] == expected
    assert 1 in expected and 2 in expected and 4 in expected  # the example exercises every outcome


@pytest.mark.slow
def test_replayed_asha_matches_live_ray_scheduler(local_ray, tmp_path):
    """The same trials (configs, curves, order: W=1) through Ray's real controller and the replay."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    table, settings = _stairs_table()
    configs = [{**s, "curve": list(table.curves[i][0].metric)} for i, s in enumerate(settings)]

    def trainable(config):
        for epoch, metric in enumerate(config["curve"], start=1):
            tune.report({"epoch": epoch, "metric": metric})

    def asha(rs):
        return make_scheduler(POLICIES["asha-tpe"], table, rs)

    for grace, factor in ((1, 2), (2, 2), (1, 3)):
        rs = ReplaySettings(budget_epochs=1000, workers=1, grace_epochs=grace, reduction_factor=factor)
        trace = simulate(table, asha(rs), _FixedSearcher.make(configs), settings=rs, seed=0)
        grid = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(_FixedSearcher.make(configs), max_concurrent=1),
                                        scheduler=asha(rs), num_samples=len(configs)),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name=f"live-{grace}-{factor}", verbose=0),
        ).fit()  # fmt: skip
        live = {r.config["delta_rank"]: r.metrics["epoch"] for r in grid}
        replayed = {t.config["delta_rank"]: t.last_epoch for t in trace.trials}
        assert replayed == live, (grace, factor)
        assert set(live.values()) != {4}, "the example must make ASHA stop some trials"


# ------------------------------------------------------------------------------------- summary


def test_checkpoints():
    assert checkpoints(10, 400) == [10, 20, 50, 100, 200, 400]
    assert checkpoints(10, 100) == [10, 20, 50, 100]
    assert checkpoints(10, 5) == [5]
    assert checkpoints(10, 0) == [0]


def test_summary_quartiles_over_seeds(known_table):
    settings = ReplaySettings(budget_epochs=10 * MAX_EPOCHS, workers=2, grace_epochs=1, reduction_factor=2)
    traces = [replay(known_table, POLICIES["full-random"], s, settings) for s in range(5)]
    summary = summarize(known_table, traces, settings.budget_epochs, target=0.01)
    finals = sorted(incumbent_at(t, settings.budget_epochs)[0] for t in traces)
    assert summary.rows[-1]["best"][0] == pytest.approx(finals[2])
    assert summary.rows[-1]["best"][1] == pytest.approx(np.percentile(finals, 25))
    assert summary.trials >= 10 and summary.stopped_share == 0
    assert 0 <= summary.exact_share < 0.1  # random proposals are (almost) never a recorded setting


# ------------------------------------------------------------------------------------- parquet + CLI


def _write_run(tmp_path, frame, *, with_space=True):
    """Rows as a live search writes them (results.write_row) under <run>/trials/."""
    from rspose_tune.results import build_metadata, make_row, write_row
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo")
    meta = build_metadata(run="r", backbone="demo", max_epochs=MAX_EPOCHS,
                          search_space=preset if with_space else None)  # fmt: skip
    run = tmp_path / "run"
    for rec in frame.to_dict("records"):
        config = {n: (0.0 if rec[n] is None and n.startswith("coeff_") else rec[n]) for n in PARAM_NAMES if n in rec}
        row = make_row({"epoch": rec["epoch"], "metric": rec["metric"], "wall_s": rec["wall_s"]}, config,
                       run="r", backbone="demo", trial_id=rec["trial_id"], status=rec["status"])  # fmt: skip
        write_row(row, run / "trials", metadata=meta)
    return run


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


def test_cli_replays_a_run_and_prints_every_policy(tmp_path, capsys):
    run = _write_run(tmp_path, _frame([0.5, 0.6, 0.7, 0.4], _grid_settings()[:4]))
    assert main([str(run), "--seeds", "3", "--budget-epochs", "40", "-W", "2", "--grace-epochs", "1"]) == 0
    out = capsys.readouterr().out
    for name in DEFAULT_POLICIES:  # the GP policies only when named (slower to replay)
        assert f"\n{POLICIES[name].name}\n" in out
    assert "\nASHA+GP\n" not in out
    assert "3 search seeds (0..2), W=2 workers, budget 40 epochs, ASHA grace 1 / reduction factor 3" in out
    assert "4 settings, 8 full 4-epoch curves" in out
    assert "nearest" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "error: argument --workers/-W: --workers must be an integer >= 1, got 0"),
        (["--reduction-factor", "1"], "--reduction-factor must be a finite number > 1"),
        (["--policies", "bohb"], "argument --policies: invalid choice: 'bohb'"),
        (["/nonexistent/table.parquet"], "error: /nonexistent/table.parquet: no such file or folder"),
        (["--grace-epochs", "11"], "error: --grace-epochs is 11, but must be an integer in [1, 10] (the table's max_epochs)"),
        (["--backbone", "nope"], "error: "),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def _one_error_line(err: str, *names: str) -> None:
    """Exactly one ``error:`` line on stderr, naming each of ``names``, and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert all(n in lines[0] for n in names), lines[0]


def test_cli_unwritable_json_is_one_error_line_before_any_replay(tmp_path, capsys):
    """Issue 17: a --json path under a file ended in a traceback, after the whole replay."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["--seeds", "1", "--budget-epochs", "20", "--policies", "asha-tpe", "--json", str(blocker / "r.json")])
    out, err = capsys.readouterr()
    assert code == 2 and "ASHA+TPE" not in out  # refused before replaying
    _one_error_line(err, f"--json {blocker / 'r.json'}")


def test_cli_bad_recorded_budget_is_one_error_line(tmp_path, capsys):
    """A budget value read in place of a flag names where it came from and the flag that overrides it."""
    from rspose_tune.spaces import load_preset

    text = Path(load_preset("demo").source).read_text()
    preset = tmp_path / "grace5.yaml"  # ASHA grace 5: more than the table's 4 epochs
    preset.write_text(text.replace("grace_epochs: 2", "grace_epochs: 5").replace("val_interval: 1", "val_interval: 5"))
    table = tmp_path / "t.parquet"
    _frame([0.5, 0.6], _grid_settings()[:2]).to_parquet(table)
    assert main([str(table), "--backbone", str(preset), "--seeds", "1"]) == 2
    _one_error_line(capsys.readouterr().err, "the recorded budget's grace_epochs is 5", "[1, 4]")


@pytest.mark.parametrize("case", ["work-dir-is-a-file", "out-is-a-folder", "out-under-a-file", "partial-of-nothing"])
def test_make_table_bad_paths_are_one_error_line(tmp_path, case, capsys):
    """Issue 17: these ended in tracebacks (two of them only after training every curve)."""
    from rspose_tune.replay._make_table import main as make_table

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    work, out = tmp_path / "w", tmp_path / "t.parquet"
    argv, flag = {
        "work-dir-is-a-file": (["--work-dir", str(blocker)], f"--work-dir {blocker}"),
        "out-is-a-folder": (["--out", str(tmp_path)], f"--out {tmp_path}"),
        "out-under-a-file": (["--out", str(blocker / "t.parquet")], f"--out {blocker / 't.parquet'}"),
        "partial-of-nothing": (["--partial", "--limit", "0", "--n-train", "8", "--n-val", "4"], "--partial"),
    }[case]
    code = make_table(["--work-dir", str(work), "--out", str(out), "--settings", "2", "--seeds", "0", "--epochs", "1",
                       *argv])  # fmt: skip
    out_text, err = capsys.readouterr()
    assert code == 2, (out_text, err)
    _one_error_line(err, flag)
    assert not out.exists()


def test_cli_table_without_space_needs_a_preset(tmp_path, capsys):
    run = _write_run(tmp_path, _frame([0.5, 0.6], _grid_settings()[:2]), with_space=False)
    assert main([str(run)]) == 2
    assert "pass --backbone PRESET" in capsys.readouterr().err
    assert main([str(run), "--backbone", "demo", "--seeds", "1", "--budget-epochs", "8"]) == 0


def test_cli_rejects_a_table_without_needed_columns(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"trial_id": ["a"], "epoch": [1]}).to_parquet(path)
    assert main([str(path), "--backbone", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and "metric" in err


# ------------------------------------------------------------------------------------- demo table


def test_design_is_space_filling_with_components_off():
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo")
    settings = design_settings(preset, 64, seed=0)
    assert len(settings) == 64 and settings == design_settings(preset, 64, seed=0)
    assert settings[0] == dict(preset.known_good[0])
    patterns = {(s["coeff_sort"] > 0, s["coeff_inst"] > 0) for s in settings}
    assert patterns == {(True, True), (True, False), (False, True), (False, False)}
    assert len({json.dumps(s, sort_keys=True) for s in settings}) == 64
    for s in settings:
        for name in PARAM_NAMES:
            spec, value = preset.params[name], s[name]
            off = name.startswith("delta_") and s[name.replace("delta_", "coeff_")] == 0  # pos_thr: never off
            if off or (name.startswith("coeff_") and value == 0.0):
                assert (value is None) if off else True
                continue
            assert spec.contains(value), (name, value)
    ranks = np.array([s["delta_rank"] for s in settings])  # a Latin hypercube per pattern covers each range
    assert ranks.min() < 0.2 and ranks.max() > 0.9
    with pytest.raises(ValueError, match="n_settings"):
        design_settings(preset, 0)


def test_shipped_demo_table():
    import pyarrow.parquet as pq

    from rspose_tune.results import read_metadata

    assert DEMO_TABLE.is_file(), "run `python -m rspose_tune.replay make-table` (docs/replay.md)"
    table = load_table([DEMO_TABLE])
    assert len(table.settings) == 64 and table.max_epochs == 10
    assert all(c.epochs == tuple(range(1, 11)) for cs in table.curves for c in cs)
    assert {(s["coeff_sort"] > 0, s["coeff_inst"] > 0) for s in table.settings} == {
        (True, True), (True, False), (False, True), (False, False)}
    # seeds 0 and 1 for every setting; seeds 2 and 3 for the 16 best by their mean over 0 and 1
    # (make-table --extra-seeds 2 3 --extra-top 16), so the replay can hold a 3-seed confirm stage
    seeds = [sorted(c.seed for c in cs) for cs in table.curves]
    assert seeds.count([0, 1, 2, 3]) == 16 and seeds.count([0, 1]) == 48
    first_two = [np.mean([c.metric[-1] for c in cs if c.seed in (0, 1)]) for cs in table.curves]
    best16 = set(np.argsort(first_two)[::-1][:16])  # independent of make-table's own choice
    assert {i for i, s in enumerate(seeds) if s == [0, 1, 2, 3]} == best16
    meta = read_metadata(DEMO_TABLE)
    assert meta["git_revision"] and meta["table"]["made"] and meta["table"]["command"].startswith("python -m")
    assert DEMO_TABLE.stat().st_size < 512 * 1024
    # recorded with today's demo space, which searches pos_thr (log 1e-6 .. 0.7)
    assert "pos_thr" in pq.read_schema(DEMO_TABLE).names
    assert meta["search_space"]["params"]["pos_thr"]["log"] is True
    assert all(1e-6 <= s["pos_thr"] <= 0.7 for s in table.settings) and len({s["pos_thr"] for s in table.settings}) > 32


def test_shipped_demo_table_replays_with_todays_demo_preset_that_searches_pos_thr(capsys):
    assert main(["--backbone", "demo", "--seeds", "1", "--budget-epochs", "40", "--policies", "asha-tpe"]) == 0
    assert "ASHA+TPE" in capsys.readouterr().out


def test_cli_default_is_the_demo_table(capsys):
    assert main(["--seeds", "2", "--budget-epochs", "60", "--policies", "asha-tpe", "full-random"]) == 0
    out = capsys.readouterr().out
    assert str(DEMO_TABLE) in out and "ASHA+TPE" in out and "full-budget random" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--settings", "0"], "error: --settings must be >= 1, got 0"),
     (["--epochs", "x"], "error: argument --epochs: invalid int value: 'x'"),
     (["--backbone", "no-such-preset"], "error: "),
     (["--backbone", "vit-b", "--n-train", "8"], "error: --n-train/--n-val only apply to a preset with generated demo data"),
     (["--extra-seeds", "1", "--seeds", "0", "1"], "error: --extra-seeds [1] must not repeat a --seeds seed [0, 1]"),
     (["--extra-top", "0"], "error: --extra-top must be >= 1, got 0")],
)  # fmt: skip
def test_make_table_bad_input_is_one_error_line(tmp_path, argv, message, capsys):
    from rspose_tune.replay._make_table import main as make_table

    with pytest.raises(SystemExit) as exc:
        raise SystemExit(make_table([*argv, "--out", str(tmp_path / "t.parquet"), "--work-dir", str(tmp_path / "w")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "t.parquet").exists()


@pytest.mark.slow
def test_make_table_trains_and_resumes(tmp_path, capsys):
    from rspose_tune.replay._make_table import main as make_table
    from rspose_tune.results import read_metadata

    out, work = tmp_path / "t.parquet", tmp_path / "work"
    argv = ["--out", str(out), "--work-dir", str(work), "--settings", "2", "--seeds", "0", "--epochs", "2",
            "--n-train", "16", "--n-val", "8"]  # fmt: skip
    assert make_table([*argv, "--limit", "1"]) == 0
    assert not out.exists() and len(list((work / "curves").glob("*.parquet"))) == 1
    assert make_table(argv) == 0  # resumes: trains only the second curve
    log = capsys.readouterr().out
    assert log.count("s000-seed0:") == 1 and log.count("s001-seed0:") == 1
    table = load_table([out])
    assert len(table.settings) == 2 and table.max_epochs == 2
    assert read_metadata(out)["table"]["demo_data"] == {"n_train": 16, "n_val": 8}
    assert make_table([*argv, "--design-seed", "1"]) == 2  # another design in the same work dir
    assert "holds curves of another design" in capsys.readouterr().err


def test_replay_runs_the_searchs_tpe_start_up_count(capsys, tmp_path):
    """Issue 17: the search runs startup_trials(n) = min(10, max(2, n // 3)) random trials; the
    replay ran 10 whatever the search size."""
    from rspose_tune import search
    from rspose_tune.searcher import startup_trials

    args = search.build_parser().parse_args(["--num-trials", "8", "--storage", str(tmp_path)])
    assert main(["--seeds", "1", "--budget-epochs", "20", "--policies", "asha-tpe", "--num-trials", "8"]) == 0
    assert f"TPE start-up {startup_trials(8)} trials" in capsys.readouterr().out
    assert startup_trials(8) == 2 and startup_trials(64) == 10 and startup_trials(8, "random") == 8
    assert search.DEFAULT_TRIALS["demo"] == 8 and args.num_trials == 8  # the demo search's own size


@pytest.mark.slow
def test_make_table_extra_seeds_go_to_the_best_settings_by_mean(tmp_path, capsys):
    import pyarrow.parquet as pq

    from rspose_tune.replay._make_table import main as make_table
    from rspose_tune.results import read_metadata

    out, work = tmp_path / "t.parquet", tmp_path / "work"
    argv = ["--out", str(out), "--work-dir", str(work), "--settings", "3", "--seeds", "0", "--epochs", "1",
            "--n-train", "16", "--n-val", "8", "--extra-seeds", "1", "--extra-top", "1"]  # fmt: skip
    assert make_table([*argv, "--limit", "3"]) == 0  # the 3 seed-0 curves; the extra one is not chosen yet
    assert not out.exists() and "run the same command again" in capsys.readouterr().out
    finals = {}
    for f in (work / "curves").glob("*-seed0.parquet"):
        rows = pq.read_table(f).to_pylist()
        finals[int(f.name[1:4])] = max(rows, key=lambda r: r["epoch"])["metric"]
    best = max(sorted(finals), key=lambda i: finals[i])  # coco/AP: higher is better; ties: lowest index
    assert make_table(argv) == 0
    assert [p.name for p in (work / "curves").glob("*-seed1.parquet")] == [f"s{best:03d}-seed1.parquet"]
    meta = read_metadata(out)["table"]
    assert meta["extra_seeds"]["settings"] == [best] and meta["complete"]
    table = load_table([out])
    assert sorted(len(c) for c in table.curves) == [1, 1, 2]


@pytest.mark.parametrize(("mode", "expected"), [("max", [2, 0]), ("min", [1, 0])])
def test_extra_seeds_choose_the_best_settings_by_mean_final_metric(tmp_path, mode, expected):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rspose_tune.replay._make_table import _best_settings, trial_id_of

    # setting -> (seed-0 curve, seed-1 curve) of (epoch, metric); only the last epoch counts
    curves = {0: ([(1, 0.9), (2, 0.5)], [(1, 0.1), (2, 0.5)]),  # mean final 0.5
              1: ([(1, 0.0), (2, 0.2)], [(1, 0.0), (2, 0.4)]),  # 0.3
              2: ([(1, 0.0), (2, 0.6)], [(1, 0.0), (2, 0.8)]),  # 0.7
              3: ([(1, 0.0), (2, float("nan"))], [(1, 0.0), (2, 0.9)])}  # diverged: ranks last
    (tmp_path / "curves").mkdir()
    jobs = []
    for index, per_seed in curves.items():
        for seed, curve in enumerate(per_seed):
            jobs.append((index, seed))
            pq.write_table(pa.Table.from_pylist([{"epoch": e, "metric": m} for e, m in curve]),
                           tmp_path / "curves" / f"{trial_id_of(index, seed)}.parquet")
    assert _best_settings(tmp_path, jobs, mode, 2) == expected


# ------------------------------------------------------------------------------------- confirm stage
def _seeded_table(finals_by_setting, mode="max"):
    """One constant-shape curve per (setting, seed) with the given final metric; ids ``sNN-seedK``."""
    settings = _grid_settings()[: len(finals_by_setting)]
    rows = []
    for i, (setting, finals) in enumerate(zip(settings, finals_by_setting)):
        for seed, final in finals.items():
            rows += _curve_rows(f"s{i:02d}-seed{seed}", setting, final)
    return table_from_frame(pd.DataFrame(rows), source="seeded", max_epochs=MAX_EPOCHS, mode=mode, space=SPACE_ON)


def _trace_of(table, settings_and_seed, search_seed):
    """A finished search trace: full-budget trials of these settings, replayed on ``search_seed``."""
    from rspose_tune.replay._simulator import Trace, TrialRecord

    trace = Trace(policy=POLICIES["full-random"], seed=0, search_seed=search_seed)
    for n, index in enumerate(settings_and_seed):
        curve = table.curve_of_seed(index, search_seed)
        trace.trials.append(TrialRecord(f"t{n}", dict(table.settings[index]), index, curve.trial_id, 0.0, True, True,
                                        start_s=0.0, end_s=1.0, last_epoch=MAX_EPOCHS))  # fmt: skip
    return trace


def test_seeds_are_read_from_the_rows_or_the_trial_id():
    rows = _curve_rows("s00-seed3", _setting(0.5, 1.0, 1.0, 1.0, 1.0), 0.6)
    rows += [{**r, "seed": 7} for r in _curve_rows("t-other", _setting(0.6, 1.0, 1.0, 1.0, 1.0), 0.6)]
    table = table_from_frame(pd.DataFrame(rows), source="s", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)
    assert sorted(c[0].seed for c in table.curves) == [3, 7]
    assert table.common_seeds == []  # no seed every setting has


def test_confirm_seeds_follow_the_search_seed_and_wrap_around():
    from rspose_tune.replay._confirm import confirm_seeds

    table = _seeded_table([{0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}])
    assert confirm_seeds(table, 0, 2) == (1, 2)
    assert confirm_seeds(table, 2, 3) == (3, 0, 1)
    assert confirm_seeds(table, 3, 9) == (0, 1, 2)


def test_confirm_picks_the_best_mean_on_further_seeds_not_the_lucky_search_trial():
    from scipy import stats

    from rspose_tune.replay._confirm import confirm

    # setting 0 is lucky on seed 0 (the search seed) but worse on average; setting 1 is the table's best
    table = _seeded_table([{0: 0.90, 1: 0.50, 2: 0.52, 3: 0.48},
                           {0: 0.70, 1: 0.61, 2: 0.66, 3: 0.60},
                           {0: 0.60, 1: 0.55, 2: 0.50, 3: 0.55}])  # fmt: skip
    assert table.best_index == 1
    trace = _trace_of(table, [2, 0, 1], search_seed=0)
    out = confirm(table, trace, top=2, seeds=3)
    assert out.candidates == (0, 1)  # the 2 best search trials by observed metric (0.90, 0.70)
    assert out.seeds == (1, 2, 3) and out.winner == 1 and out.correct and out.regret == 0
    assert out.epochs == 2 * 3 * MAX_EPOCHS and out.short == 0
    diff = np.array([0.61 - 0.50, 0.66 - 0.52, 0.60 - 0.48])  # independent: scipy's paired t-test interval
    low, high = stats.ttest_rel(diff + 0.0, np.zeros(3)).confidence_interval(0.95)
    assert out.distinguishable == bool(low > 0 or high < 0)
    # top 1: only the lucky setting is confirmed, so the confirm stage cannot repair the choice
    alone = confirm(table, trace, top=1, seeds=3)
    assert alone.winner == 0 and not alone.correct
    assert alone.regret == pytest.approx(table.best_value - table.value(0))
    assert alone.distinguishable is None


def test_confirm_counts_candidates_the_table_cannot_confirm_on_every_seed():
    from rspose_tune.replay._confirm import confirm

    table = _seeded_table([{0: 0.6, 1: 0.6}, {0: 0.7, 1: 0.7, 2: 0.7, 3: 0.7}])
    out = confirm(table, _trace_of(table, [0, 1], search_seed=0), top=2, seeds=2)
    assert out.seeds == (1, 2) and out.by_seed == {1: {1: 0.7, 2: 0.7}, 0: {1: 0.6}} and out.short == 1
    assert out.epochs == 3 * MAX_EPOCHS and out.winner == 1 and out.correct


def test_racing_drops_a_candidate_once_paired_seeds_show_it_worse_and_saves_its_epochs():
    from scipy import stats

    from rspose_tune.replay._confirm import confirm

    # 3 candidates on confirm seeds 1..4: setting 1 leads; setting 0 is worse by a steady margin
    # (paired differences 0.10, 0.11, ...: distinguishable after 3 seeds), setting 2 by noise only.
    table = _seeded_table([{0: 0.90, 1: 0.50, 2: 0.51, 3: 0.49, 4: 0.50},
                           {0: 0.80, 1: 0.60, 2: 0.62, 3: 0.60, 4: 0.61},
                           {0: 0.70, 1: 0.63, 2: 0.55, 3: 0.60, 4: 0.50}])  # fmt: skip
    trace = _trace_of(table, [0, 1, 2], search_seed=0)
    full = confirm(table, trace, top=3, seeds=4)
    raced = confirm(table, trace, top=3, seeds=4, race_after=3)
    # independent check of the racing decision after seed 3 (scipy's paired t-test, 95 %)
    d0 = np.array([0.60 - 0.50, 0.62 - 0.51, 0.60 - 0.49])
    d2 = np.array([0.60 - 0.63, 0.62 - 0.55, 0.60 - 0.60])
    assert stats.ttest_rel(d0, np.zeros(3)).confidence_interval(0.95).low > 0
    low2, high2 = stats.ttest_rel(d2, np.zeros(3)).confidence_interval(0.95)
    assert low2 < 0 < high2
    assert raced.dropped == 1 and sorted(raced.by_seed[0]) == [1, 2, 3] and sorted(raced.by_seed[2]) == [1, 2, 3, 4]
    assert raced.epochs == full.epochs - MAX_EPOCHS and full.dropped == 0
    assert raced.winner == full.winner == 1
    # from seed 2 on: the steady margin (0.10, 0.11) already separates them with 1 degree of freedom
    assert stats.ttest_rel(d0[:2], np.zeros(2)).confidence_interval(0.95).low > 0
    early = confirm(table, trace, top=3, seeds=4, race_after=2)
    assert early.dropped == 1 and sorted(early.by_seed[0]) == [1, 2] and early.epochs == full.epochs - 2 * MAX_EPOCHS
    with pytest.raises(ValueError, match="race_after"):
        confirm(table, trace, top=3, seeds=4, race_after=1)


def test_cli_confirm_race_flag(capsys):
    for argv, message in ((["--confirm-top", "2", "--confirm-seeds", "3", "--confirm-race", "3"],
                           "--confirm-race is 3, but must be < --confirm-seeds (3)"),
                          (["--confirm-race", "2"], "--confirm-race needs --confirm-top")):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("workers", [1, 3])
def test_start_up_proposals_under_concurrency_are_counted(known_table, workers):
    """Ray #52535: TPE proposes at random until n_startup_trials trials have *ended*, so W workers
    start n + W - 1 random trials (full budget: W at once, then one per ended trial)."""
    settings = ReplaySettings(budget_epochs=40 * MAX_EPOCHS, workers=workers, n_startup_trials=4)
    trace = replay(known_table, POLICIES["full-tpe"], 0, settings)
    assert sum(t.startup for t in trace.trials) == 4 + workers - 1
    assert [t.startup for t in trace.trials[: 4 + workers - 1]] == [True] * (4 + workers - 1)
    assert all(t.startup for t in replay(known_table, POLICIES["full-random"], 0, settings).trials)
    summary = summarize(known_table, [trace], settings.budget_epochs, 0.01)
    assert summary.startup == 4 + workers - 1


def test_a_replay_searches_on_one_training_seed(known_table):
    trace = replay(known_table, POLICIES["asha-random"], 3, ReplaySettings(budget_epochs=40, workers=2))
    assert trace.search_seed in (0, 1)
    assert {t.curve.rsplit("seed", 1)[1] for t in trace.trials} == {str(trace.search_seed)}


def test_cli_confirm_stage_and_json(tmp_path, capsys):
    rows = []
    for i, setting in enumerate(_grid_settings()[:4]):
        for seed in range(4):
            rows += _curve_rows(f"s{i:02d}-seed{seed}", setting, 0.4 + 0.1 * i + 0.01 * seed)
    path = tmp_path / "t.parquet"
    pd.DataFrame(rows).to_parquet(path)
    out_json = tmp_path / "out" / "replay.json"
    code = main([str(path), "--backbone", "demo", "--seeds", "3", "--policies", "full-random", "--budget-epochs", "40",
                 "--confirm-top", "2", "--confirm-seeds", "3", "--json", str(out_json)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "Confirm stage (--confirm-top 2 --confirm-seeds 3)" in text and "full-budget random" in text
    data = json.loads(out_json.read_text())
    (conf,) = data["confirm"]["policies"]
    assert conf["replays"] == 3 and 0 <= conf["correct"] <= 3
    assert data["table"]["best_value"] == pytest.approx(0.4 + 0.3 + 0.015)  # setting 3, mean over seeds 0..3
    assert data["policies"][0]["name"] == "full-budget random" and data["command"].startswith("python -m")


@pytest.mark.parametrize(("argv", "message"), [(["--confirm-seeds", "1"], "--confirm-seeds must be an integer >= 2, got 1"),
                                               (["--confirm-top", "-1"], "--confirm-top must be an integer >= 0, got -1")])
def test_cli_confirm_flags_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_gp_policy_proposes_with_optunas_gp_sampler(known_table):
    import optuna

    from rspose_tune.replay._simulator import make_searcher

    settings = ReplaySettings(budget_epochs=6 * MAX_EPOCHS, workers=1, n_startup_trials=3, grace_epochs=1)
    limiter = make_searcher(POLICIES["full-gp"], known_table, settings, seed=0)
    limiter.suggest("probe")
    assert isinstance(limiter.searcher._open_study().sampler, optuna.samplers.GPSampler)
    trace = replay(known_table, POLICIES["full-gp"], 0, settings)
    assert len(trace.trials) == 6 and len(trace.incumbents) >= 1  # 3 random start-up trials, then 3 from the GP
