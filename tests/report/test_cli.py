"""``python -m rspose_tune.report`` (rspose_tune.report._cli): the table as Markdown and CSV, the plots, the
run filter, and exit codes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rspose_tune import report as rep
from tests.report.conftest import KNOWN_GOOD, OTHER, trial, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cli_writes_table_markdown_csv_and_plots(storage, tmp_path, capsys):
    md, csv, plots = tmp_path / "out" / "table.md", tmp_path / "out" / "table.csv", tmp_path / "plots"
    code = rep.main([str(storage), "--markdown", str(md), "--csv", str(csv), "--plots", str(plots)])
    out = capsys.readouterr().out
    assert code == 0
    assert "| vit-b" in out and "b_best" in out and "within noise" in out
    assert "S. Sort δ / c" in md.read_text() and "b_best" in md.read_text()
    frame = pd.read_csv(csv).set_index("backbone")
    assert frame.loc["vit-b", "best_trial"] == "b_best" and math.isnan(frame.loc["vit-b", "coeff_sort"])
    assert frame.loc["vit-b", "pruned"] == 2 and frame.loc["demo", "gpu_hours"] == 0
    assert list(frame.columns[:8]) == ["runs", "best_run", "best_trial", *rep.PARAM_NAMES[:5]]
    for run in ("vitb-run", "demo-run"):
        for name in ("curves.png", "importance.png", "params.png"):
            path = plots / run / name
            data = path.read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 5000, path


def test_cli_default_plot_dir_run_filter_and_no_plots(storage, capsys):
    assert rep.main([str(storage), "--run", "demo-run"]) == 0
    out = capsys.readouterr().out
    assert "| demo" in out and "| vit-b" not in out
    assert (storage / "demo-run" / "report" / "curves.png").is_file()
    assert not (storage / "vitb-run" / "report").exists()
    assert rep.main([str(storage / "vitb-run"), "--no-plots"]) == 0  # a run dir works as storage
    assert not (storage / "vitb-run" / "report").exists()


@pytest.mark.parametrize("make", ["missing", "empty", "no_rows"])
def test_bad_storage_exits_2_naming_the_path(tmp_path, capsys, make):
    path = tmp_path / "nothing-here"
    if make != "missing":
        path.mkdir()
    if make == "no_rows":
        (path / "run" / "trials").mkdir(parents=True)
    assert rep.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and err.startswith("error:")


def test_unknown_run_exits_2_listing_runs(storage, capsys):
    assert rep.main([str(storage), "--run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "demo-run" in err and "vitb-run" in err


def test_backbone_without_completed_trial(tmp_path, capsys):
    write_run(tmp_path, "r", [trial("p", KNOWN_GOOD, [0.5], "pruned"), trial("q", OTHER, [0.4, 0.5], "running")])
    write_run(tmp_path, "r2", [trial("e", OTHER, [], "error", error="ValueError: boom")], backbone="demo")
    assert rep.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(no completed trial)" in out and "1 unfinished" in out and "no trial reached the full budget" in out
    for name in ("curves.png", "importance.png", "params.png"):  # r2: plots survive a run without metrics
        assert (tmp_path / "r2" / "report" / name).read_bytes().startswith(PNG_MAGIC)


def test_unreadable_results_exit_2_naming_the_run(tmp_path, capsys):
    folder = tmp_path / "r" / "trials"
    folder.mkdir(parents=True)
    (folder / "t-e000001.parquet").write_bytes(b"not parquet")
    assert rep.main([str(tmp_path)]) == 2
    assert "cannot read the results of run" in capsys.readouterr().err


@pytest.mark.parametrize("cli", ["report", "export"])
def test_a_file_as_storage_is_one_error_line(tmp_path, capsys, cli):
    """Issue 25: a file ended in NotADirectoryError (exit 1) in both CLIs."""
    from rspose_tune import export

    main = {"report": rep.main, "export": export.main}[cli]
    path = tmp_path / "results.parquet"
    path.write_text("")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: storage path {str(path)!r} is a file, not a folder: pass a storage root (holding "
                   "<run>/trials/) or one run folder\n")


@pytest.mark.parametrize("cli", ["report", "export"])
def test_the_default_storage_is_named_with_the_reason_it_was_used(tmp_path, capsys, monkeypatch, cli):
    """Issue 25: `report --run x STORAGE` named ./results without saying why (--run took STORAGE)."""
    from rspose_tune import export

    main = {"report": rep.main, "export": export.main}[cli]
    monkeypatch.chdir(tmp_path)
    assert main(["--run", "x", "/data/runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1
    assert (f"storage path {str(tmp_path / 'results')!r} (the default ./results under the working directory, as no "
            "STORAGE argument was given; --run reads every name after it as a run name, here 'x', '/data/runs': put "
            "STORAGE before --run) does not exist") in err
    assert main(["--run", "x", "y"]) == 2  # run names only: no STORAGE after --run to point at
    assert capsys.readouterr().err == (f"error: storage path {str(tmp_path / 'results')!r} (the default ./results "
                                       "under the working directory, as no STORAGE argument was given) does not exist\n")
    assert main([str(tmp_path / "elsewhere")]) == 2  # a STORAGE given: no reason to add
    assert capsys.readouterr().err == f"error: storage path {str(tmp_path / 'elsewhere')!r} does not exist\n"
