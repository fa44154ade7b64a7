"""Issue 11: ``--dry-run`` prices a search without starting Ray, reading data or writing anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from rspose_tune._dryrun import asha_levels, search_epochs


def test_asha_levels_and_epochs_by_hand():
    # 8 trials, grace 2, rf 3, max 10: rungs 2, 6; ~8, 8/3, 8/9 -> at least 1 reach the levels
    levels = asha_levels(8, 10, 2, 3)
    assert [e for e, _ in levels] == [2, 6, 10]
    assert [n for _, n in levels] == pytest.approx([8, 8 / 3, 1.0])
    expected, worst = search_epochs(levels, 8, 10)
    assert expected == pytest.approx(8 * 2 + 8 / 3 * 4 + 1 * 4) and worst == 80
    # ViT-H: 64 trials, rungs 10, 30, 90, then 210
    levels = asha_levels(64, 210, 10, 3)
    assert [e for e, _ in levels] == [10, 30, 90, 210]
    expected, _ = search_epochs(levels, 64, 210)
    assert expected == pytest.approx(640 + 64 / 3 * 20 + 64 / 9 * 60 + 64 / 27 * 120)
    assert asha_levels(5, 7, 1, 2, scheduler="fifo") == [(7, 5.0)]


@pytest.mark.parametrize("bad", [dict(num_trials=0, max_epochs=1, grace=1, reduction_factor=2),
                                 dict(num_trials=1, max_epochs=4, grace=1, reduction_factor=1)])
def test_asha_levels_rejects_bad_budgets(bad):
    with pytest.raises(ValueError, match="must be"):
        asha_levels(**bad)


_PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['rspose_tune.search', *sys.argv[1:]]\n"
    "from rspose_tune.search import main\n"
    "code = main(sys.argv[1:])\n"
    "print('RAY_IMPORTED', 'ray' in sys.modules)\n"
    "sys.exit(code)\n"
)


def _dry(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    environment = {**os.environ, "HOME": str(tmp_path / "home"), **(env or {})}
    return subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=work, env=environment, capture_output=True,
                          text=True, timeout=120)


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dry_run_vit_h_without_data_prints_the_cost_and_writes_nothing(tmp_path):
    before = _files(tmp_path)
    start = time.monotonic()
    out = _dry(tmp_path, "--dry-run", "--backbone", "vit-h", "--num-trials", "64", "--storage", str(tmp_path / "store"))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "RAY_IMPORTED False" in text  # Ray is not even imported, so never started
    assert elapsed < 30  # "answers in seconds" (cold imports on a busy 2-core box included)
    assert "rung 0 at epoch   10: ~64.0" in text and "rung 2 at epoch   90: ~7.1" in text
    assert "full budget at epoch  210: ~2.4" in text
    assert "expected ~1,778, worst case 13,440" in text
    assert "confirm stage: top 2 setting(s) x seeds [1, 2] x 210 epochs = 840 epochs" in text
    assert "0.99 GPU-h per trial-epoch (RSPose paper: 4.33 days x 2 H100 / 210 epochs)" in text
    assert "search expected 1,760.0 GPU-h" in text and "total expected 3,007.4 GPU-h" in text
    # the dataset and weights are missing here: a note, not an error
    assert "note: missing here" in text and "weights: file" in text and out.stderr.count("error:") == 0
    assert _files(tmp_path) == before + ["cwd"]  # nothing written (not even the storage folder)


@pytest.mark.parametrize("backbone", ["rtmpose-m", "rtmpose-t"])
def test_dry_run_rtmpose_prints_the_rungs_of_its_420_epochs(tmp_path, backbone):
    start = time.monotonic()
    out = _dry(tmp_path, "--dry-run", "--backbone", backbone, "--num-trials", "48")
    elapsed = time.monotonic() - start
    assert out.returncode == 0 and out.stderr.count("error:") == 0, out.stderr
    assert "RAY_IMPORTED False" in out.stdout and elapsed < 30
    assert "rung 0 at epoch   10: ~48.0" in out.stdout and "rung 3 at epoch  270: ~1.8" in out.stdout
    assert "full budget at epoch  420: ~1.0" in out.stdout and "expected ~1,590, worst case 20,160" in out.stdout
    assert "confirm stage: top 3 setting(s) x seeds [1, 2, 3] x 420 epochs = 3,780 epochs" in out.stdout
    assert "GPU-hours: unknown" in out.stdout  # no measured cost: no invented figure


def test_dry_run_epoch_gpu_hours_flag_and_confirm_flags(tmp_path):
    # vit-b validates every 10 epochs: the grace period is a multiple of it (issue 17)
    out = _dry(tmp_path, "--dry-run", "--backbone", "vit-b", "--num-trials", "9", "--max-epochs", "270",
               "--grace-epochs", "30", "--reduction-factor", "3", "--epoch-gpu-hours", "0.5", "--confirm-top", "3",
               "--confirm-seeds", "4", "--no-baseline")
    assert out.returncode == 0, out.stderr
    # levels 30 (9), 90 (3), 270 (1): 270 + 180 + 180 = 630 epochs
    assert "expected ~630, worst case 2,430" in out.stdout
    assert "seeds [1, 2, 3, 4] x 270 epochs = 3,240 epochs" in out.stdout and "baseline: off" in out.stdout
    assert "GPU-hours at 0.5 GPU-h per trial-epoch (--epoch-gpu-hours)" in out.stdout
    assert "search expected 315.0 GPU-h" in out.stdout


def test_dry_run_demo_with_missing_generated_data_is_a_note(tmp_path):
    out = _dry(tmp_path, "--dry-run", "--data-root", str(tmp_path / "nodata"))
    assert out.returncode == 0, out.stderr
    assert "note: the demo data is not at" in out.stdout and not (tmp_path / "nodata").exists()
    assert "total expected 0.0 GPU-h" in out.stdout
    # the searched loss hyperparameters, pos_thr among them, and the known-good setting
    assert "; pos_thr [1e-06, 0.7] log\n" in out.stdout
    assert "known-good 0 (tried first): delta_rank=0.4," in out.stdout and "pos_thr=1e-06\n" in out.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--dry-run", "--confirm-top", "2", "--confirm-seeds", "1"], "error: --confirm-seeds must be >= 2"),
    (["--dry-run", "--confirm-top", "0", "--confirm-seeds", "3"], "error: --confirm-seeds 3 needs --confirm-top"),
    (["--dry-run", "--resume"], "error: --dry-run plans a new run"),
    (["--dry-run", "--grace-epochs", "20"], "error: --grace-epochs (20) must not exceed --max-epochs (10)"),
    (["--dry-run", "--backbone", "vith"], "error: "),
    (["--dry-run", "--warm-start", "/nonexistent/run"], "error: --warm-start '/nonexistent/run': cannot read run '/nonexistent/run'"),
    (["--epoch-gpu-hours", "1"], "error: --epoch-gpu-hours prices a search for --dry-run only"),
    (["--dry-run", "--epoch-gpu-hours", "-1"], "--epoch-gpu-hours must be a finite number >= 0"),
])
def test_bad_flags_give_one_error_line_and_exit_2(tmp_path, args, message):
    out = _dry(tmp_path, *args, "--storage", str(tmp_path / "store"))
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "store").exists()
