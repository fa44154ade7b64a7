"""rspose_tune.search._run: trial outcomes and exit codes, a search stopped before its first row, and the
confirm stage's callbacks after a resume (no Ray started)."""

from __future__ import annotations

from rspose_tune import search
from rspose_tune.spaces import PARAM_NAMES, load_preset
from tests.search.conftest import _run


def test_trial_outcomes_counts_last_rows_and_one_line_per_error():
    import pandas as pd

    rows = pd.DataFrame({
        "trial_id": ["a", "a", "b", "c", "d", "e"],
        "epoch": [1, 2, 1, 0, 1, 1],
        "status": ["running", "completed", "pruned", "error", "error", "error"],
        "error": [None, None, None, "ValueError: boom", "ValueError: boom", "KeyError: 'x'"],
    })
    out = search.trial_outcomes(rows, num_trials=7)
    assert (out["completed"], out["pruned"], out["errored"], out["unfinished"]) == (1, 1, 3, 2)
    assert out["errors"] == ["error: 1 trial failed: KeyError: 'x'", "error: 2 trials failed: ValueError: boom"]


def test_a_search_stopped_before_its_first_row_says_how_to_resume(demo_preset, tmp_path, capsys, monkeypatch):
    """Before: read_results raised FileNotFoundError on the missing trials/ (a traceback)."""
    monkeypatch.setattr(search._run, "start_ray", lambda p, args: None)  # Ctrl-C before any trial reported:
    monkeypatch.setattr(search._run, "_check_cluster_can_hold_a_trial", lambda p: None)
    monkeypatch.setattr(search._run, "run_search", lambda p, args: [])  # Tune returns, nothing was written
    code, err = _run(["--data-root", str(demo_preset.data.root), "--storage", str(tmp_path), "--name", "r",
                      "--cpus-per-trial", "1"], capsys)
    assert code == 1 and err.count("error:") == 1
    assert "stopped before any trial reported a result" in err
    assert f"python -m rspose_tune.search --resume --name r --storage {tmp_path}" in err


def test_a_resumed_confirm_stage_writes_rows_where_the_run_is_now(tmp_path):
    """Before: the confirm tuner pickled the callback with the old absolute <run>/trials path."""
    import pickle
    from types import SimpleNamespace

    import pyarrow.fs as pafs

    from rspose_tune import search
    from rspose_tune.results import read_results
    from rspose_tune.tracking import Tracking

    preset = load_preset("demo")
    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    p = SimpleNamespace(preset=preset, max_epochs=3, grace=1, reduction_factor=3, cpus=1.0, gpus=0.0, workers=1,
                        name="run", run_dir=str(old), spec=SimpleNamespace(seed=0), tracking=Tracking())
    callbacks = pickle.loads(pickle.dumps(search._stage_callbacks(p)))  # as in <run>/confirm/tuner.pkl
    storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), experiment_fs_path=str(new / "confirm"),
                              experiment_dir_name="confirm")  # the restored experiment, moved
    config = {**{n: 0.5 for n in PARAM_NAMES}, "stage": "confirm", "seed": 1}
    trial = SimpleNamespace(trial_id="c1", config=config, storage=storage, error_file=None)
    for cb in callbacks:
        cb.on_trial_result(iteration=1, trials=[trial], trial=trial, result={"epoch": 3, "metric": 0.5})
        cb.on_trial_complete(iteration=2, trials=[trial], trial=trial)
    rows = read_results(new / "trials")
    assert list(rows["status"]) == ["completed"] and list(rows["stage"]) == ["confirm"]
    assert not old.exists()


def test_the_searchers_sampler_is_the_runs(demo_preset, tmp_path, monkeypatch):
    """``--sampler gp`` reaches the searcher (its start-up trials as TPE's), and ``random`` is Optuna's
    RandomSampler: the run spec's sampler is what the search builds its searcher with."""
    import pytest

    seen = {}

    class Stop(Exception):
        pass

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    import rspose_tune.searcher

    monkeypatch.setattr(rspose_tune.searcher, "PruningAwareOptunaSearch", capture)  # _run imports it when called
    for sampler, startup in (("gp", 3), ("random", 9), ("tpe", 3)):
        options = search.parse_options(["--data-root", str(demo_preset.data.root), "--storage", str(tmp_path),
                                        "--name", sampler, "--num-trials", "9", "--sampler", sampler,
                                        "--cpus-per-trial", "1", "--no-dashboard"])
        p = search.plan(options)
        with pytest.raises(Stop):
            search.run_search(p, options)
        assert (seen["sampler"], seen["n_startup_trials"]) == (sampler, startup)
