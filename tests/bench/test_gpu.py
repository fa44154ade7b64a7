"""``python -m rspose_tune.bench gpu``: the GPU check's CPU variant, without Ray (as on the bare GPU machine)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Run the check with the packages the bare GPU machine lacks made unimportable (a meta-path
# finder that refuses them, and RSPOSE_TEST_BLOCK's too), and list every attempt to import one.
# RSPOSE_TEST_MODULES=FILE: at exit, write {module: __file__} of everything imported to FILE.
BLOCKED = ("ray", "optuna", "optuna_dashboard", "moto")
RUN_BLOCKED = f"""
import atexit, importlib.abc, json, os, sys
BLOCKED = {BLOCKED!r} + tuple(filter(None, os.environ.get("RSPOSE_TEST_BLOCK", "").split(",")))
attempts = []
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on the GPU machine)", name=name)
        return None
sys.meta_path.insert(0, _Block())
atexit.register(lambda: print("BLOCKED-IMPORT-ATTEMPTS:", sorted(set(attempts))))
def _modules():
    if os.environ.get("RSPOSE_TEST_MODULES"):
        files = {{n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if m is not None}}
        open(os.environ["RSPOSE_TEST_MODULES"], "w").write(json.dumps(files))
atexit.register(_modules)
from rspose_tune.bench.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN_BLOCKED, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


def _row(out: str, label: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith(label)]
    assert len(lines) == 1, f"no single summary row {label!r} in:\n{out}"
    return lines[0][len(label):].split()


@pytest.mark.slow
def test_cpu_check_runs_all_parts_without_ray(tmp_path):
    import torch

    from rspose_tune.bench import _bundle
    from tests.bench.conftest import uncovered

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the default device would be cuda")
    modules = tmp_path / "modules.json"
    # no --device, no GPU: the CPU variant, said in one line
    proc = _run("gpu", "--out", str(tmp_path / "out"), env={"RSPOSE_TEST_MODULES": str(modules)})
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert out.count("no CUDA device visible: running the CPU variant") == 1
    assert "BLOCKED-IMPORT-ATTEMPTS: []" in out
    # every module the whole run imported belongs to the bundle or the machine's declared packages
    assert uncovered(json.loads(modules.read_text()), _bundle.derive()) == []
    # --out: the figures as JSON, and the log of everything printed
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["finished"] and result["ok"] and result["status"] == "ok" and not result["ray_imported"]
    assert result["device"] == "cpu" and result["device_note"].startswith("no CUDA device visible")
    assert sorted(result["results"]) == ["losses", "rank", "step"]
    assert result["results"]["rank"]["pg_timeout_s"] == 60.0 and result["results"]["rank"]["backend"] == "gloo"
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "=== GPU check summary ===" in log and "(c) rspose_tune.training" in log
    assert "ray imported: no" in out
    assert "=== GPU check summary ===" in out
    for part in ("(a) loss fwd+bwd on cpu", "(b) train step", "(c) rspose_tune.training: 1-rank gloo"):
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
    code = ("import sys, rspose_tune.bench._gpu, rspose_tune.bench._bundle, rspose_tune.bench._rehearse; "
            "print(sorted(m for m in ('ray', 'torch', 'mmpose', 'packaging') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parts", "losses,nope"], "--parts must be a comma-separated subset"),
        (["--device", "cpu", "--repeats", "0"], "--repeats must be >= 1"),
        (["--device", "cpu", "--embed-dims", "10", "--num-heads", "3"], "must be divisible"),
        (["--device", "cpu", "--demo-train", "8", "--data-root", "/tmp/x"], "exclude each other"),
        (["--pg-timeout", "0"], "--pg-timeout must be a number of seconds > 0"),
        (["--deadline", "-1"], "--deadline must be a number of seconds >= 0"),
        (["--out", __file__], "exists and is not a folder"),
        (["--device", "tpu"], "argument --device: invalid choice"),
        (["--rehearse", "--prepare-wheels", "x"], "--prepare-wheels and --rehearse exclude each other"),
        (["--python312", "/usr/bin/python3"], "--python312 needs --prepare-wheels or --rehearse"),
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


def test_preflight_names_every_missing_module_in_one_line(tmp_path):
    """Modules mmengine's registry would swallow (issue 15: einops, mat4py) and a deep one, all at once."""
    proc = _run("gpu", "--device", "cpu", "--out", str(tmp_path / "out"),
                env={"RSPOSE_TEST_BLOCK": "einops,mat4py,six,mmpretrain.datasets"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for name in ("einops (einops, the machine's)", "mat4py (mat4py, in the bundle)", "six (six, the machine's)",
                 "mmpretrain.datasets"):
        assert name in errors[0], (name, errors[0])
    assert "tools/gpu_install.py" in errors[0]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["status"] == "preflight failed" and not result["finished"] and len(result["preflight"]) >= 4


@pytest.mark.slow
def test_deadline_stops_the_check_and_keeps_what_it_has(tmp_path):
    # a step part that takes ~11 s on the 2-core machine (the default CPU profile finished in 1.8 s on
    # a quiet machine, so a 2-s deadline only fired under load)
    proc = _run("gpu", "--device", "cpu", "--parts", "losses,step", "--batch-size", "32", "--embed-dims", "256",
                "--deadline", "2", "--out", str(tmp_path / "o"), timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "error: --deadline 2 s reached" in proc.stderr and "Thread " in proc.stderr
    result = json.loads((tmp_path / "o" / "gpu_check.json").read_text())
    assert result["status"] == "deadline: stopped after 2 s" and not result["finished"]
    assert "error: --deadline 2 s reached" in (tmp_path / "o" / "gpu_check.log").read_text()
