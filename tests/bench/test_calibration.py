"""``python -m rspose_tune.bench calibration`` (issue 9's measurements) runs and prints both decodings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_calibration_bench_prints_stock_and_calibrated_results(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rspose_tune.bench", "calibration", "--epochs", "1", "--settings", "known_good",
         "--step-repeats", "6"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = out.stdout.split("SUMMARY", 1)[1]
    assert "stock (before)" in summary and "minmax (after)" in summary and "bias -20" in summary
    assert "'variant': 'step time'" in summary


def test_unknown_setting_is_one_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rspose_tune.bench", "calibration", "--settings", "nope"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "--settings must be names from" in out.stderr and "'nope'" in out.stderr
