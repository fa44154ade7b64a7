"""``python -m rspose_tune.replay make-table`` (rspose_tune.replay._make_table): the space-filling design,
the shipped demo table, training and resuming curves, extra seeds, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rspose_tune.replay import DEMO_TABLE, HELDOUT_TABLE, design_settings, load_table
from rspose_tune.spaces import PARAM_NAMES
from tests.replay.conftest import _one_error_line

#: The held-out table's design: the demo preset with a linear pos_thr (docs/replay.md).
HELDOUT_PRESET = "docs/replay_results/heldout/demo.yaml"
REPO = Path(__file__).resolve().parents[2]


def test_design_is_space_filling_with_components_off():
    from tests.conftest import switchable_demo

    preset = switchable_demo()
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


def test_shipped_heldout_table_is_independent_of_the_demo_table():
    """Issue 26: the held-out table has another design (40 settings, linear pos_thr, design seed 1:
    docs/replay_results/heldout/demo.yaml) and other training seeds (4, 5; 6, 7 for its 10 best), the same recipe."""
    from rspose_tune.results import read_metadata
    from rspose_tune.spaces import load_preset

    table, demo = load_table([HELDOUT_TABLE]), load_table([DEMO_TABLE])
    assert len(table.settings) == 40 and table.max_epochs == 10 and table.n_curves == 100
    seeds = [sorted(c.seed for c in cs) for cs in table.curves]
    assert seeds.count([4, 5, 6, 7]) == 10 and seeds.count([4, 5]) == 30
    first_two = [np.mean([c.metric[-1] for c in cs if c.seed in (4, 5)]) for cs in table.curves]
    assert {i for i, s in enumerate(seeds) if len(s) == 4} == set(np.argsort(first_two)[::-1][:10])
    assert not {c.seed for cs in table.curves for c in cs} & {c.seed for cs in demo.curves for c in cs}
    known = dict(load_preset("demo").known_good[0])  # the same in both presets
    others = [s for s in table.settings[1:]]  # setting 0 is the known-good in both designs
    assert table.settings[0] == known and not [s for s in others if s in demo.settings]
    meta = read_metadata(HELDOUT_TABLE)
    assert meta["search_space"]["params"]["pos_thr"] == {"name": "pos_thr", "low": 0.0, "high": 0.7, "log": False,
                                                         "fixed": None, "allow_off": False}
    assert meta["table"]["command"].startswith(f"python -m rspose_tune.replay make-table --backbone {HELDOUT_PRESET}")
    assert "--design-seed 1" in meta["table"]["command"] and meta["table"]["complete"]
    # the design is today's demo space's: make-table would rebuild exactly these settings
    assert [dict(s) for s in table.settings] == [
        {k: v for k, v in s.items()} for s in design_settings(load_preset(str(REPO / HELDOUT_PRESET)), 40, seed=1)]
    assert HELDOUT_TABLE.stat().st_size < 512 * 1024


def test_local_design_fills_boxes_around_the_tables_best_settings():
    """Issue 26: ``make-table --around TABLE``: new settings near the table's best, each in its centre's box."""
    from rspose_tune.replay._make_table import local_settings
    from rspose_tune.replay._table import _unit_point
    from rspose_tune.spaces import LossSetting

    table = load_table([DEMO_TABLE])
    settings = local_settings(table, 8, top=3, radius=0.15, seed=0)
    assert len(settings) == 8 and settings == local_settings(table, 8, top=3, radius=0.15, seed=0)
    centres = table.best_indices(3)
    values = [table.value(i) for i in range(len(table.settings))]
    assert centres == sorted(range(len(values)), key=lambda i: -values[i])[:3]  # independent of the ranking code
    counts = {i: 0 for i in centres}
    for s in settings:
        point = np.array(_unit_point(LossSetting.from_dict(s), table.space))
        match = table.nearest(s)  # every new setting lies nearest its own centre (boxes 0.15 < half the spacing)
        assert match.index in centres and not match.exact
        centre = np.array(table.unit_point(match.index))
        assert np.array_equal(np.isnan(point), np.isnan(centre))  # the centre's on/off components
        live = ~np.isnan(point)
        assert np.all(np.abs(point[live] - centre[live]) <= 0.15 + 1e-3)  # 4-decimal rounding
        assert s not in table.settings
        counts[match.index] += 1
    assert sorted(counts.values()) == [2, 3, 3]  # 8 over 3 centres, the best ones the remainder
    assert counts[centres[0]] == 3
    with pytest.raises(ValueError, match="radius"):
        local_settings(table, 8, radius=0.6)
    with pytest.raises(ValueError, match="top"):
        local_settings(table, 2, top=3)


def test_shipped_dense_table_is_the_local_design_around_the_demo_tables_best():
    """Issue 26: 24 settings in boxes around the demo table's 3 best, on its seeds (0, 1; 2, 3 for the 8 best
    of the new settings), the same recipe: replayed together with the demo table."""
    from rspose_tune.replay import DENSE_TABLE, local_settings
    from rspose_tune.results import read_metadata

    dense, demo = load_table([DENSE_TABLE]), load_table([DEMO_TABLE])
    assert len(dense.settings) == 24 and dense.max_epochs == 10 and dense.n_curves == 64
    assert [dict(s) for s in dense.settings] == local_settings(demo, 24, top=3, radius=0.15, seed=0)
    seeds = [sorted(c.seed for c in cs) for cs in dense.curves]
    assert seeds.count([0, 1, 2, 3]) == 8 and seeds.count([0, 1]) == 16
    first_two = [np.mean([c.metric[-1] for c in cs if c.seed in (0, 1)]) for cs in dense.curves]
    assert {i for i, s in enumerate(seeds) if len(s) == 4} == set(np.argsort(first_two)[::-1][:8])
    meta = read_metadata(DENSE_TABLE)
    assert meta["search_space"]["params"] == read_metadata(DEMO_TABLE)["search_space"]["params"]
    assert meta["table"]["complete"] and meta["table"]["around"]["table"].endswith("demo_curves.parquet")
    assert meta["table"]["command"].startswith("python -m rspose_tune.replay make-table --around")
    both = load_table([DEMO_TABLE, DENSE_TABLE])
    assert len(both.settings) == 88 and both.n_curves == 224 and both.common_seeds == [0, 1]
    assert DENSE_TABLE.stat().st_size < 512 * 1024


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--settings", "0"], "error: --settings must be >= 1, got 0"),
     (["--radius", "0.2"], "error: --around-top and --radius need --around TABLE"),
     (["--around", str(DEMO_TABLE), "--radius", "0"], "error: --radius must be in (0, 0.5], got 0.0"),
     (["--around", str(DEMO_TABLE), "--around-top", "0"], "error: --around-top must be >= 1, got 0"),
     (["--around", str(HELDOUT_TABLE), "--n-train", "8"],
      f"error: --around {HELDOUT_TABLE}: its search space differs from --backbone demo's in ['coeff_inst', 'coeff_sort', 'pos_thr']"),
     (["--around", str(DEMO_TABLE), "--settings", "2"], "error: --around-top 3 must be <= --settings 2"),
     (["--epochs", "x"], "error: argument --epochs: invalid int value: 'x'"),
     (["--backbone", "no-such-preset"], "error: "),
     (["--backbone", "vit-b", "--n-train", "8"], "error: --n-train/--n-val only apply to a preset with generated demo data"),
     (["--extra-seeds", "1", "--seeds", "0", "1"], "error: --extra-seeds [1] must not repeat a --seeds seed [0, 1]"),
     (["--extra-top", "0"], "error: --extra-top must be >= 1, got 0"),
     # issue 24: a repeated --seeds replaced the earlier one; now they add up (a bad preset: nothing trains)
     (["--seeds", "0", "--seeds", "2", "--extra-seeds", "0", "--backbone", "no-such-preset"],
      "error: --extra-seeds [0] must not repeat a --seeds seed [0, 2]"),
     (["--seeds", "1", "--seeds", "1", "--backbone", "no-such-preset"], "error: --seeds [1, 1] names a seed twice"),
     (["--extra-seeds", "2", "3", "--extra-seeds", "3", "--backbone", "no-such-preset"],
      "error: --extra-seeds [2, 3, 3] names a seed twice")],
)
def test_make_table_bad_input_is_one_error_line(tmp_path, argv, message, capsys):
    from rspose_tune.replay._make_table import main as make_table

    with pytest.raises(SystemExit) as exc:
        raise SystemExit(make_table([*argv, "--out", str(tmp_path / "t.parquet"), "--work-dir", str(tmp_path / "w")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "t.parquet").exists() and not (tmp_path / "w" / "data").exists()


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
                       *argv])
    out_text, err = capsys.readouterr()
    assert code == 2, (out_text, err)
    _one_error_line(err, flag)
    assert not out.exists()


@pytest.mark.slow
def test_make_table_trains_and_resumes(tmp_path, capsys):
    from rspose_tune.replay._make_table import main as make_table
    from rspose_tune.results import read_metadata

    out, work = tmp_path / "t.parquet", tmp_path / "work"
    argv = ["--out", str(out), "--work-dir", str(work), "--settings", "2", "--seeds", "0", "--epochs", "2",
            "--n-train", "16", "--n-val", "8"]
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


@pytest.mark.slow
def test_make_table_extra_seeds_go_to_the_best_settings_by_mean(tmp_path, capsys):
    import pyarrow.parquet as pq

    from rspose_tune.replay._make_table import main as make_table
    from rspose_tune.results import read_metadata

    out, work = tmp_path / "t.parquet", tmp_path / "work"
    argv = ["--out", str(out), "--work-dir", str(work), "--settings", "3", "--seeds", "0", "--epochs", "1",
            "--n-train", "16", "--n-val", "8", "--extra-seeds", "1", "--extra-top", "1"]
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
