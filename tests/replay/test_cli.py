"""``python -m rspose_tune.replay`` (rspose_tune.replay._cli): replaying runs and tables, the confirm flags,
the shipped demo table by default, and bad input as one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rspose_tune.replay import DEMO_TABLE, POLICIES
from rspose_tune.replay._cli import main
from rspose_tune.replay._simulator import DEFAULT_POLICIES
from tests.replay.conftest import _curve_rows, _frame, _grid_settings, _one_error_line, _write_run


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
        (["--reduction-factor", "inf"], "--reduction-factor must be a finite number > 1, got inf"),
        (["--n-startup-trials", "-1"], "--n-startup-trials must be an integer >= 0, got -1"),
        (["--budget-epochs", "x"], "--budget-epochs must be an integer >= 0, got 'x'"),
        (["--policies", "bohb"], "argument --policies: invalid choice: 'bohb'"),
        (["/nonexistent/table.parquet"], "error: /nonexistent/table.parquet: no such file or folder"),
        (["--grace-epochs", "11"], "error: --grace-epochs is 11, but must be an integer in [1, 10] (the table's max_epochs)"),
        (["--backbone", "nope"], "error: "),
        (["--tpe-option", "gamma=3"], "--tpe-option must be KEY=VALUE with KEY one of ['constant_liar'"),
        (["--tpe-option", "prior_weight"], "--tpe-option must be KEY=VALUE"),
        (["--tpe-option", "prior_weight=0"], "--tpe-option prior_weight must be a finite number > 0, got '0'"),
        (["--tpe-option", "n_ei_candidates=2.5"], "--tpe-option n_ei_candidates must be an integer >= 1"),
        (["--tpe-option", "multivariate=1"], "--tpe-option multivariate must be true or false, got '1'"),
    ],
)
def test_cli_bad_input_is_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


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


def test_shipped_demo_table_replays_with_todays_demo_preset_that_searches_pos_thr(capsys):
    assert main(["--backbone", "demo", "--seeds", "1", "--budget-epochs", "40", "--policies", "asha-tpe"]) == 0
    assert "ASHA+TPE" in capsys.readouterr().out


def test_cli_default_is_the_demo_table(capsys):
    assert main(["--seeds", "2", "--budget-epochs", "60", "--policies", "asha-tpe", "full-random"]) == 0
    out = capsys.readouterr().out
    assert str(DEMO_TABLE) in out and "ASHA+TPE" in out and "full-budget random" in out


def test_replay_runs_the_searchs_tpe_start_up_count(capsys, tmp_path):
    """Issue 17: the search runs startup_trials(n) = max(2, n // 3) random trials (issue 26: no cap of 10); the
    replay ran 10 whatever the search size."""
    from rspose_tune import search
    from rspose_tune.searcher import startup_trials

    args = search.build_parser().parse_args(["--num-trials", "8", "--storage", str(tmp_path)])
    assert main(["--seeds", "1", "--budget-epochs", "20", "--policies", "asha-tpe", "--num-trials", "8"]) == 0
    assert f"TPE start-up {startup_trials(8)} trials" in capsys.readouterr().out
    assert startup_trials(8) == 2 and startup_trials(32) == 10 and startup_trials(64) == 21
    assert startup_trials(8, "random") == 8
    assert search.DEFAULT_TRIALS["demo"] == 8 and args.num_trials == 8  # the demo search's own size


def test_cli_confirm_race_flag(capsys):
    for argv, message in ((["--confirm-top", "2", "--confirm-seeds", "3", "--confirm-race", "3"],
                           "--confirm-race is 3, but must be < --confirm-seeds (3)"),
                          (["--confirm-race", "2"], "--confirm-race needs --confirm-top")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_cli_confirm_stage_and_json(tmp_path, capsys):
    rows = []
    for i, setting in enumerate(_grid_settings()[:4]):
        for seed in range(4):
            rows += _curve_rows(f"s{i:02d}-seed{seed}", setting, 0.4 + 0.1 * i + 0.01 * seed)
    path = tmp_path / "t.parquet"
    pd.DataFrame(rows).to_parquet(path)
    out_json = tmp_path / "out" / "replay.json"
    code = main([str(path), "--backbone", "demo", "--seeds", "3", "--policies", "full-random", "--budget-epochs", "40",
                 "--confirm-top", "2", "--confirm-seeds", "3", "--json", str(out_json)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Confirm stage (--confirm-top 2 --confirm-seeds 3)" in text and "full-budget random" in text
    data = json.loads(out_json.read_text())
    (conf,) = data["confirm"]["policies"]
    assert conf["replays"] == 3 and 0 <= conf["correct"] <= 3
    assert data["table"]["best_value"] == pytest.approx(0.4 + 0.3 + 0.015)  # setting 3, mean over seeds 0..3
    assert data["policies"][0]["name"] == "full-budget random" and data["command"].startswith("python -m")
    assert len(conf["correct_seeds"]) == conf["correct"] and data["confirm"]["paired"] == []  # one policy: no pair


def test_cli_compares_two_policies_seed_by_seed(tmp_path, capsys):
    out_json = tmp_path / "r.json"
    assert main(["--seeds", "4", "--budget-epochs", "60", "--policies", "asha-tpe", "asha-random",
                 "--confirm-top", "2", "--confirm-seeds", "2", "--json", str(out_json)]) == 0
    assert "ASHA+TPE vs ASHA+random: both " in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    (pair,) = data["confirm"]["paired"]
    tpe, rnd = (set(p["correct_seeds"]) for p in data["confirm"]["policies"])
    assert (pair["both"], pair["first_only"], pair["second_only"]) == (len(tpe & rnd), len(tpe - rnd), len(rnd - tpe))
    assert pair["both"] + pair["first_only"] + pair["second_only"] + pair["neither"] == 4


@pytest.mark.parametrize(("argv", "message"), [(["--confirm-seeds", "1"], "--confirm-seeds must be an integer >= 2, got 1"),
                                               (["--confirm-top", "-1"], "--confirm-top must be an integer >= 0, got -1")])
def test_cli_confirm_flags_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_search_space_and_confirm_from_rung(tmp_path, capsys):
    """Issue 26: ``--search-space`` proposes from another preset's space (here a linear ``pos_thr``),
    matched in the table's; ``--confirm-from rung`` ranks the confirm candidates at epoch 6, the
    demo's highest ASHA rung below 10."""
    from rspose_tune.spaces import load_preset

    source = Path(load_preset("demo").source)
    text = source.read_text()
    assert "pos_thr: {low: 1.0e-6, high: 0.7, log: true}" in text or "pos_thr: {low: 0.0, high: 0.7, log: false}" in text
    linear = tmp_path / "demo-linear.yaml"
    linear.write_text(text.replace("pos_thr: {low: 1.0e-6, high: 0.7, log: true}", "pos_thr: {low: 0.0, high: 0.7, log: false}"))
    (tmp_path / "configs").symlink_to(source.parent / "configs")
    out_json = tmp_path / "r.json"
    argv = ["--seeds", "2", "--policies", "asha-random", "--confirm-top", "2", "--confirm-seeds", "2",
            "--search-space", str(linear), "--confirm-from", "rung", "--json", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"search space of {linear} (matched in the table's)" in out
    assert "--confirm-from rung" in out and "settings at epoch 6 (the highest ASHA rung" in out
    data = json.loads(out_json.read_text())
    assert data["confirm"]["from"] == "rung" and data["confirm"]["rank_epochs"] == 6
    assert data["settings"]["search_space"]["pos_thr"]["log"] is False
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--confirm-from", "half"])
    assert exc.value.code == 2
    assert "error: argument --confirm-from: invalid choice: 'half' (choose from 'full', 'rung')" in capsys.readouterr().err


def test_cli_search_space_from_a_table_and_bad_values(tmp_path, capsys):
    """``--search-space TABLE.parquet`` proposes from that table's recorded space (here the shipped
    table's log pos_thr on itself: the same as no flag); a missing file or preset is one error line."""
    base = ["--seeds", "1", "--budget-epochs", "60", "--policies", "asha-tpe", "--json"]
    assert main([*base, str(tmp_path / "a.json")]) == 0
    assert main([*base, str(tmp_path / "b.json"), "--search-space", str(DEMO_TABLE)]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["settings"]["search_space"] is None and b["settings"]["search_space"]["pos_thr"]["log"] is True
    assert [p["rows"] for p in a["policies"]] == [p["rows"] for p in b["policies"]]
    capsys.readouterr()
    for value in (str(tmp_path / "none.parquet"), "no-such-preset"):
        with pytest.raises(SystemExit) as exc:
            raise SystemExit(main(["--seeds", "1", "--search-space", value]))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and ("--search-space" in err[0] or "no-such-preset" in err[0]), err


def test_cli_an_empty_folder_is_no_table_here(tmp_path, capsys):
    """Issue 25: ``replay EMPTY_DIR`` said "missing column(s)"."""
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    _one_error_line(capsys.readouterr().err, f"{tmp_path / 'empty'}: no table here")


def test_cli_tpe_options_reach_the_searchs_sampler(capsys, monkeypatch, tmp_path):
    """``--tpe-option`` sets TPESampler options over the live search's own (the header and JSON say which)."""
    import optuna

    from rspose_tune.searcher import TPE_OPTIONS

    seen = []
    real = optuna.samplers.TPESampler.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.samplers.TPESampler, "__init__", spy)
    out_json = tmp_path / "r.json"
    assert main(["--seeds", "1", "--budget-epochs", "20", "--policies", "asha-tpe", "--tpe-option", "prior_weight=2.5",
                 "--tpe-option", "consider_endpoints=true", "--json", str(out_json)]) == 0
    assert "TPE options prior_weight=2.5, consider_endpoints=True" in capsys.readouterr().out
    assert seen and all(k["prior_weight"] == 2.5 and k["consider_endpoints"] is True for k in seen)
    assert all(k["constant_liar"] == TPE_OPTIONS["constant_liar"] for k in seen)  # the search's own, kept
    recorded = json.loads(out_json.read_text())["settings"]["tpe_options"]
    assert recorded == {"prior_weight": 2.5, "consider_endpoints": True}
