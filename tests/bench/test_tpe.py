"""``python -m rspose_tune.bench tpe`` (issue 11): bad flags are one error line, exit 2 (issue 25:
``--workers 0`` ended in a TypeError and ``--seeds 0`` exited 0 printing NaN); one in flight runs."""

from __future__ import annotations

import pytest

from rspose_tune.bench.__main__ import main


@pytest.mark.parametrize("flag", ["--seeds", "--trials", "--workers"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_count_below_one_is_one_error_line(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tpe", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "error:" in line] == [
        f"python -m rspose_tune.bench tpe: error: argument {flag}: {flag} must be an integer >= 1, got {value}"
    ]


def test_one_trial_in_flight_says_the_distance_is_not_defined(capsys):
    assert main(["tpe", "--seeds", "1", "--trials", "3", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    from rspose_tune.bench._tpe import VARIANTS

    assert out.count("proposal-to-running distance n/a (one trial in flight)") == len(VARIANTS) and "nan" not in out
    assert "random search" in out and "vs random search" in out  # every variant is also compared with random search
