"""``python -m rspose_tune.bench ablation`` (issue 16): the table's rows and numbers, and bad flags."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest


def _bench(*args: str, cwd, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rspose_tune.bench", "ablation", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _localization_by_hand(predictions: dict, ann_file: str) -> dict[str, float]:
    """KS, PCK@0.05 and median pixel error, keypoint by keypoint (independent of the bench's code)."""
    # COCO's 17 keypoint sigmas (pycocotools / mmpose configs/_base_/datasets/coco.py)
    sigmas = [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089]
    anns = {a["id"]: a for a in json.load(open(ann_file))["annotations"]}
    ks, hits, errs = [], [], []
    for ann_id, pred in predictions.items():
        a = anns[int(ann_id)]
        side = max(a["bbox"][2], a["bbox"][3])
        for k in range(17):
            x, y, v = a["keypoints"][3 * k : 3 * k + 3]
            if v <= 0:
                continue
            px, py = pred["keypoints"][k]
            d = math.hypot(px - x, py - y)
            ks.append(math.exp(-d * d / (2 * a["area"] * (2 * sigmas[k]) ** 2)))
            hits.append(d < 0.05 * side)
            errs.append(d)
    return dict(KS=sum(ks) / len(ks), PCK=sum(hits) / len(hits), px_err=float(np.median(errs)))


@pytest.mark.slow
def test_ablation_smoke_prints_every_row_and_numbers_that_recompute(tmp_path):
    from scipy import stats

    out = _bench("--train-images", "16", "--val-images", "6", "--epochs", "1", "--seeds", "2",
                 "--pos-thr", "0,exp(-4.5)", "--losses", "stock,rank,rs_inst", "--data-root", str(tmp_path / "data"),
                 "--json", str(tmp_path / "abl.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("ABLATION\n", 1)[1]
    lines = table.splitlines()
    assert lines[0].startswith("bench ablation, preset demo: 1 epochs, 2 seeds")
    body = [ln for ln in lines[3:] if re.match(r"^(stock|Rank|RS\+Inst)", ln)]
    labels = [" ".join(ln.split()[:4]) if not ln.startswith("stock") else ln.split()[0] for ln in body]
    assert labels == ["stock", "Rank label > 0", "RS+Inst label > 0", "Rank label > exp(-4.5)",
                      "RS+Inst label > exp(-4.5)"], table
    assert body[0].startswith("stock (KeypointMSELoss)") and "label > exp(-4.5) 3σ" in body[3]

    data = json.loads((tmp_path / "abl.json").read_text())
    runs = data["runs"]
    assert len(runs) == 2 * 5 and sorted({r["seed"] for r in runs}) == [0, 1]
    assert {(r["loss"], r["pos_thr"]) for r in runs} == {
        ("stock", None), ("rank", 0.0), ("rs_inst", 0.0), ("rank", math.exp(-4.5)), ("rs_inst", math.exp(-4.5))}
    metrics = ["AP", "AR", "AP_const", "KS", "PCK", "px_err"]
    n_val_anns = len(json.load(open(data["val_ann"]))["annotations"])
    for run in runs:
        # every validation instance was predicted, and the localization measures recompute by hand
        assert len(run["predictions"]) == n_val_anns
        by_hand = _localization_by_hand(run["predictions"], data["val_ann"])
        for m in ("KS", "PCK", "px_err"):
            # (the bench uses the dataset's float32 sigmas, as CocoMetric does)
            assert run[m] == pytest.approx(by_hand[m], rel=1e-6, abs=1e-9), (run["row"], m)
        assert all(0 <= run[m] <= 1 for m in ("AP", "AR", "AP_const", "KS", "PCK"))
    # the printed cells are the mean ± 95 % t half-width of the per-seed values
    for line, key in zip(body, [r["key"] for r in data["rows"]]):
        values = {m: [r[m] for r in runs if r["row"] == key] for m in metrics}
        cells = re.findall(r"(-?\d+\.\d+) ± (–|\d+\.\d+)", line)
        assert len(cells) == len(metrics), line
        for m, (mean, hw) in zip(metrics, cells):
            v = np.asarray(values[m])
            digits = 2 if m == "px_err" else 3
            assert float(mean) == pytest.approx(round(v.mean(), digits), abs=1.01 * 10**-digits / 2)
            want_hw = stats.t.ppf(0.975, 1) * v.std(ddof=1) / math.sqrt(2)
            assert float(hw) == pytest.approx(round(want_hw, digits), abs=1.01 * 10**-digits / 2), (key, m)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1"], "--seeds must be an integer >= 2, got 1"),
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--preset", "vit-b"], "argument --preset: invalid choice: 'vit-b'"),
        (["--pos-thr", "0,1.5"], "--pos-thr must be a comma-separated list of numbers in [0, 1) or exp(-X), got '1.5'"),
        (["--pos-thr", "0,0"], "--pos-thr lists a threshold twice"),
        (["--losses", "rank,mse"], "--losses must be distinct names from"),
        (["--val-images", "5"], "--val-images needs --train-images"),
        (["--json", "/nonexistent-dir/x.json"], "--json must be a file in an existing folder"),
    ],
)
def test_bad_flags_are_one_error_line(tmp_path, args, message):
    out = _bench(*args, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
