"""rspose_tune.search._parser: bad flag values exit 2 naming the flag; --help documents every flag."""

from __future__ import annotations

import pytest

from rspose_tune import search


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-trials", "0"], "--num-trials must be an integer >= 1, got 0"),
        (["--max-concurrent", "two"], "--max-concurrent must be an integer >= 1, got 'two'"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial must be a finite number >= 0, got -1"),
        (["--verbose", "5"], "argument --verbose: invalid choice"),
        # issue 25: 0 said ">= 1" and 1 said ">= 2"; both name the one rule
        (["--reduction-factor", "0"], "--reduction-factor must be an integer >= 2, got 0"),
        (["--reduction-factor", "1"], "--reduction-factor must be an integer >= 2, got 1"),
        # NumPy and Optuna refuse a seed < 0 or >= 2**32 (a start ended in their ValueError); a port is 1-65535
        (["--seed", "-1"], "--seed must be an integer from 0 to 2147483647, got -1"),
        (["--seed", "2147483648"], "--seed must be an integer from 0 to 2147483647, got 2147483648"),
        (["--dashboard-port", "70000"], "--dashboard-port must be an integer from 1 to 65535, got 70000"),
    ],
)
def test_bad_flag_values_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        search.main([*argv, "--dry-run"])  # --dry-run: a value the parser let through is no real search
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        search.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--backbone", "--num-trials", "--max-concurrent", "--gpus-per-trial", "--cpus-per-trial",
                 "--address", "--storage", "--name", "--resume", "--seed", "--max-epochs", "--grace-epochs",
                 "--reduction-factor", "--data-root", "--weights", "--dashboard-host"):
        assert flag in out


def test_the_parser_resume_rules_and_options_are_one_table():
    dests = [a.dest for a in search.build_parser()._actions if a.dest != "help"]
    assert dests == [d for d, _ in search.search_flags()]
    assert search.parse_options([]) == search.SearchOptions()  # the table's defaults are argparse's
    assert search.parse_options(["--warm-start", "a", "b"]).warm_start == ("a", "b")
    may = {f.name for _, f in search.search_flags() if f.resume == "may change"}
    assert set(search.RESUME_MAY_CHANGE) == may and len(search.RESUME_MAY_CHANGE) == len(may)
    assert sorted(f.listed for _, f in search.search_flags() if f.resume == "may change") == list(range(1, len(may) + 1))
