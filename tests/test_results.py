"""Tests of rspose_tune.results: schema, metadata, atomic writes, reading rows back."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rspose_tune import results as R
from rspose_tune.results import (
    METADATA_KEY,
    PARAM_COLUMNS,
    SCHEMA,
    final_status,
    make_row,
    read_metadata,
    read_results,
    row_file_name,
    write_row,
)
from rspose_tune.spaces import PARAM_NAMES
from tests.conftest import KG
from tests.test_results_callback import CONFIG, CONFIG_OFF, MAX_T, result  # its Ray workers need them there


def row(trial_id="t1", epoch=1, status="running", config=CONFIG, **extra):
    return make_row(result(epoch, **extra), config, run="run", backbone="demo", trial_id=trial_id, status=status)


# --------------------------------------------------------------------------------------------
# Schema and rows
# --------------------------------------------------------------------------------------------


def test_schema_columns_and_types():
    assert SCHEMA.names[:5] == ["run", "backbone", "trial_id", "epoch", "status"]
    assert SCHEMA.field("epoch").type == pa.int32()
    for name in (*PARAM_COLUMNS, "metric", "ar", "loss", "loss_rank", "loss_sort", "loss_inst", "spearman", "wall_s"):
        assert SCHEMA.field(name).type == pa.float64() and SCHEMA.field(name).nullable
    for name in ("metric_name", "node", "gpu_type", "error", "raw_metrics"):
        assert SCHEMA.field(name).type == pa.string()
    assert SCHEMA.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert set(R.STATUSES) == {"running", "pruned", "completed", "error"}


def test_make_row_off_components_nan_and_raw_metrics():
    out = row(config=CONFIG_OFF, epoch=3)
    assert out["epoch"] == 3 and out["status"] == "running"
    assert out["coeff_sort"] is None and out["delta_sort"] is None  # coeff 0 -> both null
    assert out["coeff_inst"] is None and out["delta_inst"] is None  # coeff None -> both null
    assert out["delta_rank"] == 0.4 and out["coeff_rank"] == 1.0
    assert out["loss_sort"] is None  # NaN -> null
    assert json.loads(out["raw_metrics"]) == {"coco/AP": 0.5, "coco/AR": 0.6}
    assert out["timestamp"] == dt.datetime.fromtimestamp(1_700_000_000, tz=dt.timezone.utc)
    assert out["metric_name"] == "coco/AP" and out["node"] == "node-1" and out["gpu_type"] == "cpu"


@pytest.mark.parametrize(
    ("res", "kwargs", "match"),
    [
        ({"metric": 0.5}, {}, "has no 'epoch'"),
        ({"epoch": -1}, {}, "must be an int >= 0"),
        ({"epoch": 1.5}, {}, "must be an int >= 0"),
        ({"epoch": True}, {}, "must be an int >= 0"),
        ({"epoch": 1}, {"status": "done"}, "must be one of"),
        ({"epoch": 1, "metric": "high"}, {}, "'metric' is 'high'"),
        ({"epoch": 1, "loss": object()}, {}, "'loss' is"),
    ],
)
def test_make_row_errors(res, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_row(res, CONFIG, run="r", backbone="demo", trial_id="t", **kwargs)


@pytest.mark.parametrize(
    ("last", "error", "expected"),
    [(0, False, "pruned"), (1, False, "pruned"), (4, False, "completed"), (5, False, "completed"),
     (4, True, "error"), (0, True, "error")],
)
def test_final_status(last, error, expected):
    assert final_status(last, MAX_T, error) == expected


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_final_status_rejects_bad_budget(bad):
    with pytest.raises(ValueError, match="max_epochs"):
        final_status(1, bad, False)


def test_row_file_name_is_keyed_and_safe():
    assert row_file_name("abc_00001", 7) == "abc_00001-e000007.parquet"
    assert row_file_name("../x/y", 1) == "x_y-e000001.parquet"


# --------------------------------------------------------------------------------------------
# Writing, reading, metadata
# --------------------------------------------------------------------------------------------


def test_write_read_roundtrip_with_metadata(tmp_path):
    meta = R.build_metadata(run="run", backbone="demo", max_epochs=MAX_T, search_space={"delta_rank": {"low": 0.1}})
    rows = [row("t1", 1), row("t1", 2), row("t2", 1, config=CONFIG_OFF)]
    for r in rows:
        write_row(r, tmp_path, metadata=meta)
    frame = read_results(tmp_path)
    assert list(frame.columns) == SCHEMA.names
    assert list(zip(frame.trial_id, frame.epoch)) == [("t1", 1), ("t1", 2), ("t2", 1)]
    assert frame.loc[2, "coeff_sort"] != frame.loc[2, "coeff_sort"]  # null -> NaN in pandas
    assert frame["epoch"].dtype == "int32"
    by_pandas = pd.read_parquet(tmp_path)
    assert len(by_pandas) == 3 and set(by_pandas.columns) == set(SCHEMA.names)

    got = read_metadata(tmp_path)
    assert got["schema_version"] == R.SCHEMA_VERSION and got["backbone"] == "demo"
    assert got["search_space"] == {"delta_rank": {"low": 0.1}}
    assert {"torch", "mmpose", "mmengine", "ray", "optuna", "pyarrow", "python"} <= set(got["versions"])
    assert got["versions"]["pyarrow"] == pa.__version__
    assert isinstance(got["git_revision"], str) and got["git_revision"]
    single = tmp_path / row_file_name("t1", 1)
    assert read_metadata(single) == got
    assert json.loads(pq.read_schema(single).metadata[METADATA_KEY]) == got


def test_pos_thr_column_is_written_and_schema_v2_files_read_as_its_default(tmp_path):
    assert R.SCHEMA_VERSION == 3 and SCHEMA.field("pos_thr").type == pa.float64()
    new = tmp_path / "v3"
    write_row(row("t1", 1, config={**CONFIG, "pos_thr": 0.05}), new, metadata={"schema_version": 3})
    write_row(row("t0", 1, config=CONFIG), new, metadata={"schema_version": 3})  # no pos_thr: its default
    assert read_results(new)["pos_thr"].tolist() == [0.0, 0.05]

    # A file as schema version 2 wrote it: no pos_thr column at all.
    v2 = pa.schema([f for f in SCHEMA if f.name != "pos_thr"])
    old = tmp_path / "v2"
    old.mkdir()
    for trial_id, config in (("search", CONFIG), ("base", {"stage": "baseline", "seed": 0})):
        r = {k: v for k, v in row(trial_id, 1, config=config).items() if k != "pos_thr"}
        pq.write_table(pa.Table.from_pylist([r], schema=v2.with_metadata({METADATA_KEY: b'{"schema_version": 2}'})),
                       old / row_file_name(trial_id, 1))
    assert "pos_thr" not in pq.read_schema(old / row_file_name("search", 1)).names
    frame = read_results(old).set_index("trial_id")
    assert frame.loc["search", "pos_thr"] == 0.0  # trained with the default, label > 0
    assert math.isnan(frame.loc["base", "pos_thr"])  # the stock loss has no loss settings
    assert list(read_results(old).columns) == SCHEMA.names


def test_search_space_dataclasses_and_paths_become_json(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Spec:
        name: str
        low: float | None = None
        fixed: float | None = None

    meta = R.build_metadata(run="r", backbone="b", max_epochs=2,
                            search_space={"coeff_rank": Spec("coeff_rank", fixed=1.0), "root": Path("/x")})
    assert meta["search_space"] == {"coeff_rank": {"name": "coeff_rank", "low": None, "fixed": 1.0}, "root": "/x"}
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        R.build_metadata(run="r", backbone="b", max_epochs=2, search_space={"x": object()})


def test_git_revision_outside_git_is_unknown(tmp_path, monkeypatch):
    R.git_revision.cache_clear()
    assert R.git_revision(str(tmp_path)) == "unknown"

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(R.subprocess, "run", no_git)
    R.git_revision.cache_clear()
    assert R.git_revision() == "unknown"
    R.git_revision.cache_clear()


def test_git_revision_inside_git(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(["git", "add", "f"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=tmp_path, check=True, env=env)
    R.git_revision.cache_clear()
    clean = R.git_revision(str(tmp_path))
    assert len(clean) == 40
    (tmp_path / "f").write_text("2")
    R.git_revision.cache_clear()
    assert R.git_revision(str(tmp_path)) == clean + "-dirty"
    R.git_revision.cache_clear()


def test_rewriting_a_key_replaces_the_row(tmp_path):
    write_row(row("t1", 2, metric=0.1), tmp_path)
    write_row(row("t1", 2, status="pruned", metric=0.2), tmp_path)
    frame = read_results(tmp_path)
    assert len(frame) == 1 and frame.loc[0, "status"] == "pruned" and frame.loc[0, "metric"] == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == [row_file_name("t1", 2)]


def test_crash_after_temp_file_leaves_only_valid_files(tmp_path, monkeypatch):
    write_row(row("t1", 1, metric=0.1), tmp_path)

    def crash(src, dst):
        assert Path(src).name.startswith(".") and Path(src).exists()  # temp file fully written
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(R.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_row(row("t1", 1, status="completed", metric=0.9), tmp_path)
    with pytest.raises(OSError, match="simulated crash"):
        write_row(row("t1", 2), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [row_file_name("t1", 1)]  # no .tmp left
    frame = read_results(tmp_path)
    assert len(frame) == 1 and frame.loc[0, "metric"] == 0.1 and frame.loc[0, "status"] == "running"


def test_leftover_temp_files_from_a_killed_process_are_ignored(tmp_path):
    write_row(row("t1", 1), tmp_path)
    (tmp_path / f".{row_file_name('t1', 2)}.deadbeef.tmp").write_bytes(b"PAR1 truncated")
    assert len(read_results(tmp_path)) == 1
    assert len(pd.read_parquet(tmp_path)) == 1
    assert read_metadata(tmp_path) == {}  # written without metadata


def test_read_results_empty_missing_and_foreign(tmp_path):
    empty = read_results(tmp_path)
    assert empty.empty and list(empty.columns) == SCHEMA.names
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_results(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="No Parquet files"):
        read_metadata(tmp_path)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(ValueError, match="has no 'rspose_tune' metadata"):
        read_metadata(foreign)


def test_read_results_accepts_run_dir_uri_and_expands_raw(tmp_path):
    trials = tmp_path / "run" / "trials"
    write_row(row("t1", 1, **{"coco/AP": 0.3}), f"file://{trials}")  # generic pyarrow.fs path
    write_row(row("t2", 1, **{"crowdpose/AP": 0.4}), trials)
    frame = read_results(tmp_path / "run", expand_raw=True)
    assert len(frame) == 2
    assert frame["raw/coco/AP"].tolist()[0] == 0.3 and math.isnan(frame["raw/crowdpose/AP"].tolist()[0])
    assert frame["raw/crowdpose/AP"].tolist()[1] == 0.4


def test_results_rows_carry_stage_and_seed():
    from rspose_tune.results import make_row

    search = make_row({"epoch": 1, "metric": 0.5}, KG, run="r", backbone="demo", trial_id="t", seed=7)
    assert (search["stage"], search["seed"]) == ("search", 7)
    base = make_row({"epoch": 1}, {**KG, "stage": "baseline", "seed": 2}, run="r", backbone="demo", trial_id="b")
    assert (base["stage"], base["seed"]) == ("baseline", 2) and all(base[n] is None for n in PARAM_NAMES)
    with pytest.raises(ValueError, match="stage"):
        make_row({"epoch": 1}, {**KG, "stage": "final"}, run="r", backbone="demo", trial_id="x")


def test_importing_results_does_not_import_ray():
    """Issue 17: the report, export and replay read Parquet without Ray (0.65-1.45 s) on the path."""
    import subprocess
    import sys

    code = ("import sys, rspose_tune.results, rspose_tune.report, rspose_tune.export; "
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))[:5]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_has_row_finds_a_trial_epoch_row_where_the_callback_writes_it(tmp_path):
    """The trainable's check (resume only from a checkpoint whose result the driver recorded) and
    the callback's target are one rule: ``<experiment>/trials``, or ``<run>/trials`` when nested."""
    import pyarrow.fs as pafs

    from rspose_tune.results import has_row, row_file_name, rows_root

    run = tmp_path / "run"
    (run / "trials").mkdir(parents=True)
    (run / "trials" / row_file_name("t/1", 3)).write_bytes(b"")
    fs = pafs.LocalFileSystem()
    assert rows_root(str(run), nested=False) == str(run / "trials")
    assert rows_root(str(run / "confirm") + "/", nested=True) == str(run / "trials")
    assert has_row(fs, str(run), "t/1", 3) and not has_row(fs, str(run), "t/1", 2)
    assert has_row(fs, str(run / "confirm"), "t/1", 3, nested=True)
    assert not has_row(fs, str(run / "confirm"), "t/1", 3)
