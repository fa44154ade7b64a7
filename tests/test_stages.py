"""Issue 11: confirm stage, stock-loss baseline, warm start, parallel TPE options.

Unit tests on hand-made tables and settings, then one end-to-end test through the real stack
(CLI, Ray Tune, Optuna, MMPose, Parquet) on the demo preset.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from rspose_tune import report as rep
from rspose_tune.report._summary import _params_key
from rspose_tune._stages import StageError, project_setting, stage_configs, stage_settings
from rspose_tune.spaces import PARAM_NAMES, load_preset

KG = {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": 3.0, "coeff_inst": 0.25}
B = {**KG, "delta_rank": 0.7}
C = {**KG, "coeff_inst": None, "delta_inst": None}


def _independent_t(values):
    """mean ± t_{0.975, n-1} · s / √n, written out (not scipy's ttest)."""
    x = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


# ------------------------------------------------------------------------------ statistics


def test_t_interval_matches_the_textbook_formula():
    values = [0.71, 0.69, 0.74]
    mean, low, high = rep.t_interval(values)
    assert (mean, low, high) == pytest.approx(_independent_t(values))
    assert rep.t_interval([0.5]) == (0.5, None, None)
    assert rep.t_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="empty"):
        rep.t_interval([])


def test_paired_difference_uses_common_seeds_and_says_whether_zero_is_excluded():
    a = {1: 0.70, 2: 0.72, 3: 0.71, 9: 0.1}
    b = {1: 0.60, 2: 0.63, 3: 0.60}
    c = rep.paired_difference(a, b)
    assert c.seeds == (1, 2, 3)
    mean, low, high = _independent_t([0.10, 0.09, 0.11])
    assert (c.mean, c.low, c.high) == pytest.approx((mean, low, high)) and c.distinguishable is True
    close = rep.paired_difference({1: 0.70, 2: 0.60}, {1: 0.65, 2: 0.66})
    assert close.distinguishable is False and close.low < 0 < close.high
    one = rep.paired_difference({1: 0.7}, {1: 0.6})
    assert one.distinguishable is None and one.mean == pytest.approx(0.1) and "no interval" in one.text()
    assert rep.paired_difference({1: 0.7}, {2: 0.6}).mean is None


def _trials(rows):
    """summarize_trials-like rows: (trial_id, stage, seed, params, metric, status)."""
    out = []
    for tid, stage, seed, params, metric, status in rows:
        entry = {"run": "r", "backbone": "demo", "trial_id": tid, "status": status, "stage": stage, "seed": seed,
                 "last_epoch": 10, **{n: (params or {}).get(n) for n in PARAM_NAMES}, "metric_name": "coco/AP",
                 "metric": metric, "ar": None, "spearman": None, "wall_s": 10.0, "gpus": 0.0, "cpus": 1.0,
                 "max_epochs": 10}  # fmt: skip
        entry["params_key"] = _params_key(entry)
        out.append(entry)
    return pd.DataFrame(out)


HAND = _trials([
    ("s1", "search", 0, KG, 0.75, "completed"),  # best in the search (optimistic)
    ("s2", "search", 0, B, 0.74, "completed"),
    ("s3", "search", 0, C, 0.60, "completed"),
    ("s4", "search", 0, KG, 0.50, "pruned"),
    ("c1", "confirm", 1, KG, 0.70, "completed"), ("c2", "confirm", 2, KG, 0.68, "completed"),
    ("c3", "confirm", 3, KG, 0.69, "completed"),
    ("c4", "confirm", 1, B, 0.71, "completed"), ("c5", "confirm", 2, B, 0.70, "completed"),
    ("c6", "confirm", 3, B, 0.72, "completed"),
    ("b1", "baseline", 1, None, 0.60, "completed"), ("b2", "baseline", 2, None, 0.62, "completed"),
    ("b3", "baseline", 3, None, 0.61, "completed"),
])  # fmt: skip


def test_confirmed_settings_rank_by_mean_over_confirm_seeds_only():
    confirmed = rep.confirmed_settings(HAND, "max")
    assert [c.search_trial for c in confirmed] == ["s2", "s1"]  # B wins on the seeds, KG won the search
    win = confirmed[0]
    assert win.by_seed == {1: 0.71, 2: 0.70, 3: 0.72} and win.search_metric == pytest.approx(0.74)
    assert (win.mean, win.low, win.high) == pytest.approx(_independent_t([0.71, 0.70, 0.72]))
    assert rep.top_settings(HAND, "max", 2)["trial_id"].tolist() == ["s1", "s2"]
    assert rep.baseline_by_seed(HAND) == {1: 0.60, 2: 0.62, 3: 0.61}


def test_backbone_report_chooses_the_confirm_winner_and_the_baseline_delta():
    frame_rows = []
    for _, t in HAND.iterrows():
        frame_rows.append({**{k: t[k] for k in ("run", "backbone", "trial_id", "status", "stage", "seed",
                                                "metric_name", "metric", *PARAM_NAMES)},
                           "epoch": 10, "ar": None, "spearman": None, "wall_s": 10.0, "world_size": None})  # fmt: skip
    run = rep.RunData("r", "/nowhere/r", pd.DataFrame(frame_rows), {},
                      rep.RunSettings(mode="max", gpus=0.0, cpus=1.0, max_epochs=10, grace_epochs=2,
                                      reduction_factor=3))  # fmt: skip
    r = rep.backbone_report("demo", [run])
    assert r.best_trial == "s2" and r.params["delta_rank"] == pytest.approx(0.7)  # what export writes
    assert r.trials == 4 and r.completed == 3 and r.pruned == 1  # the table counts search trials
    diff = rep.paired_difference({1: 0.71, 2: 0.70, 3: 0.72}, {1: 0.70, 2: 0.68, 3: 0.69})
    assert r.confirm_comparison.mean == pytest.approx(diff.mean) and r.confirm_comparison.low == pytest.approx(diff.low)
    assert (r.baseline_delta.mean, r.baseline_delta.low, r.baseline_delta.high) == pytest.approx(
        _independent_t([0.11, 0.08, 0.11]))
    text = rep.format_notes([r])
    assert diff.distinguishable is False and r.confirm_comparison.distinguishable is False
    assert "winner    0.71 [" in text and "the winner is NOT distinguishable from the runner-up" in text
    assert "Stock-loss baseline" in text and "Δ coco/AP chosen setting - baseline: +0.1" in text
    record = r.record()
    assert record["confirmed_seeds"] == 3 and record["baseline_delta"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------ stages, warm start


def _args(**kw):
    base = dict(confirm_top=None, confirm_seeds=None, baseline=None)
    return argparse.Namespace(**{**base, **kw})


def test_stage_settings_defaults_flags_and_errors():
    demo = load_preset("demo")
    assert stage_settings(_args(), demo, 5) == {"confirm_top": 0, "confirm_seeds": (), "baseline": False,
                                                 "baseline_seeds": ()}  # fmt: skip  (the demo: off)
    assert stage_settings(_args(), load_preset("vit-b"), 5) == {"confirm_top": 3, "confirm_seeds": (6, 7, 8),
                                                                "baseline": True, "baseline_seeds": (6, 7, 8)}  # fmt: skip
    got = stage_settings(_args(confirm_top=0, baseline=True), demo, 0)
    assert got["confirm_seeds"] == () and got["baseline_seeds"] == (0,)
    assert stage_settings(_args(confirm_top=3, confirm_seeds=4, baseline=False), demo, 0)["confirm_seeds"] == (1, 2, 3, 4)
    with pytest.raises(StageError, match="--confirm-seeds must be >= 2"):
        stage_settings(_args(confirm_top=2, confirm_seeds=1), demo, 0)
    with pytest.raises(StageError, match="--confirm-seeds 3 needs --confirm-top"):
        stage_settings(_args(confirm_top=0, confirm_seeds=3), demo, 0)


def test_project_setting_clips_fixes_and_refuses():
    space = load_preset("demo").params
    got, changes = project_setting({**KG, "delta_rank": 1.7, "coeff_rank": 2.0, "coeff_inst": 9.0}, space)
    assert got["delta_rank"] == 1.0 and got["coeff_rank"] == 1.0 and got["coeff_inst"] == 3.0
    assert len(changes) == 4 and any("coeff_rank 2.0 -> 1" in c for c in changes)
    assert got["pos_thr"] == 1e-6 and "pos_thr 0.0 -> 1e-06 ([1e-06, 0.7] log)" in changes  # KG has none: 0
    off, _ = project_setting(C, space)
    assert off["coeff_inst"] == 0.0 and off["delta_inst"] is None
    with pytest.raises(StageError, match="cannot switch it off"):
        project_setting({**KG, "coeff_rank": None, "delta_rank": None}, space)


def test_stage_configs_take_the_top_distinct_settings_on_every_seed():
    rows = pd.DataFrame([
        {"trial_id": t, "epoch": 10, "status": s, "stage": "search", "seed": 0, "run": "r", "backbone": "demo",
         "metric_name": "coco/AP", "metric": m, "ar": None, "spearman": None, "wall_s": 1.0, "world_size": None,
         **{n: p.get(n) for n in PARAM_NAMES}}
        for t, p, m, s in (("a", KG, 0.7, "completed"), ("b", KG, 0.69, "completed"), ("c", C, 0.6, "completed"),
                           ("d", B, 0.9, "pruned"))
    ])  # fmt: skip
    spec = argparse.Namespace(confirm_top=3, confirm_seeds=(1, 2), baseline=True, baseline_seeds=(1, 2),
                              preset=load_preset("demo"))  # fmt: skip
    configs, notes = stage_configs(spec, rows)
    confirm = [c for c in configs if c["stage"] == "confirm"]
    assert [(c["confirms"], c["seed"]) for c in confirm] == [("a", 1), ("a", 2), ("c", 1), ("c", 2)]
    assert confirm[2]["coeff_inst"] == 0.0 and confirm[2]["delta_inst"] is None
    assert [c["seed"] for c in configs if c["stage"] == "baseline"] == [1, 2]
    assert notes and "fewer than --confirm-top 3" in notes[0]


def test_searcher_enqueues_warm_start_after_known_good_and_records_the_source():
    from rspose_tune.searcher import TPE_OPTIONS, PruningAwareOptunaSearch

    space = load_preset("demo").params
    kg, b = {**KG, "pos_thr": 1e-6}, {**B, "pos_thr": 0.01}  # the demo searches pos_thr
    searcher = PruningAwareOptunaSearch(space, max_epochs=3, metric="metric", mode="max", known_good=[kg],
                                        warm_start=[{"params": b, "source": "/runs/x trial t1"}])  # fmt: skip
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    assert first == kg and second == b and third != b
    trials = searcher.study.trials
    assert trials[0].user_attrs["rspose:known_good"] == 0 and "rspose:warm_start" not in trials[0].user_attrs
    assert trials[1].user_attrs["rspose:warm_start"] == "/runs/x trial t1"
    sampler = searcher.study.sampler
    assert TPE_OPTIONS == {"constant_liar": True, "multivariate": False}  # measured: bench._tpe
    assert sampler._constant_liar and sampler._multivariate is False
    grouped = PruningAwareOptunaSearch(space, max_epochs=3, metric="metric", mode="max",
                                       tpe_options={"multivariate": True, "group": True})  # fmt: skip
    assert grouped.study.sampler._multivariate and grouped.study.sampler._group
    with pytest.raises(ValueError, match="unsupported keys"):
        PruningAwareOptunaSearch(space, max_epochs=3, tpe_options={"bogus": 1})
    with pytest.raises(ValueError, match="warm_start"):
        PruningAwareOptunaSearch(space, max_epochs=3, warm_start=[{"params": B}])


def test_stock_config_keeps_the_base_loss(demo_preset, mmpose_ready):
    from rspose_tune.mmpose_adapter.configs import build_config

    stock = build_config(demo_preset, None, seed=3, max_epochs=2)
    assert stock.model.head.type == "HeatmapHead" and stock.model.head.loss.type == "KeypointMSELoss"
    assert stock.rspose_tune.stock_loss and stock.randomness.seed == 3
    ours = build_config(demo_preset, KG, max_epochs=2)
    assert ours.model.head.type == "RSPoseHeatmapHead" and ours.model.head.loss.type == "RSPoseLoss"
    assert stock.train_dataloader.dataset.data_root == ours.train_dataloader.dataset.data_root


def test_results_rows_carry_stage_and_seed():
    from rspose_tune.results import make_row

    search = make_row({"epoch": 1, "metric": 0.5}, KG, run="r", backbone="demo", trial_id="t", seed=7)
    assert (search["stage"], search["seed"]) == ("search", 7)
    base = make_row({"epoch": 1}, {**KG, "stage": "baseline", "seed": 2}, run="r", backbone="demo", trial_id="b")
    assert (base["stage"], base["seed"]) == ("baseline", 2) and all(base[n] is None for n in PARAM_NAMES)
    with pytest.raises(ValueError, match="stage"):
        make_row({"epoch": 1}, {**KG, "stage": "final"}, run="r", backbone="demo", trial_id="x")


# ------------------------------------------------------------------------------ end to end


FAST = ["--max-epochs", "2", "--grace-epochs", "1", "--reduction-factor", "2", "--max-concurrent", "2",
        "--no-dashboard", "--verbose", "1"]  # fmt: skip


def _cli(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rspose_tune.search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def _study(run_dir):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name="rspose", storage=JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))


@pytest.mark.slow
def test_confirm_baseline_and_warm_start_end_to_end(tmp_path, demo_preset):
    from mmengine.config import Config

    from rspose_tune.results import read_results
    from rspose_tune.runspec import read_spec

    data = str(demo_preset.data.root)
    out = _cli(tmp_path, "--storage", str(tmp_path), "--name", "first", "--data-root", data, "--num-trials", "3",
               "--confirm-top", "2", "--confirm-seeds", "2", "--baseline", *FAST)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = tmp_path / "first"
    spec = read_spec(str(run_dir))
    assert (spec.confirm_top, spec.confirm_seeds, spec.baseline, spec.baseline_seeds) == (2, (1, 2), True, (1, 2))
    assert spec.tpe_options == {"constant_liar": True, "multivariate": False}
    rows = read_results(run_dir)
    last = rows.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    search = last[last["stage"] == "search"]
    assert len(search) == 3 and (search["seed"] == 0).all()
    # confirm: K = 2 settings x N = 2 seeds, all at the full budget (never pruned), the top-2 search settings
    confirm = last[last["stage"] == "confirm"]
    assert len(confirm) == 4 and (confirm["status"] == "completed").all() and (confirm["epoch"] == 2).all()
    assert sorted(confirm["seed"]) == [1, 1, 2, 2]
    summary = rep.summarize_trials(rows)
    top = rep.top_settings(summary, "max", 2)
    assert set(confirm.apply(lambda r: _params_key(r), axis=1)) == set(top["params_key"])
    # baseline: the stock loss, full budget, on the confirm seeds
    base = last[last["stage"] == "baseline"]
    assert len(base) == 2 and sorted(base["seed"]) == [1, 2] and (base["status"] == "completed").all()
    assert base[list(PARAM_NAMES)].isna().all().all()
    base_dir = next((run_dir / "confirm").glob(f"trial_{base.index[0]}"))
    cfg = Config.fromfile(str(base_dir / "resolved_config.py"))
    assert cfg.model.head.loss.type == "KeypointMSELoss" and cfg.model.head.type == "HeatmapHead"
    assert cfg.randomness.seed == int(base.iloc[0]["seed"])
    # the report: per confirmed setting, mean and a 95 % t-interval over its seeds (= rows), the verdict, Δ
    runs = rep.load_runs(str(tmp_path), ["first"])
    r = rep.backbone_report("demo", runs)
    assert len(r.confirmed) == 2
    for c in r.confirmed:
        mine = confirm[confirm.apply(lambda row: _params_key(row), axis=1) == c.params_key]
        values = [float(v) for v in mine.sort_values("seed")["metric"]]
        want = _independent_t(values) if np.ptp(values) > 0 else (values[0],) * 3
        assert (c.mean, c.low, c.high) == pytest.approx(want)
    assert "Confirm stage (coco/AP, mean and 95% Student-t interval" in out.stdout
    assert "distinguishable from the runner-up" in out.stdout and "Δ coco/AP chosen setting - baseline" in out.stdout
    assert "confirm stage finished: 6 trials: 6 completed" in out.stdout
    assert (run_dir / "finished.json").is_file() and (run_dir / "report" / "curves.png").stat().st_size > 1000

    # warm start a new run from the finished one. The second run's preset is the demo without its
    # known-good setting: the first run's winner is often that setting, and a warm-start setting
    # equal to a known-good one is (rightly) skipped, so the test would depend on which setting won.
    presets = tmp_path / "presets"
    presets.mkdir()
    demo = load_preset("demo")
    raw = yaml.safe_load(Path(demo.source).read_text())
    raw.pop("known_good")
    raw["base_config"] = str(Path(demo.source).parent / raw["base_config"])
    (presets / "demo-nokg.yaml").write_text(yaml.safe_dump(raw))
    out2 = _cli(tmp_path, "--storage", str(tmp_path), "--name", "second", "--data-root", data, "--num-trials", "2",
                "--backbone", "demo-nokg", "--search-dir", str(presets),
                "--warm-start", "first", "--confirm-top", "0", "--no-baseline", "--max-epochs", "1",
                "--grace-epochs", "1", "--max-concurrent", "2", "--no-dashboard")  # fmt: skip
    assert out2.returncode == 0, out2.stdout[-3000:] + out2.stderr[-3000:]
    trials = _study(tmp_path / "second").trials
    source = trials[0].user_attrs["rspose:warm_start"]  # first in the queue: no known-good settings
    assert "rspose:warm_start" not in trials[1].user_attrs
    assert source.startswith(f"{run_dir} trial {r.best_trial} (demo, confirmed mean")
    chosen = {n: r.params[n] for n in PARAM_NAMES}
    second_rows = read_results(tmp_path / "second")
    warm_row = second_rows[second_rows["trial_id"] == trials[0].user_attrs["rspose:ray_trial_id"]].iloc[-1]
    for n in PARAM_NAMES:
        assert (pd.isna(warm_row[n]) and chosen[n] is None) or warm_row[n] == pytest.approx(chosen[n])
    assert read_spec(str(tmp_path / "second")).warm_start[0]["source"] == source
    # the warm-start flag is fixed on --resume
    out3 = _cli(tmp_path, "--storage", str(tmp_path), "--name", "second", "--resume", "--warm-start", "first")
    assert out3.returncode == 2 and "error: --resume of run 'second': --warm-start was resolved" in out3.stderr


# ------------------------------------------------------------------------------ run spec, resume


def _spec(**kw):
    from rspose_tune.runspec import RunSpec

    base = dict(run="r", storage="/s", preset=load_preset("demo"), num_trials=8, seed=0, max_epochs=10, grace_epochs=2,
                reduction_factor=3, gpus_per_trial=0.0, cpus_per_trial=1.0, workers_per_trial=1,
                dataloader_workers=None, scheduler="asha", sampler="tpe", n_startup_trials=2, confirm_top=2,
                confirm_seeds=(1, 2), baseline=True, baseline_seeds=(1, 2),
                warm_start=({"params": B, "source": "/runs/x trial t"},),
                tpe_options={"constant_liar": True, "multivariate": False})  # fmt: skip
    return RunSpec(**{**base, **kw})


def test_run_spec_round_trips_the_stages_and_reads_old_specs():
    import yaml

    from rspose_tune.runspec import RunSpec

    spec = _spec()
    data = yaml.safe_load(yaml.safe_dump(spec.to_dict()))
    back = RunSpec.from_dict(data, "x")
    assert (back.confirm_top, back.confirm_seeds, back.baseline, back.baseline_seeds) == (2, (1, 2), True, (1, 2))
    assert back.warm_start == spec.warm_start and back.tpe_options == spec.tpe_options
    assert back.preset.confirm == spec.preset.confirm and back.preset.cost == spec.preset.cost
    for key in ("stages", "warm_start"):
        data.pop(key)
    data["sampler"].pop("tpe_options")
    old = RunSpec.from_dict(data, "x")  # a spec written before issue 11
    assert (old.confirm_top, old.baseline, old.warm_start, old.tpe_options) == (0, False, (), {})
    data["stages"] = {"confirm": {"top": -1}}
    with pytest.raises(Exception, match="stages.confirm.top"):
        RunSpec.from_dict(data, "x")


@pytest.mark.parametrize(("flags", "message"), [
    (["--confirm-top", "3"], "--confirm-top 3 differs from the run's 2"),
    (["--confirm-seeds", "3"], "--confirm-seeds 3 differs from the run's 2"),
    (["--no-baseline"], "--baseline False differs from the run's True"),
    (["--warm-start", "other"], "--warm-start was resolved when the run started"),
])  # fmt: skip
def test_resume_refuses_changed_stage_flags(flags, message):
    from rspose_tune.search import build_parser, resume_conflicts

    args = build_parser().parse_args(["--resume", *flags])
    assert [c for c in resume_conflicts(_spec(), args) if message in c]
    same = build_parser().parse_args(["--resume", "--confirm-top", "2", "--confirm-seeds", "2", "--baseline"])
    assert resume_conflicts(_spec(), same) == []


# ------------------------------------------------------------------------------ issue 17


def _hand_run(name: str, rows: pd.DataFrame) -> "rep.RunData":
    frame = pd.DataFrame([{**{k: t[k] for k in ("backbone", "trial_id", "status", "stage", "seed", "metric_name",
                                                  "metric", *PARAM_NAMES)},
                           "run": name, "epoch": 10, "ar": None, "spearman": None, "wall_s": 10.0, "world_size": None}
                          for _, t in rows.iterrows()])  # fmt: skip
    return rep.RunData(name, f"/nowhere/{name}", frame, {},
                       rep.RunSettings(mode="max", gpus=0.0, cpus=1.0, max_epochs=10, grace_epochs=2,
                                       reduction_factor=3))  # fmt: skip


def test_the_metric_column_shows_the_confirm_mean_when_the_confirm_stage_chose():
    """Before: the table showed s2's search metric 0.74, the optimistic number."""
    r = rep.backbone_report("demo", [_hand_run("r", HAND)])
    assert r.best_trial == "s2" and r.chosen_by_confirm
    column = rep.TABLE_HEADER.index("Metric")
    metric_cell = rep.table_rows([r])[0][column]
    assert metric_cell == "coco/AP 0.71 (confirm mean, 3 seeds)"
    search_only = rep.backbone_report("demo", [_hand_run("r", HAND[HAND["stage"] == "search"])])
    assert rep.table_rows([search_only])[0][column] == "coco/AP 0.75"  # no confirm stage: the search's best


def test_merged_runs_keep_every_seed_of_a_setting():
    """Before: seed 1 of setting B from the second run was dropped silently (setdefault)."""
    again = _trials([("d4", "confirm", 1, B, 0.75, "completed"), ("s9", "search", 0, B, 0.70, "completed")])
    r = rep.backbone_report("demo", [_hand_run("r", HAND), _hand_run("r2", again)])
    win = r.confirmed[0]
    assert win.by_seed == pytest.approx({1: (0.71 + 0.75) / 2, 2: 0.70, 3: 0.72})
    assert any("seed 1 was trained 2 times (r/c4, r2/d4)" in note for note in r.notes)


def test_a_resumed_confirm_stage_writes_rows_where_the_run_is_now(tmp_path):
    """Before: the confirm tuner pickled the callback with the old absolute <run>/trials path."""
    import pickle
    from types import SimpleNamespace

    import pyarrow.fs as pafs

    from rspose_tune import search
    from rspose_tune.results import read_results

    preset = load_preset("demo")
    old, new = tmp_path / "old" / "run", tmp_path / "new" / "run"
    p = SimpleNamespace(preset=preset, max_epochs=3, grace=1, reduction_factor=3, cpus=1.0, gpus=0.0, workers=1,
                        name="run", run_dir=str(old), spec=SimpleNamespace(seed=0))  # fmt: skip
    callbacks = pickle.loads(pickle.dumps(search._stage_callbacks(p)))  # as in <run>/confirm/tuner.pkl
    storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), experiment_fs_path=str(new / "confirm"),
                              experiment_dir_name="confirm")  # the restored experiment, moved  # fmt: skip
    config = {**{n: 0.5 for n in PARAM_NAMES}, "stage": "confirm", "seed": 1}
    trial = SimpleNamespace(trial_id="c1", config=config, storage=storage, error_file=None)
    for cb in callbacks:
        cb.on_trial_result(iteration=1, trials=[trial], trial=trial, result={"epoch": 3, "metric": 0.5})
        cb.on_trial_complete(iteration=2, trials=[trial], trial=trial)
    rows = read_results(new / "trials")
    assert list(rows["status"]) == ["completed"] and list(rows["stage"]) == ["confirm"]
    assert not old.exists()
