"""Issue 5: the search CLI's flag validation and failure modes (no Ray started for bad input)."""

from __future__ import annotations

import time

import pytest

from rspose_tune import search


def _run(argv, capsys):
    code = search.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-trials", "0"], "--num-trials must be an integer >= 1, got 0"),
        (["--max-concurrent", "two"], "--max-concurrent must be an integer >= 1, got 'two'"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial must be a finite number >= 0, got -1"),
        (["--verbose", "5"], "argument --verbose: invalid choice"),
    ],
)
def test_bad_flag_values_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        search.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "vith"], "`--backbone` must be one of"),
        (["--reduction-factor", "1"], "--reduction-factor must be >= 2, got 1"),
        (["--max-epochs", "3", "--grace-epochs", "5"], "--grace-epochs (5) must not exceed --max-epochs (3)"),
        (["--gpus-per-trial", "1.5"], "--gpus-per-trial above 1 must be a whole number, got 1.5"),
        (["--name", "a/b"], "--name must be a plain folder name, got 'a/b'"),
    ],
)
def test_bad_combinations_exit_2(argv, message, capsys, tmp_path):
    code, err = _run([*argv, "--storage", str(tmp_path)], capsys)
    assert code == 2 and message in err
    assert err.count("error:") == 1


def test_missing_dataset_fails_before_any_trial(capsys, tmp_path):
    code, err = _run(["--backbone", "vit-b", "--data-root", str(tmp_path / "nope"), "--weights", "none",
                      "--storage", str(tmp_path / "out")], capsys)
    assert code == 2 and str(tmp_path / "nope") in err
    assert not (tmp_path / "out" / "vit-b-search").exists()


def test_unwritable_storage(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = _run(["--storage", str(blocker / "sub")], capsys)
    assert code == 2 and "--storage" in err and "cannot create the folder" in err


def test_resume_without_a_run_and_rerun_without_resume(capsys, tmp_path):
    code, err = _run(["--resume", "--storage", str(tmp_path), "--name", "r1"], capsys)
    assert code == 2 and "--resume: no run to resume" in err
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "tuner.pkl").write_bytes(b"")
    code, err = _run(["--storage", str(tmp_path), "--name", "r1"], capsys)
    assert code == 2 and "already exists: pass --resume" in err


def test_unreachable_address_fails_fast(capsys, tmp_path):
    start = time.monotonic()
    code, err = _run(["--address", "127.0.0.1:1", "--storage", str(tmp_path), "--data-root", str(tmp_path / "d")], capsys)
    assert code == 2 and "--address '127.0.0.1:1': no Ray cluster reachable there" in err
    assert time.monotonic() - start < 60


def test_malformed_address(capsys, tmp_path):
    code, err = _run(["--address", "nohost", "--storage", str(tmp_path), "--data-root", str(tmp_path / "d")], capsys)
    assert code == 2 and "--address must be 'auto' or host:port" in err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        search.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--backbone", "--num-trials", "--max-concurrent", "--gpus-per-trial", "--cpus-per-trial",
                 "--address", "--storage", "--name", "--resume", "--seed", "--max-epochs", "--grace-epochs",
                 "--reduction-factor", "--data-root", "--weights", "--dashboard-host"):
        assert flag in out
