"""Tests of rspose_tune.export: the exported MMPose config builds, trains with MMPose's own
tools/train.py, carries the selected setting and the base's full schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mmengine.config import Config

from rspose_tune import export as ex
from tests.report.conftest import KNOWN_GOOD, OTHER, SORT_OFF, trial, write_run

BEST_DEMO = {**KNOWN_GOOD, "delta_rank": 0.55, "coeff_inst": 0.8, "pos_thr": 0.05}


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "results"
    write_run(root, "demo-run", [
        trial("pruned_high", OTHER, [0.9, 0.95], "pruned"),
        trial("best", BEST_DEMO, [0.1, 0.2, 0.5], "completed"),
        trial("second", KNOWN_GOOD, [0.1, 0.2, 0.4], "completed"),
    ], backbone="demo", gpus=0.0, cpus=1.0, max_epochs=3)
    write_run(root, "vitb-run", [
        trial("vb_best", SORT_OFF, [0.5, 0.6, 0.75], "completed"),
        trial("vb_other", KNOWN_GOOD, [0.5, 0.6, 0.70], "completed"),
    ], backbone="vit-b", max_epochs=3)
    return root


def _run_python(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_export_builds_a_runner_in_a_fresh_process(storage, tmp_path, capsys):
    assert ex.main([str(storage), "--backbone", "demo"]) == 0
    out = capsys.readouterr().out
    path = storage / "demo-run" / "export" / "demo_rspose.py"
    assert f"wrote {path}" in out and f"python tools/train.py {path.resolve()}" in out
    text = path.read_text()
    assert text.startswith("# RSPose loss setting for 'demo'") and "trial 'best'" in text
    work = tmp_path / "work"
    work.mkdir()
    proc = _run_python(f"""
        import sys
        from mmengine.config import Config
        from mmengine.runner import Runner
        assert not [m for m in sys.modules if m.startswith("rspose_tune")], "rspose_tune pre-imported"
        runner = Runner.from_cfg(Config.fromfile({str(path)!r}))
        head = runner.model.head
        loss = head.loss_module
        print("HEAD", type(head).__name__, type(loss).__name__, loss.delta_rank, head.coeff_inst, loss.pos_thr)
        hook = next(h for h in runner.hooks if type(h).__name__ == "CheckpointHook")
        print("BEST", hook.save_best, hook.rules)
    """, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAD RSPoseHeatmapHead RSPoseLoss 0.55 0.8 0.05" in proc.stdout  # pos_thr reaches the loss
    assert "BEST ['coco/AP'] ['greater']" in proc.stdout


def test_real_preset_export_has_setting_and_full_schedule(storage, tmp_path, capsys):
    out = tmp_path / "vitb.py"
    assert ex.main([str(storage), "--backbone", "vit-b", "--weights", "none", "--out", str(out),
                    "--data-root", str(tmp_path / "coco")]) == 0
    cfg = Config.fromfile(str(out), import_custom_modules=False)
    head = cfg.model.head
    assert head.type == "RSPoseHeatmapHead" and head.loss.type == "RSPoseLoss"
    assert head.loss.delta_rank == 0.4 and head.loss.coeff_rank == 1.0
    assert head.loss.coeff_sort == 0.0  # vb_best has Spatial Sort off
    assert head.delta_inst == 3.0 and head.coeff_inst == 0.25
    assert head.loss.pos_thr == 0.0  # the rows carry none: its default (label > 0)
    assert cfg.train_cfg.max_epochs == 210 and cfg.train_cfg.val_interval == 10  # the base's, not the search's 3
    multistep = next(s for s in cfg.param_scheduler if s.type == "MultiStepLR")
    assert multistep.milestones == [170, 200]
    assert cfg.custom_imports.imports[0] == ex.PLUGIN_MODULE and not cfg.custom_imports.allow_failed_imports
    assert "mmpose.engine.optim_wrappers.layer_decay_optim_wrapper" in cfg.custom_imports.imports
    assert cfg.default_hooks.checkpoint.save_best == "coco/AP" and cfg.default_hooks.checkpoint.rule == "greater"
    assert cfg.default_hooks.checkpoint.interval == 10 and "visualization" in cfg.default_hooks
    assert "rspose_tune" not in cfg and "init_cfg" not in cfg.model.backbone
    assert cfg.work_dir == "./work_dirs/vitb"
    assert cfg.train_dataloader.dataset.data_root == str(tmp_path / "coco")
    assert "does not exist on this machine" in capsys.readouterr().err


def test_export_picks_what_the_report_picks(storage):
    from rspose_tune.report import backbone_report

    runs = ex.load_runs(storage)
    for backbone, expected in (("demo", "best"), ("vit-b", "vb_best")):
        chosen, run = ex.pick_trial(backbone, runs)
        assert chosen["trial_id"] == backbone_report(backbone, runs).best_trial == expected  # not "pruned_high"


def test_export_explicit_trial_and_mode_min(tmp_path, capsys):
    write_run(tmp_path, "r", [
        trial("a", KNOWN_GOOD, [0.9, 0.5, 0.3], "completed"),
        trial("b", OTHER, [0.9, 0.5, 0.4], "completed"),
        trial("c", SORT_OFF, [0.9], "pruned"),
    ], backbone="demo", gpus=0.0, max_epochs=3, mode="min", metric_name="val/loss")
    runs = ex.load_runs(tmp_path)
    best, run = ex.pick_trial("demo", runs)
    assert (best["trial_id"], run.name) == ("a", "r")  # mode min from the run metadata
    out = tmp_path / "c.py"
    assert ex.main([str(tmp_path), "--backbone", "demo", "--trial", "c", "--out", str(out)]) == 0
    assert "warning: trial 'c' is pruned" in capsys.readouterr().err
    cfg = Config.fromfile(str(out), import_custom_modules=False)
    assert cfg.model.head.loss.coeff_sort == 0.0
    # save_best: the preset's metric and mode (what this config's evaluator reports), not the run's
    assert cfg.default_hooks.checkpoint.save_best == "coco/AP" and cfg.default_hooks.checkpoint.rule == "greater"


@pytest.mark.parametrize(
    "args, message",
    [(["--backbone", "vith"], "`--backbone` must be one of the backbones in runs"),
     (["--backbone", "vit-b"], "--weights none"),  # remote MAE weights, no local file
     (["--backbone", "vit-b", "--weights", "/nonexistent/w.pth"], "/nonexistent/w.pth"),
     (["--backbone", "demo", "--trial", "nope"], "--trial 'nope' is not a 'demo' trial"),
     (["--backbone", "demo", "--out", "x.json"], "--out must end in .py"),
     (["--backbone", "demo", "--run", "nope"], "--run ['nope'] not found")],
)
def test_export_errors_exit_2(storage, capsys, args, message):
    assert ex.main([str(storage), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_export_without_completed_trial_says_so(tmp_path, capsys):
    write_run(tmp_path, "r", [trial("p", KNOWN_GOOD, [0.5], "pruned")], backbone="demo", max_epochs=3)
    assert ex.main([str(tmp_path), "--backbone", "demo"]) == 2
    assert "pass --trial ID" in capsys.readouterr().err


def test_export_of_empty_storage_names_the_path(tmp_path, capsys):
    assert ex.main([str(tmp_path / "none"), "--backbone", "demo"]) == 2
    assert str(tmp_path / "none") in capsys.readouterr().err


@pytest.mark.slow
def test_exported_demo_config_trains_with_mmpose_tools_train(storage, tmp_path):
    import mmpose

    from rspose_tune.demo_data import generate_demo_dataset

    train_py = Path(mmpose.__file__).parent / ".mim" / "tools" / "train.py"
    if not train_py.is_file():
        pytest.skip(f"mmpose's tools/train.py is not installed at {train_py}")
    data = generate_demo_dataset(tmp_path / "demo_data", n_train=16, n_val=8, seed=0)
    out = tmp_path / "demo_rspose.py"
    assert ex.main([str(storage), "--backbone", "demo", "--out", str(out), "--data-root", str(data)]) == 0
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(train_py), str(out), "--work-dir", str(work), "--cfg-options", "train_cfg.max_epochs=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert list(work.glob("best_coco_AP_epoch_1.pth")), sorted(p.name for p in work.iterdir())


# --------------------------------------------------------------------------------------------
# Issue 17
# --------------------------------------------------------------------------------------------


def test_export_infers_the_backbone_of_a_storage_with_one(tmp_path, capsys, storage):
    write_run(tmp_path / "one", "r", [trial("a", KNOWN_GOOD, [0.1, 0.2, 0.5], "completed")], backbone="demo",
              gpus=0.0, max_epochs=3)
    assert ex.main([str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "r" / "export" / "demo_rspose.py").is_file()
    capsys.readouterr()
    assert ex.main([str(storage)]) == 2  # two backbones: the flag is needed, and the error says so
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "hold backbones ['demo', 'vit-b']: pass --backbone NAME" in err


def test_export_of_an_errored_trial_is_refused_and_writes_nothing(tmp_path, capsys):
    """Before: the file was written, then formatting the trial's None metric raised a TypeError."""
    write_run(tmp_path, "r", [
        trial("ok", KNOWN_GOOD, [0.1, 0.2, 0.5], "completed"),
        trial("boom", OTHER, [], "error", error="ValueError: boom"),
    ], backbone="demo", gpus=0.0, max_epochs=3)
    out = tmp_path / "boom.py"
    assert ex.main([str(tmp_path), "--trial", "boom", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--trial 'boom' of run 'r' failed (status error" in err
    assert not out.exists() and not (tmp_path / "r" / "export").exists()
