"""The search CLI's confirm stage, stock-loss baseline and warm start end to end (rspose_tune._stages),
through the real stack (CLI, Ray Tune, Optuna, MMPose, Parquet) on the demo preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rspose_tune import report as rep
from rspose_tune.report._summary import _params_key
from rspose_tune.spaces import PARAM_NAMES, load_preset
from tests.report.conftest import _independent_t

FAST = ["--max-epochs", "2", "--grace-epochs", "1", "--reduction-factor", "2", "--max-concurrent", "2",
        "--no-dashboard", "--verbose", "1"]


def _cli(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rspose_tune.search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


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
               "--confirm-top", "2", "--confirm-seeds", "2", "--baseline", *FAST)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "confirm stage: 4 confirm trial(s) (2 setting(s) of --confirm-top 2 on seeds [1, 2])" in out.stdout
    run_dir = tmp_path / "first"
    spec = read_spec(str(run_dir))
    assert (spec.confirm_top, spec.confirm_seeds, spec.baseline, spec.baseline_seeds) == (2, (1, 2), True, (1, 2))
    assert spec.tpe_options == {"constant_liar": True, "multivariate": False, "n_ei_candidates": 1, "random_fraction": 0.5}
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
                "--grace-epochs", "1", "--max-concurrent", "2", "--no-dashboard")
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
