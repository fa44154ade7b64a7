"""Tests of rspose_tune.report: selection, Table E.8 cells, cost, noise flag, files, exit codes.

Runs are fake but written by the real :mod:`rspose_tune.results` writer (same schema and
metadata as a search), so the report reads exactly what a search would leave behind.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest

from rspose_tune import report as rep
from rspose_tune.report._summary import _params_key
from rspose_tune.results import build_metadata, make_row, write_row
from rspose_tune.spaces import Resources, list_presets, load_preset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KNOWN_GOOD = {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": 3.0,
              "coeff_inst": 0.25}  # fmt: skip
SORT_OFF = {**KNOWN_GOOD, "delta_sort": None, "coeff_sort": 0.0}
OTHER = {**KNOWN_GOOD, "delta_rank": 0.7, "coeff_inst": 1.5}


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def trial(tid, params, metrics, status, walls=None, epochs=None, error=None):
    """A trial's rows: ``metrics[i]`` at ``epochs[i]`` (default 1..n), last row gets ``status``."""
    epochs = list(epochs or range(1, len(metrics) + 1))
    walls = list(walls or [100.0 * e for e in epochs])
    return dict(tid=tid, params=params, metrics=list(metrics), status=status, walls=walls, epochs=epochs, error=error)


def write_run(storage: Path, name: str, trials, *, backbone="vit-b", gpus=2.0, cpus=4.0, max_epochs=9,
              grace=1, rf=3, mode="max", metric_name="coco/AP", search_space="preset"):  # fmt: skip
    """Write a run dir like ``rspose_tune.search`` does; returns the trials folder."""
    if search_space == "preset":  # as rspose_tune.search: the preset, plus what the run really used
        preset = load_preset(backbone if backbone in list_presets() else "vit-b", weights="none")
        search_space = dataclasses.replace(preset, name=backbone, mode=mode)
    extra = None
    if dataclasses.is_dataclass(search_space):
        # what rspose_tune.search stores beside the preset: the budget and resources it really used
        extra = {"budget": {"max_epochs": max_epochs, "grace_epochs": grace, "reduction_factor": rf},
                 "resources": {"cpu": cpus, "gpu": gpus}, "seed": 0, "metric_name": metric_name,
                 "mode": mode}  # fmt: skip
        # the preset's own resources/budget differ: the report must use the run's actual ones
        search_space = dataclasses.replace(search_space, resources=Resources(gpus=99.0, cpus=99.0))
    meta = build_metadata(run=name, backbone=backbone, max_epochs=max_epochs, search_space=search_space, extra=extra)
    folder = storage / name / "trials"
    for t in trials:
        if not t["metrics"]:  # failed before its first result
            row = make_row({}, t["params"], run=name, backbone=backbone, trial_id=t["tid"], status="error",
                           error=t["error"], epoch=0)  # fmt: skip
            write_row(row, folder, metadata=meta)
            continue
        n = len(t["metrics"])
        for i, (epoch, metric, wall) in enumerate(zip(t["epochs"], t["metrics"], t["walls"])):
            result = {"epoch": epoch, "metric": metric, "metric_name": metric_name, "ar": metric + 0.05,
                      "loss": 1.0, "spearman": 0.5 + metric / 10, "wall_s": wall, "node": "n1",
                      "gpu_type": "H100" if gpus else "cpu"}  # fmt: skip
            status = t["status"] if i == n - 1 else "running"
            row = make_row(result, t["params"], run=name, backbone=backbone, trial_id=t["tid"], status=status,
                           error=t["error"] if i == n - 1 else None)  # fmt: skip
            write_row(row, folder, metadata=meta)
    return folder


def vitb_trials():
    """max_epochs 9, rungs 1 and 3. The pruned trial leads at low fidelity but must not win."""
    return [
        trial("a_pruned", OTHER, [0.90, 0.95, 0.97], "pruned"),
        trial("b_best", SORT_OFF, [0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.75, 0.78, 0.800], "completed"),
        # resumed after epoch 5: wall_s restarts (epoch 6 at 40 s since the new process started)
        trial("c_known", KNOWN_GOOD, [0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.75, 0.78, 0.790], "completed",
              walls=[100, 200, 300, 400, 500, 40, 140, 240, 340]),
        trial("d_known", KNOWN_GOOD, [0.2, 0.4, 0.6, 0.65, 0.7, 0.72, 0.75, 0.78, 0.796], "completed"),
        trial("e_known", KNOWN_GOOD, [0.2, 0.4, 0.6, 0.65, 0.7, 0.72, 0.75, 0.78, 0.784], "completed"),
        trial("f_pruned", {**OTHER, "delta_rank": 0.2}, [0.1], "pruned"),
        trial("g_error", {**OTHER, "delta_rank": 0.9}, [], "error", error="RuntimeError: CUDA OOM"),
    ]  # fmt: skip


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "results"
    write_run(root, "vitb-run", vitb_trials())
    write_run(root, "demo-run", [
        trial("x1", KNOWN_GOOD, [0.1, 0.2, 0.3], "completed", walls=[10, 20, 30]),
        trial("x2", {**KNOWN_GOOD, "coeff_inst": None, "delta_inst": None}, [0.1, 0.35, 0.45], "completed",
              walls=[12, 24, 36]),
        trial("x3", OTHER, [0.05], "pruned", walls=[9]),
    ], backbone="demo", gpus=0.0, cpus=1.0, max_epochs=3)  # fmt: skip
    return root


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "walls, expected",
    [([100, 200, 300], 300), ([100, 200, 40, 140], 340), ([], 0.0), ([None, 50.0, float("nan")], 50.0),
     ([10, 5, 2], 17)],
)  # fmt: skip
def test_trial_wall_seconds(walls, expected):
    assert rep.trial_wall_seconds(walls) == pytest.approx(expected)


@pytest.mark.parametrize(
    "name, meta_mode, expected",
    [("coco/AP", None, "max"), ("PCK", None, "max"), ("crowdpose/AP", None, "max"), ("val/loss", None, "min"),
     ("NME", None, "min"), ("coco/AP", "min", "min"), ("val/loss", "max", "max"), (None, None, "max")],
)  # fmt: skip
def test_metric_mode(name, meta_mode, expected):
    assert rep.metric_mode(name, meta_mode) == expected


@pytest.mark.parametrize(
    "budget, expected",
    [((210, 10, 3), [10, 30, 90]), ((9, 1, 3), [1, 3]), ((10, 2, 3), [2, 6]), ((10, 10, 3), []),
     ((None, 10, 3), []), ((210, None, 3), [])],
)  # fmt: skip
def test_asha_rungs(budget, expected):
    assert rep.asha_rungs(*budget) == expected


def _summary(values_by_params, status="completed"):
    rows = []
    for i, (params, value) in enumerate(values_by_params):
        entry = {"run": "r", "trial_id": f"t{i}", "status": status, "metric": value, **params}
        entry["params_key"] = _params_key(entry)
        rows.append(entry)
    return pd.DataFrame(rows)


def test_estimate_noise_pooled_std_against_independent_computation():
    trials = _summary([(KNOWN_GOOD, 0.70), (KNOWN_GOOD, 0.72), (KNOWN_GOOD, 0.74), (OTHER, 0.60), (OTHER, 0.61),
                       (SORT_OFF, 0.9)])  # fmt: skip
    noise = rep.estimate_noise(trials)
    ss = (0.02**2 + 0 + 0.02**2) + (0.005**2 * 2)
    assert noise.dof == 3 and noise.groups == 2
    assert noise.sigma == pytest.approx(math.sqrt(ss / 3))


def test_estimate_noise_without_repeats_is_unknown():
    noise = rep.estimate_noise(_summary([(KNOWN_GOOD, 0.7), (OTHER, 0.6)]))
    assert noise.sigma is None and noise.dof == 0
    flag, why = rep.noise_flag(0.7, 0.6, noise)
    assert flag == "noise unknown" and "no setting was evaluated more than once" in why


def test_estimate_noise_ignores_pruned_repeats():
    noise = rep.estimate_noise(_summary([(KNOWN_GOOD, 0.1), (KNOWN_GOOD, 0.5)], status="pruned"))
    assert noise.sigma is None


@pytest.mark.parametrize(
    "best, second, sigma, expected",
    [(0.80, 0.79, 0.01, "within noise"),  # band 1.96*sqrt(2)*0.01 = 0.0277
     (0.80, 0.75, 0.01, "beyond noise"),
     (0.80, 0.80 - 1.96 * math.sqrt(2) * 0.01, 0.01, "within noise"),  # on the edge
     (0.80, None, 0.01, "no runner-up"),
     (0.30, 0.31, 0.001, "beyond noise")],  # mode min: the gap is absolute
)  # fmt: skip
def test_noise_flag(best, second, sigma, expected):
    flag, _ = rep.noise_flag(best, second, rep.Noise(sigma=sigma, dof=2, groups=1))
    assert flag == expected


def test_select_best_skips_pruned_and_runner_up_differs_in_params():
    trials = _summary([(OTHER, 0.99), (KNOWN_GOOD, 0.8), (KNOWN_GOOD, 0.79), (SORT_OFF, 0.7)])
    trials.loc[0, "status"] = "pruned"
    best = rep.select_best(trials, "max")
    assert best["trial_id"] == "t1"
    assert rep.runner_up(trials, best, "max")["trial_id"] == "t3"  # t2 repeats t1's setting
    assert rep.select_best(trials, "min")["trial_id"] == "t3"
    assert rep.select_best(trials[trials.status == "pruned"], "max") is None
    with pytest.raises(ValueError, match="must be 'max' or 'min'"):
        rep.select_best(trials, "maximize")


def test_spearman_importance_uses_the_most_reported_epoch():
    rows = []
    for i, delta in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
        params = {**KNOWN_GOOD, "delta_rank": delta, "coeff_sort": None if i == 0 else 2.0,
                  "delta_sort": None if i == 0 else 1.5, "pos_thr": 0.0}  # fmt: skip
        rows.append({"run": "r", "trial_id": f"t{i}", "epoch": 1, "metric": delta, **params})
        if i < 2:
            rows.append({"run": "r", "trial_id": f"t{i}", "epoch": 3, "metric": 1 - delta, **params})
    values, epoch, n = rep.spearman_importance(pd.DataFrame(rows))
    assert epoch == 1 and n == 5
    assert values["delta_rank"] == pytest.approx(1.0)
    assert math.isnan(values["coeff_rank"]) and math.isnan(values["pos_thr"])  # fixed
    assert math.isnan(values["delta_sort"])  # constant where on; off rows left out
    assert values["coeff_sort"] == pytest.approx(abs(pd.Series([0, 2, 2, 2, 2.0]).rank().corr(pd.Series(range(5)))))


# --------------------------------------------------------------------------------------------
# Whole report
# --------------------------------------------------------------------------------------------


def test_backbone_report_selection_counts_and_cost(storage):
    runs = rep.load_runs(storage)
    assert [r.name for r in runs] == ["demo-run", "vitb-run"]
    r = rep.backbone_report("vit-b", runs)
    assert r.best_trial == "b_best" and r.metric == pytest.approx(0.8)  # not a_pruned (0.97 at epoch 3)
    assert r.params["coeff_sort"] is None and r.params["delta_sort"] is None
    assert r.params["delta_rank"] == 0.4 and r.params["coeff_inst"] == 0.25
    assert (r.trials, r.completed, r.pruned, r.errors, r.running) == (7, 4, 2, 1, 0)
    assert r.mode == "max" and r.metric_name == "coco/AP" and r.gpus_per_trial == 2
    # independent arithmetic: wall seconds per trial (c_known resumed after epoch 5)
    walls = {"a": 300, "b": 900, "c": 500 + 340, "d": 900, "e": 900, "f": 100, "g": 0}
    epochs = {"a": 3, "b": 9, "c": 9, "d": 9, "e": 9, "f": 1, "g": 0}
    assert r.gpu_hours == pytest.approx(sum(walls.values()) * 2 / 3600)
    assert r.cpu_hours == pytest.approx(sum(walls.values()) * 4 / 3600)
    full = sum(walls[k] / epochs[k] * 9 * 2 for k in walls if epochs[k])
    assert r.full_budget_gpu_hours == pytest.approx(full / 3600)
    # runner-up: c/d/e share KNOWN_GOOD (0.790, 0.796, 0.784); best is d at 0.796
    assert r.runner_up_trial == "d_known" and r.runner_up_metric == pytest.approx(0.796)
    sigma = math.sqrt(((0.790 - 0.79) ** 2 + (0.796 - 0.79) ** 2 + (0.784 - 0.79) ** 2) / 2)
    assert r.noise_sigma == pytest.approx(sigma) and r.noise_dof == 2
    assert r.noise_flag == "within noise"  # gap 0.004 <= 1.96*sqrt(2)*0.006


def test_report_mode_min_prefers_the_lowest_completed(tmp_path):
    write_run(tmp_path, "r", [
        trial("lo_pruned", OTHER, [0.01], "pruned"),
        trial("hi", KNOWN_GOOD, [0.9, 0.5, 0.4], "completed"),
        trial("lo", SORT_OFF, [0.9, 0.5, 0.3], "completed"),
    ], max_epochs=3, mode="min", metric_name="val/loss")  # fmt: skip
    r = rep.backbone_report("vit-b", rep.load_runs(tmp_path))
    assert r.mode == "min" and r.best_trial == "lo" and r.runner_up_trial == "hi" and r.noise_flag == "noise unknown"


def test_report_without_budget_metadata_infers_mode_and_marks_cost_unknown(tmp_path):
    write_run(tmp_path, "r", [trial("t", KNOWN_GOOD, [0.5, 0.6], "completed")], backbone="custom", max_epochs=2,
              search_space={"delta_rank": {"low": 0.1}})  # fmt: skip
    r = rep.backbone_report("custom", rep.load_runs(tmp_path))
    assert r.mode == "max" and r.gpu_hours is None and r.full_budget_gpu_hours is None
    assert any("inferred" in n for n in r.notes)
    assert "?" in rep.format_markdown([r])


def test_table_cells_like_table_e8(storage):
    runs = rep.load_runs(storage)
    reports = [rep.backbone_report(b, runs) for b in ("demo", "vit-b")]
    text = rep.format_markdown(reports)
    lines = text.splitlines()
    assert lines[0].startswith("| Backbone") and "S. Rank δ / c" in lines[0] and set(lines[1]) <= {"|", "-"}
    demo = next(line for line in lines if line.startswith("| demo"))
    vitb = next(line for line in lines if line.startswith("| vit-b"))
    cells = [c.strip() for c in vitb.strip("|").split("|")]
    assert cells[1:5] == ["0.4 / 1.0", rep.OFF, "3.0 / 0.25", "0.0"]  # pos_thr: its default, 0
    assert lines[0].split("|")[5].strip() == "Pos. thr"
    assert cells[5] == "coco/AP 0.8" and cells[8] == "7 (1 failed)" and cells[9] == "2"
    assert cells[10] == f"{(300 + 900 + 840 + 900 + 900 + 100) * 2 / 3600:.2f}"
    demo_cells = [c.strip() for c in demo.strip("|").split("|")]
    assert demo_cells[1:5] == ["0.4 / 1.0", "1.5 / 2.0", rep.OFF, "0.0"] and demo_cells[10] == "0.00"
    assert demo_cells[12] == f"{(36 + 30 + 9) / 3600:.2f}" and demo_cells[13] == "noise unknown"
    notes = rep.format_notes(reports)
    assert "CPU-only trials: 0 GPU-h" in notes and "seed noise unknown" in notes


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


def test_importance_uses_optuna_journal_when_enough_complete_trials(storage):
    import optuna

    run = next(r for r in rep.load_runs(storage) if r.name == "vitb-run")
    fallback = rep.param_importance(run)
    assert fallback.method.startswith("fallback: |Spearman ρ|") and "no optuna.journal" in fallback.method

    journal = storage / "vitb-run" / "optuna.journal"
    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    study = optuna.create_study(study_name="rspose", direction="maximize",
                                storage=optuna.storages.JournalStorage(backend),
                                sampler=optuna.samplers.RandomSampler(seed=1))  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def add(n, state=optuna.trial.TrialState.COMPLETE):
        for _ in range(n):
            t = study.ask()
            x = t.suggest_float("delta_rank", 0.1, 1.0)
            t.suggest_float("delta_sort", 0.1, 3.0, log=True)
            study.tell(t, 1 - abs(x - 0.4) if state == optuna.trial.TrialState.COMPLETE else None, state=state)

    add(5)
    add(4, optuna.trial.TrialState.PRUNED)  # pruned trials do not count
    few = rep.param_importance(run)
    assert few.method.startswith("fallback") and f"5 complete trials < {rep.MIN_COMPLETED_FOR_OPTUNA}" in few.method
    add(rep.MIN_COMPLETED_FOR_OPTUNA - 5)
    enough = rep.param_importance(run)
    assert enough.method.startswith("Optuna PED-ANOVA") and set(enough.values) == {"delta_rank", "delta_sort"}
    add(30)  # enough trials for the estimate to find the one parameter that matters
    full = rep.param_importance(run)
    assert full.values["delta_rank"] > 2 * full.values["delta_sort"]


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
