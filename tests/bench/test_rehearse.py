"""The GPU machine's route, rehearsed on this CPU machine (``bench gpu --rehearse``): real pip, venvs, MMPose.

A python3.12 venv with only the GPU machine's declared packages (PyPI's torch 2.11.0 with its CUDA
libraries, torchvision 0.26.0, numpy 2.5.2, ...), the bundle prepared and installed exactly as the
docs/gpu_check.md says, ``bench gpu --device cpu`` in it, and xtcocotools compiled from the sdist without
setuptools. Needs python3.12 and the package registries; about 7 minutes on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rspose_tune.bench import _bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rehearsal_of_the_gpu_machine(tmp_path):
    if _bundle.find_python312() is None:
        pytest.fail("the rehearsal needs a CPython 3.12 (python3.12 on PATH or under pyenv)")
    work = tmp_path / "rehearsal"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "rspose_tune.bench", "gpu", "--rehearse", "--rehearse-dir",
                               str(work)], cwd=REPO, capture_output=True, text=True, timeout=1700, check=False)
        wall = time.perf_counter() - t0
        assert proc.returncode == 0, f"stdout:\n{proc.stdout[-5000:]}\nstderr:\n{proc.stderr[-5000:]}"
        report = json.loads((work / "rehearsal.json").read_text())
        print(f"rehearsal {wall:.0f} s: {report['times_s']}")
        # the machine venv held declared packages only, at the declared versions
        held = report["machine"]["packages"]
        assert held["torch"] == "2.11.0" and held["torchvision"] == "0.26.0" and held["numpy"] == "2.5.2"
        assert set(held) <= {_bundle.canonical(n) for n in _bundle.MACHINE_PACKAGES}
        assert not {"mmpose", "mmengine", "ray", "xtcocotools"} & set(held)
        # the check ran there, on the machine's torch, from the carried bundle
        assert report["check"]["python"].startswith("3.12.") and report["check"]["versions"]["torch"].startswith("2.11.0")
        assert report["check"]["versions"]["mmpose"] == "1.3.2"
        assert report["bundle"]["xtcocotools_wheel"].startswith("xtcocotools-1.14.3-cp312-cp312-")
        assert "(xtcocotools from its sdist" in report["fallback"]["line"]
        assert "rehearsal passed in" in proc.stdout and "ray imported: no" in proc.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)  # ~5 GiB: do not leave it to pytest's tmp retention


def test_bench_gpu_rehearsal_bad_input_goes_through_the_one_handler(capsys):
    """The rehearsal printed its own ``error:`` lines; it raises now, and ``bench``'s handler prints."""
    from rspose_tune.bench.__main__ import main

    assert main(["gpu", "--rehearse", "--python312", "/nonexistent/python3.12"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --rehearse needs a CPython 3.12 (python3.12 on PATH or under pyenv; or --python312 PATH)"]
