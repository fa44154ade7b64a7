"""A short soak (``python -m rspose_tune.bench soak``'s own code, in this process): a real 127.0.0.1
Ray cluster (head + one worker, token auth) and moto's S3 server, a demo search with one worker node
kill, one 15 s storage outage and one driver kill (then ``--resume``); every check must pass. Then
each check is broken once on the bucket (a row deleted, a row doubled, a vis_data/ deleted, an
extra attempt's log, the journal cut short, the baseline's rows deleted, a final row deleted) and
must fail; at the end nothing the soak started may be left running."""

from __future__ import annotations

import argparse

import pytest

from rspose_tune.bench import _soak
from rspose_tune.bench._cluster import processes


ARGS = ["--num-trials", "5", "--max-epochs", "3", "--grace-epochs", "1", "--reduction-factor", "3",
        "--confirm-top", "1", "--confirm-seeds", "2", "--train-images", "48", "--node-kills", "1",
        "--clock", "rows", "--node-kill-first", "3", "--outage-at", "7", "--outage-s", "15", "--driver-kill-at", "11",
        "--seed", "0", "--timeout-s", "900"]
# The faults are timed in result rows, not seconds: the search writes at least 19 (5 trials' first
# epochs, two promoted ones' next two, 6 confirm and 6 baseline rows), so each fault hits it while
# it runs on any machine. (In seconds, a quiet CI machine once finished the search before the
# driver kill at 79 s.)


def _by_name(checks):
    return {c.name: c for c in checks}


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    """One soak run, its servers kept up for the breaks; stopped (and checked for leftovers) after."""
    base = tmp_path_factory.mktemp("soak")
    args: argparse.Namespace = _soak._parser().parse_args(ARGS)
    run = _soak.Soak(args, _soak.schedule_of(args), base)  # main's schedule
    try:
        run.run()
        yield run, run.check()
    finally:
        leftovers = run.stop()
        folders = [str(base), str(run.ray_base)]
        ours = [p["pid"] for p in processes() if any(f in part for part in p["cmdline"] for f in folders)
                or p["pgid"] in run.search_pids or p["pgid"] in [n.proc.pid for n in run.nodes if n.proc]
                or (run.s3.proc and p["pgid"] == run.s3.proc.pid)]
        assert not leftovers and not ours, (leftovers, ours)


@pytest.mark.slow
def test_soak_passes_every_check(soak):
    run, checks = soak
    failed = [c.line() for c in checks if not c.ok]
    assert not failed, "\n".join(failed)
    names = set(_by_name(checks))
    assert {"search", "trials", "rows lost", "rows doubled", "epochs twice", "trial folders", "journal", "stages",
            "report/export"} <= names
    kinds = [r["kind"] for r in run.injected if "skipped" not in r]
    assert sorted(kinds) == ["driver", "node", "outage"] and run.injected_all(), run.injected
    assert [(r["kind"], r["at_s"]) for r in run.injected] == [("node", 3), ("outage", 7), ("driver", 11)]
    assert all(r["rows"] >= r["at_s"] for r in run.injected), run.injected  # each hit once its rows were there
    assert [r["resume"] for r in run.search_runs] == [False, True], run.search_runs


def _files(fs, root):
    import pyarrow.fs as pafs

    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                  if i.type == pafs.FileType.File)


def _read(fs, path):
    with fs.open_input_stream(path) as f:
        return f.read()


def _write(fs, path, data):
    with fs.open_output_stream(path) as f:
        f.write(data)


@pytest.mark.slow
@pytest.mark.parametrize("damage, check", [
    ("row_lost", "rows lost"), ("row_doubled", "rows doubled"), ("vis_data_deleted", "trial folders"),
    ("attempt_doubled", "epochs twice"), ("journal_cut", "journal"), ("baseline_rows_deleted", "stages"),
    ("final_row_deleted", "trials"),
])
def test_each_check_fails_when_its_records_are_broken(soak, damage, check):
    import pyarrow.fs as pafs

    from rspose_tune.results import read_results, row_file_name, trial_row_files

    run, _ = soak
    uri = f"{run.storage}/{_soak.RUN}"
    fs, root = pafs.FileSystem.from_uri(uri)
    rows = read_results(uri)
    last = rows.sort_values("epoch").groupby("trial_id").last()
    completed = last[(last["status"] == "completed") & (last["stage"].fillna("search") == "search")].index
    # A trial no kill restarted (one MMPose attempt, every epoch validated there): a copy of that
    # attempt doubles every epoch. (A resumed trial's last attempt may have validated one epoch
    # or none, within what its restart allows.)
    full = next(t for t in completed if [att["validated"] for att in _soak.read_trial_folder(
        fs, f"{root}/trial_{t}").attempts] == [list(range(1, run.args.max_epochs + 1))])
    rows_dir = f"{root}/trials"
    row = f"{rows_dir}/{row_file_name(full, 1)}"
    saved: dict[str, bytes | None] = {}

    def remove(path):
        saved[path] = _read(fs, path)
        fs.delete_file(path)

    def add(path, data):
        saved[path] = None
        _write(fs, path, data)

    trial_dir = f"{root}/trial_{full}"
    if damage == "row_lost":
        remove(row)
    elif damage == "row_doubled":
        add(f"{rows_dir}/zz-copy.parquet", _read(fs, row))
    elif damage == "vis_data_deleted":
        for path in _files(fs, trial_dir):
            if "/vis_data/" in path:
                remove(path)
    elif damage == "attempt_doubled":
        for path in _files(fs, f"{trial_dir}/mmpose"):
            stamp = path.split("/mmpose/", 1)[1].split("/")[0]
            if path.split("/mmpose/", 1)[1].count("/"):
                add(path.replace(f"/mmpose/{stamp}/", "/mmpose/29991231_000000/").replace(
                    f"/{stamp}.log", "/29991231_000000.log"), _read(fs, path))
    elif damage == "journal_cut":
        journal = f"{root}/optuna.journal"
        text = _read(fs, journal)
        saved[journal] = text
        _write(fs, journal, b"".join(text.splitlines(keepends=True)[:-3]))
    elif damage == "baseline_rows_deleted":
        for trial in last.index[last["stage"] == "baseline"]:
            for path in trial_row_files(fs, rows_dir, trial).values():
                remove(path)
    elif damage == "final_row_deleted":
        remove(f"{rows_dir}/{row_file_name(full, int(last.loc[full, 'epoch']))}")
    assert saved, f"{damage}: nothing was broken"
    try:
        a = run.args
        from rspose_tune._asha import asha_rungs

        checks = _by_name(_soak.check_run(uri, num_trials=a.num_trials, max_epochs=a.max_epochs,
                                          rungs=asha_rungs(a.max_epochs, a.grace_epochs, a.reduction_factor),
                                          confirm_top=a.confirm_top, confirm_seeds=a.confirm_seeds,
                                          baseline_seeds=a.confirm_seeds, kills=2))
        assert not checks[check].ok, checks[check].line()
    finally:
        for path, data in saved.items():
            if data is None:
                fs.delete_file(path)
            else:
                _write(fs, path, data)
    again = _by_name(_soak.check_run(uri, num_trials=a.num_trials, max_epochs=a.max_epochs,
                                     rungs=asha_rungs(a.max_epochs, a.grace_epochs, a.reduction_factor),
                                     confirm_top=a.confirm_top, confirm_seeds=a.confirm_seeds,
                                     baseline_seeds=a.confirm_seeds, kills=2))
    assert again[check].ok, again[check].line()  # the repair restored it


def test_schedule_is_seeded_and_in_time_order():
    kw = dict(node_kills=3, node_kill_first=60, node_kill_every=180, workers=2, outage_at=150, driver_kill_at=270)
    faults = _soak.schedule(seed=0, **kw)
    assert faults == _soak.schedule(seed=0, **kw) != _soak.schedule(seed=1, **kw)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert sorted(f.kind for f in faults) == ["driver", "node", "node", "node", "outage"]
    assert [f.node for f in faults if f.kind == "node"] == [0, 1, 0]  # round robin over the workers
    exact = _soak.schedule(seed=0, jitter=0.0, **kw)  # the --clock rows schedule: the times as given
    assert [(f.kind, f.at_s) for f in exact] == [("node", 60), ("outage", 150), ("node", 240), ("driver", 270),
                                                 ("node", 420)]


@pytest.mark.parametrize("argv, message", [
    (["--num-trials", "0"], "--num-trials must be >= 1, got 0"),
    (["--node-kills", "-1"], "--node-kills must be >= 0, got -1"),
    (["--confirm-seeds", "1"], "--confirm-seeds must be >= 2"),
])
def test_bad_flags_are_one_error_line(argv, message, capsys):
    from rspose_tune.bench.__main__ import main

    assert main(["soak", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
