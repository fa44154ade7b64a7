"""``python -m rspose_tune.bench gpu``: the GPU check's CPU variant, without Ray (as on the bare GPU machine)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run the check with the packages the bare GPU machine lacks made unimportable (a meta-path
# finder that refuses them), and list every attempt to import one.
BLOCKED = ("ray", "optuna", "optuna_dashboard", "moto")
RUN_BLOCKED = f"""
import atexit, importlib.abc, sys
BLOCKED = {BLOCKED!r}
attempts = []
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on the GPU machine)")
        return None
sys.meta_path.insert(0, _Block())
atexit.register(lambda: print("BLOCKED-IMPORT-ATTEMPTS:", sorted(set(attempts))))
from rspose_tune.bench.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN_BLOCKED, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _row(out: str, label: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith(label)]
    assert len(lines) == 1, f"no single summary row {label!r} in:\n{out}"
    return lines[0][len(label):].split()


@pytest.mark.slow
def test_cpu_check_runs_all_parts_without_ray():
    proc = _run("gpu", "--device", "cpu")
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert "BLOCKED-IMPORT-ATTEMPTS: []" in out
    assert "ray imported: no" in out
    assert "=== GPU check summary ===" in out
    for part in ("(a) loss fwd+bwd on cpu", "(b) train step", "(c) trainables._rank: 1-rank gloo"):
        assert part in out
    # (a) and (b): MSE, RSPose and their ratio are finite and positive.
    for label in ("(a) loss fwd+bwd, ms", "(b) train step, s (median)", "(b) peak memory, GiB"):
        mse, rspose, ratio = _row(out, label)[:3]
        values = [float(mse), float(rspose), float(ratio.rstrip("x"))]
        assert all(math.isfinite(v) and v > 0 for v in values), (label, values)
        assert math.isclose(values[2], values[1] / values[0], rel_tol=0.02, abs_tol=2e-3), (label, values)
    # (c): the rank path reported the preset's metric after one epoch, with a checkpoint.
    rank = _row(out, "(c) 1-rank gloo trial, 1 epoch")
    assert rank[1] == "coco/AP" and 0.0 <= float(rank[2]) <= 1.0 and rank[-1] == "yes", rank
    detail = re.search(r"coco/AP (\S+) after epoch 1, .*world_size 1, .*1 report\(s\), checkpoint \[(.*?)\]", out)
    assert detail and "checkpoint.pth" in detail.group(2), out
    assert "targets not checked on cpu" in out


def test_import_is_light_and_ray_free():
    code = "import sys, rspose_tune.bench._gpu; print(sorted(m for m in ('ray', 'torch', 'mmpose') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parts", "losses,nope"], "--parts must be a comma-separated subset"),
        (["--device", "cpu", "--repeats", "0"], "--repeats must be >= 1"),
        (["--device", "cpu", "--embed-dims", "10", "--num-heads", "3"], "must be divisible"),
        (["--device", "cpu", "--demo-train", "8", "--data-root", "/tmp/x"], "exclude each other"),
    ],
)
def test_bad_flags_give_one_error_line(args, message):
    proc = _run("gpu", *args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cuda_without_a_gpu_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = _run("gpu", "--device", "cuda", timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda"), proc.stderr


def test_bundle_versions_come_from_the_lock():
    from rspose_tune.bench import _gpu

    pins = _gpu._locked_versions()
    assert {name for name, _ in _gpu.BUNDLE} <= set(pins)
    assert dict(_gpu.BUNDLE)["xtcocotools"] == "sdist"
