"""rspose_tune.search._plan: what the search checks before Ray starts (flag combinations, the data, the
storage, the preset's rules), the run spec it writes, run names, and --resume (no Ray started)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rspose_tune import search
from tests.conftest import _stage_spec
from tests.search.conftest import _run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "vith"], "`--backbone` must be one of"),
        (["--max-epochs", "3", "--grace-epochs", "5"], "--grace-epochs (5) must not exceed --max-epochs (3)"),
        (["--gpus-per-trial", "1.5"], "--gpus-per-trial above 1 must be a whole number, got 1.5"),
        (["--name", "a/b"], "--name must be a plain folder name (not starting with '.' or '_'), got 'a/b'"),
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
    assert not (tmp_path / "out").exists()  # issue 25: not even the storage folder


def test_unwritable_storage(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = _run(["--storage", str(blocker / "sub")], capsys)
    assert code == 2 and "--storage" in err and "cannot create the folder" in err


def test_resume_without_a_run_and_rerun_without_resume(capsys, tmp_path):
    code, err = _run(["--resume", "--storage", str(tmp_path), "--name", "r1"], capsys)
    assert code == 2 and "--resume: no run to resume" in err and "the folder does not exist" in err
    (tmp_path / "r1").mkdir()
    code, err = _run(["--resume", "--storage", str(tmp_path), "--name", "r1"], capsys)
    assert code == 2 and "it has no run_spec.yaml" in err
    code, err = _run(["--storage", str(tmp_path), "--name", "r1"], capsys)
    assert code == 2 and "already exists: pass --resume" in err and err.count("error:") == 1


# --------------------------------------------------------------------------------------------
# Issue 10: the run spec, run names, default storage, exit codes (no Ray started)
# --------------------------------------------------------------------------------------------


def _start(argv, monkeypatch=None):
    """plan() + the spec write run_search does first: a run as a search leaves it before Ray's state."""
    from rspose_tune.runspec import write_spec

    args = search.parse_options(argv)
    p = search.plan(args, argv)
    write_spec(p.spec)
    return p


def test_spec_records_the_run_and_resume_needs_only_the_name(demo_preset, tmp_path, monkeypatch):
    from rspose_tune.runspec import SPEC_FILE, read_spec

    data = str(demo_preset.data.root)
    monkeypatch.chdir(tmp_path)
    first = _start(["--storage", "out", "--name", "r", "--data-root", data, "--seed", "3", "--max-epochs", "2",
                    "--grace-epochs", "1", "--num-trials", "2", "--sampler", "random", "--cpus-per-trial", "1"])
    text = (tmp_path / "out" / "r" / SPEC_FILE).read_text()
    for needle in (f"root: {data}", "seed: 3", "max_epochs: 2", "num_trials: 2", "type: random", "git_revision:",
                   "ray: 2.60.0", "rspose_tune.search", "--data-root"):
        assert needle in text, needle
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resume from another working directory, without the flags
    monkeypatch.setenv("RSPOSE_TUNE_DATA_ROOT", str(elsewhere))  # the environment does not count either
    args = search.parse_options(["--resume", "--storage", str(tmp_path / "out"), "--name", "r"])
    resumed = search.plan(args)
    assert resumed.spec == read_spec(str(tmp_path / "out" / "r")) == first.spec
    assert not resumed.new_run and str(resumed.preset.data.root) == data
    assert (resumed.max_epochs, resumed.grace, resumed.num_trials, resumed.spec.seed) == (2, 1, 2, 3)


def test_resume_refuses_every_conflicting_flag_in_one_error(demo_preset, tmp_path, capsys):
    data = str(demo_preset.data.root)
    _start(["--storage", str(tmp_path), "--name", "r", "--data-root", data, "--seed", "3", "--max-epochs", "2",
            "--grace-epochs", "1"])
    other = tmp_path / "other-data"
    code, err = _run(["--resume", "--storage", str(tmp_path), "--name", "r", "--seed", "4", "--max-epochs", "5",
                      "--data-root", str(other), "--backbone", "vit-b", "--weights", "/w.pth",
                      "--scheduler", "fifo", "--num-trials", "9", "--cpus-per-trial", "2"], capsys)
    assert code == 2 and err.count("error:") == 1 and len(err.strip().splitlines()) == 1
    for needle in ("--seed 4 differs from the run's 3", "--max-epochs 5 differs from the run's 2",
                   f"--data-root {str(other)!r} differs from the run's {data!r}",
                   "--backbone 'vit-b' differs from the run's 'demo'", "--weights '/w.pth' differs from the run's 'none'",
                   "--scheduler 'fifo' differs from the run's 'asha'", "--num-trials 9 differs from the run's 8",
                   "--cpus-per-trial 2.0 differs from the run's 1.0", "run_spec.yaml"):
        assert needle in err, needle
    # The same values again, and the flags that may change, are accepted (the plan checks that the
    # address answers: a listening socket stands in for a Ray head).
    with socket.create_server(("127.0.0.1", 0)) as head:
        address = f"127.0.0.1:{head.getsockname()[1]}"
        args = search.parse_options([
            "--resume", "--storage", str(tmp_path), "--name", "r", "--seed", "3", "--data-root", data,
            "--backbone", "demo", "--weights", "none", "--max-concurrent", "1", "--verbose", "0", "--address", address,
            "--no-dashboard",
        ])
        p = search.plan(args)
    assert p.address == address and p.spec.seed == 3


def test_default_run_names_are_unique_and_resume_picks_the_latest_unfinished(demo_preset, tmp_path, capsys):
    import dataclasses
    import re

    from rspose_tune.runspec import mark_finished, write_spec

    base = ["--storage", str(tmp_path), "--data-root", str(demo_preset.data.root)]
    a = _start(base)
    b = _start(base)
    assert a.name != b.name
    for p in (a, b):
        assert re.fullmatch(r"demo-\d{8}-\d{6}(-\d+)?", p.name), p.name
    newer = dataclasses.replace(b.spec, run="demo-29990101-000000", created_utc="2999-01-01T00:00:00+00:00")
    write_spec(newer)
    mark_finished(newer.run_dir, {"completed": 1})  # finished runs are never picked
    args = search.parse_options(["--resume", *base[:2]])
    p = search.plan(args)
    assert p.name == max(a.spec, b.spec, key=lambda s: (s.created_utc, s.run)).run
    assert f"--resume: continuing {p.name!r}" in capsys.readouterr().out
    args = search.parse_options(["--resume", *base[:2], "--backbone", "vit-b"])
    with pytest.raises(search.SearchError, match="no unfinished run of preset 'vit-b'"):
        search.plan(args)


def test_default_storage_is_results_under_the_working_directory(demo_preset, tmp_path, monkeypatch):
    import rspose_tune

    assert rspose_tune.DEFAULT_STORAGE == "results"
    monkeypatch.chdir(tmp_path)
    p = search.plan(search.parse_options(["--data-root", str(demo_preset.data.root)]))
    assert p.storage == str(tmp_path / "results") and p.run_dir.startswith(str(tmp_path / "results") + "/demo-")


def test_file_uri_storage_is_the_local_folder(demo_preset, tmp_path):
    p = _start(["--storage", f"file://{tmp_path}/uri", "--name", "r", "--data-root", str(demo_preset.data.root)])
    assert p.storage == str(tmp_path / "uri") and (tmp_path / "uri" / "r" / "run_spec.yaml").is_file()


def test_demo_data_error_is_one_error_line(tmp_path, capsys):
    data = tmp_path / "not-demo"
    data.mkdir()
    (data / "mine.txt").write_text("someone's data")
    code, err = _run(["--storage", str(tmp_path / "out"), "--data-root", str(data)], capsys)
    assert code == 2 and err.startswith("error: demo data root") and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# Issue 17: rules checked once, before Ray; a stop before the first row
# --------------------------------------------------------------------------------------------


def test_a_range_with_low_equal_high_fails_at_the_preset_check_before_ray(demo_preset, tmp_path, capsys):
    """Before: the preset check let it through and the searcher refused it after Ray started,
    with a traceback, leaving a run folder that blocked reusing --name."""
    import ray
    import yaml

    data = yaml.safe_load(demo_preset.source.read_text())
    data["params"]["delta_rank"] = {"low": 0.5, "high": 0.5}
    data.pop("known_good", None)  # (its 0.4 would be refused as outside the range)
    preset = tmp_path / "flat.yaml"
    preset.write_text(yaml.safe_dump(data))
    code, err = _run(["--backbone", str(preset), "--data-root", str(demo_preset.data.root), "--storage",
                      str(tmp_path / "out"), "--name", "r"], capsys)
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert "`params.delta_rank` must have low < high" in err and str(preset) in err
    assert not (tmp_path / "out" / "r").exists() and not ray.is_initialized()


@pytest.mark.parametrize("flags, message", [
    (["--grace-epochs", "15"], "--grace-epochs (15) must be a multiple of the validation interval 10"),
    (["--max-epochs", "5"], "--max-epochs 5 is below the validation interval 10"),
    (["--max-epochs", "25"], None),  # grace 10, val_interval 10: fine
])
def test_budget_flags_obey_the_presets_val_interval_rule(flags, message, tmp_path, capsys):
    """vit-b validates every 10 epochs; before, --grace-epochs 15 was accepted (rungs at 15, 45 ...)."""
    code, err = _run(["--backbone", "vit-b", "--dry-run", "--storage", str(tmp_path), *flags], capsys)
    if message is None:
        assert code == 0, err
    else:
        assert code == 2 and message in err and err.count("error:") == 1


@pytest.mark.parametrize(("flags", "message"), [
    (["--confirm-top", "3"], "--confirm-top 3 differs from the run's 2"),
    (["--confirm-seeds", "3"], "--confirm-seeds 3 differs from the run's 2"),
    (["--no-baseline"], "--baseline False differs from the run's True"),
    (["--warm-start", "other"], "--warm-start was resolved when the run started"),
])
def test_resume_refuses_changed_stage_flags(flags, message):
    from rspose_tune.search import parse_options, resume_conflicts

    args = parse_options(["--resume", *flags])
    assert [c for c in resume_conflicts(_stage_spec(), args) if message in c]
    same = parse_options(["--resume", "--confirm-top", "2", "--confirm-seeds", "2", "--baseline"])
    assert resume_conflicts(_stage_spec(), same) == []


# --------------------------------------------------------------------------------------------
# --trainable: the search's trainable is a plug-in (MODULE:NAME), resolved before Ray starts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "rule"), [
    ("train_rspose", "must be MODULE:NAME"),
    ("trainables.mmpose_trainable.train_rspose", "must be MODULE:NAME"),
    ("trainables.mmpose_trainable:", "must be MODULE:NAME"),
    ("no_such_module_rspose:train", "importing no_such_module_rspose failed (ModuleNotFoundError"),
    ("trainables.mmpose_trainable:no_such_name", "module trainables.mmpose_trainable has no 'no_such_name'"),
    ("trainables.mmpose_trainable:DIVERGED_FILE", "DIVERGED_FILE is a str, not callable"),
])
@pytest.mark.parametrize("dry_run", [False, True], ids=["start", "dry-run"])
def test_a_bad_trainable_is_one_error_line_and_writes_nothing(value, rule, dry_run, tmp_path, capsys):
    if dry_run and "importing" not in rule and "MODULE:NAME" not in rule:
        pytest.skip("--dry-run imports nothing: it checks the form and that the module exists, a start the rest")
    storage = tmp_path / "out"
    code, err = _run(["--trainable", value, "--storage", str(storage), "--name", "r",
                      *(["--dry-run"] if dry_run else [])], capsys)
    assert code == 2 and err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert f"--trainable {value!r} must be MODULE:NAME, a callable NAME of an importable MODULE" in err
    assert rule in err
    assert not storage.exists()  # no run folder, not even the storage root


def test_the_trainable_is_recorded_resolved_and_fixed_on_resume(demo_preset, tmp_path, capsys):
    from rspose_tune.runspec import DEFAULT_TRAINABLE, SPEC_FILE, read_spec
    from tests.search import conftest
    from trainables.mmpose_trainable import train_rspose

    data = str(demo_preset.data.root)
    default = _start(["--storage", str(tmp_path), "--name", "d", "--data-root", data])
    assert default.spec.trainable == DEFAULT_TRAINABLE and default.trainable is train_rspose
    custom = _start(["--storage", str(tmp_path), "--name", "c", "--data-root", data,
                     "--trainable", "tests.search.conftest:_run"])  # any importable callable
    assert read_spec(custom.run_dir).trainable == "tests.search.conftest:_run" and custom.trainable is conftest._run
    resumed = search.plan(search.parse_options(["--resume", "--storage", str(tmp_path), "--name", "c"]))
    assert resumed.trainable is conftest._run  # from the spec, without the flag
    # A changed --trainable on --resume is refused like the other identity flags; the same one is accepted.
    code, err = _run(["--resume", "--storage", str(tmp_path), "--name", "d", "--trainable", "tests.search.conftest:_run"],
                     capsys)
    assert code == 2 and err.count("error:") == 1
    assert f"--trainable 'tests.search.conftest:_run' differs from the run's {DEFAULT_TRAINABLE!r}" in err
    assert SPEC_FILE in err
    same = search.parse_options(["--resume", "--storage", str(tmp_path), "--name", "d",
                                             "--trainable", DEFAULT_TRAINABLE])
    assert search.plan(same).trainable is train_rspose


def test_a_run_spec_without_a_trainable_resumes_with_the_default(demo_preset, tmp_path):
    """A run started before --trainable existed: its spec has no `trainable`, and it ran the default."""
    import yaml

    from rspose_tune.runspec import DEFAULT_TRAINABLE, SPEC_FILE
    from trainables.mmpose_trainable import train_rspose

    _start(["--storage", str(tmp_path), "--name", "old", "--data-root", str(demo_preset.data.root)])
    path = tmp_path / "old" / SPEC_FILE
    data = yaml.safe_load(path.read_text())
    del data["trainable"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for flags in ([], ["--trainable", DEFAULT_TRAINABLE]):  # without the flag, and with the default given
        p = search.plan(search.parse_options(["--resume", "--storage", str(tmp_path), "--name", "old",
                                                          *flags]))
        assert p.spec.trainable == DEFAULT_TRAINABLE and p.trainable is train_rspose and not p.new_run


def test_a_run_spec_naming_a_trainable_that_is_gone_fails_its_resume_naming_the_spec(demo_preset, tmp_path, capsys):
    import yaml

    from rspose_tune.runspec import SPEC_FILE

    _start(["--storage", str(tmp_path), "--name", "r", "--data-root", str(demo_preset.data.root)])
    path = tmp_path / "r" / SPEC_FILE
    data = yaml.safe_load(path.read_text())
    data["trainable"] = "no_such_module_rspose:train"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, err = _run(["--resume", "--storage", str(tmp_path), "--name", "r"], capsys)
    assert code == 2 and err.count("error:") == 1
    assert f"{path}: `trainable` 'no_such_module_rspose:train' must be MODULE:NAME" in err


# --------------------------------------------------------------------------------------------
# Issue 25: one list of checks for a start and --dry-run, in one order; a refused command creates nothing
# --------------------------------------------------------------------------------------------


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("case", "message"), [
    ("storage-file", "{tmp}/f is a file, not a folder (the results root)"),
    ("storage-under-file", "--storage '{tmp}/f/sub': cannot create the folder ({tmp}/f is a file)"),
    ("address", "--address must be 'auto' or host:port (optionally ray://host:port), got 'foo'"),
    ("address-port", "--address '127.0.0.1:65536': the port must be 1-65535, got 65536"),
    ("wandb", "--wandb 'a/b': a W&B project name is 1-128 characters without any of"),
    ("mlflow-file", "--mlflow 'file://{tmp}/f': cannot use {tmp}/f as MLflow's file store ({tmp}/f is a file, not "
                    "a folder)"),
    ("demo-root", "demo data root '{tmp}/mine' is not empty and holds no demo-data manifest.json; refusing to "
                  "overwrite it"),
    ("name-taken", "run '{tmp}/out/taken' already exists: pass --resume to continue it, or choose another --name"),
])
@pytest.mark.parametrize("dry_run", [False, True], ids=["start", "dry-run"])
def test_a_start_and_a_dry_run_refuse_the_same_input_alike_and_create_nothing(case, message, dry_run, tmp_path,
                                                                               capsys):
    """Before, --dry-run accepted each of these (exit 0) while a start refused it; a start with
    --address foo printed "results in <a folder it never created>" before its error."""
    (tmp_path / "f").write_text("")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("someone's data")
    (tmp_path / "out" / "taken").mkdir(parents=True)
    argv = {
        "storage-file": ["--storage", str(tmp_path / "f")],
        "storage-under-file": ["--storage", str(tmp_path / "f" / "sub")],
        "address": ["--address", "foo"],
        "address-port": ["--address", "127.0.0.1:65536"],  # before, the dry run passed it; a start tried to connect
        "wandb": ["--wandb", "a/b"],
        "mlflow-file": ["--mlflow", str(tmp_path / "f")],  # a local store: before, the dry run passed it
        "demo-root": ["--data-root", str(tmp_path / "mine")],
        "name-taken": ["--name", "taken"],
    }[case]
    if "--storage" not in argv:
        argv = [*argv, "--storage", str(tmp_path / "out")]
    before = _files(tmp_path)
    code = search.main([*argv, *(["--dry-run"] if dry_run else [])])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message.format(tmp=tmp_path) in err
    assert "results in" not in out and "would cost" not in out
    assert _files(tmp_path) == before  # nothing created: no storage folder, no run folder, no data


def test_a_refused_resume_leaves_no_storage_folder_behind(tmp_path, capsys):
    """Before, `--resume --name x --storage /new/path` refused but created /new/path."""
    storage = tmp_path / "new" / "path"
    code, err = _run(["--resume", "--name", "x", "--storage", str(storage)], capsys)
    assert code == 2 and err.count("error:") == 1 and "--resume: no run to resume at" in err
    assert not (tmp_path / "new").exists()
    code, err = _run(["--resume", "--storage", str(storage)], capsys)  # the latest unfinished run: none
    assert code == 2 and "--resume: no unfinished run of preset 'demo'" in err
    assert not (tmp_path / "new").exists()


def test_a_start_creates_the_storage_folder_once_every_check_passed(demo_preset, tmp_path):
    p = _start(["--storage", str(tmp_path / "a" / "b"), "--name", "r", "--data-root", str(demo_preset.data.root)])
    assert (tmp_path / "a" / "b" / "r" / "run_spec.yaml").is_file() and p.storage == str(tmp_path / "a" / "b")


def test_the_dry_run_names_a_missing_demo_data_root_as_a_note_and_a_start_generates_it(tmp_path, capsys):
    code = search.main(["--dry-run", "--storage", str(tmp_path / "out"), "--data-root", str(tmp_path / "new")])
    out = capsys.readouterr().out
    assert code == 0 and f"the demo data is not at {tmp_path / 'new'} yet: a real start generates it" in out
    assert not (tmp_path / "out").exists() and not (tmp_path / "new").exists()


def test_search_dir_adds_a_folder_to_the_built_in_presets(tmp_path, capsys):
    """Issue 25: --search-dir replaced the built-in presets (`--search-dir D --backbone demo` was refused)."""
    import yaml

    from rspose_tune.spaces import load_preset

    mine = tmp_path / "presets"
    mine.mkdir()
    raw = yaml.safe_load(load_preset("vit-b").source.read_text())
    raw["base_config"] = str(load_preset("vit-b").source.parent / raw["base_config"])
    (mine / "my-vit.yaml").write_text(yaml.safe_dump(raw))
    for backbone in ("demo", "my-vit"):
        code = search.main(["--search-dir", str(mine), "--backbone", backbone, "--dry-run", "--storage", str(tmp_path)])
        out, err = capsys.readouterr()
        assert code == 0 and f"preset {backbone!r}" in out, err
    (mine / "demo.yaml").write_text(yaml.safe_dump(raw))
    code, err = _run(["--search-dir", str(mine), "--backbone", "demo", "--dry-run", "--storage", str(tmp_path)], capsys)
    assert code == 2 and err.count("error:") == 1 and "names both the built-in preset" in err


#: A value other than _stage_spec()'s for every flag the run spec fixes (a new one needs a line here).
_OTHER = {"backbone": "vit-b", "num_trials": 9, "scheduler": "fifo", "sampler": "random", "seed": 9, "max_epochs": 9,
          "grace_epochs": 9, "reduction_factor": 9, "trainable": "x:y", "data_root": "/elsewhere", "weights": "/w.pth",
          "confirm_top": 9, "confirm_seeds": 9, "baseline": False, "warm_start": ("other",), "gpus_per_trial": 9.0,
          "cpus_per_trial": 9.0, "workers_per_trial": 9, "num_workers": 9}


@pytest.mark.parametrize("dest", sorted(_OTHER))
def test_every_flag_the_run_spec_fixes_is_checked_on_resume_from_the_table(dest):
    from rspose_tune.search import SearchOptions, resume_conflicts, search_flags
    from rspose_tune.search._parser import FIXED, ONCE

    flags = dict(search_flags())
    assert sorted(d for d, f in flags.items() if f.spec and f.resume in (FIXED, ONCE)) == sorted(_OTHER)
    got = resume_conflicts(_stage_spec(), SearchOptions(**{dest: _OTHER[dest]}))
    assert len(got) == 1 and got[0].startswith(f"{flags[dest].name} "), got
    assert resume_conflicts(_stage_spec(), SearchOptions()) == []


def test_backbone_by_path_on_resume_is_the_runs_preset_file(tmp_path):
    from rspose_tune.search import SearchOptions, resume_conflicts
    from rspose_tune.spaces import load_preset

    spec = _stage_spec()
    assert resume_conflicts(spec, SearchOptions(backbone=str(load_preset("demo").source))) == []
    other = tmp_path / "demo.yaml"
    other.write_text(Path(load_preset("demo").source).read_text())
    assert resume_conflicts(spec, SearchOptions(backbone=str(other))) == [
        f"--backbone {str(other)!r} differs from the run's 'demo'"]
