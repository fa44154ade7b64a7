"""Shared by the report's tests (and by the export's).

Runs are fake but written by the real :mod:`rspose_tune.results` writer (same schema and
metadata as a search), so the report reads exactly what a search would leave behind. Besides:
summaries of hand-made trials with confirm and baseline stages (``HAND``), and hand-made learning
curves for the ASHA fidelity (``CURVES``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rspose_tune import report as rep
from rspose_tune.report._summary import _params_key
from rspose_tune.results import build_metadata, make_row, write_row
from rspose_tune.spaces import PARAM_NAMES, Resources, list_presets, load_preset
from tests.conftest import KG, B, C

KNOWN_GOOD = {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": 3.0,
              "coeff_inst": 0.25}
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
              grace=1, rf=3, mode="max", metric_name="coco/AP", search_space="preset"):
    """Write a run dir like ``rspose_tune.search`` does; returns the trials folder."""
    if search_space == "preset":  # as rspose_tune.search: the preset, plus what the run really used
        preset = load_preset(backbone if backbone in list_presets() else "vit-b", weights="none")
        search_space = dataclasses.replace(preset, name=backbone, mode=mode)
    extra = None
    if dataclasses.is_dataclass(search_space):
        # what rspose_tune.search stores beside the preset: the budget and resources it really used
        extra = {"budget": {"max_epochs": max_epochs, "grace_epochs": grace, "reduction_factor": rf},
                 "resources": {"cpu": cpus, "gpu": gpus}, "seed": 0, "metric_name": metric_name,
                 "mode": mode}
        # the preset's own resources/budget differ: the report must use the run's actual ones
        search_space = dataclasses.replace(search_space, resources=Resources(gpus=99.0, cpus=99.0))
    meta = build_metadata(run=name, backbone=backbone, max_epochs=max_epochs, search_space=search_space, extra=extra)
    folder = storage / name / "trials"
    for t in trials:
        if not t["metrics"]:  # failed before its first result
            row = make_row({}, t["params"], run=name, backbone=backbone, trial_id=t["tid"], status="error",
                           error=t["error"], epoch=0)
            write_row(row, folder, metadata=meta)
            continue
        n = len(t["metrics"])
        for i, (epoch, metric, wall) in enumerate(zip(t["epochs"], t["metrics"], t["walls"])):
            result = {"epoch": epoch, "metric": metric, "metric_name": metric_name, "ar": metric + 0.05,
                      "loss": 1.0, "spearman": 0.5 + metric / 10, "wall_s": wall, "node": "n1",
                      "gpu_type": "H100" if gpus else "cpu"}
            status = t["status"] if i == n - 1 else "running"
            row = make_row(result, t["params"], run=name, backbone=backbone, trial_id=t["tid"], status=status,
                           error=t["error"] if i == n - 1 else None)
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
    ]


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "results"
    write_run(root, "vitb-run", vitb_trials())
    write_run(root, "demo-run", [
        trial("x1", KNOWN_GOOD, [0.1, 0.2, 0.3], "completed", walls=[10, 20, 30]),
        trial("x2", {**KNOWN_GOOD, "coeff_inst": None, "delta_inst": None}, [0.1, 0.35, 0.45], "completed",
              walls=[12, 24, 36]),
        trial("x3", OTHER, [0.05], "pruned", walls=[9]),
    ], backbone="demo", gpus=0.0, cpus=1.0, max_epochs=3)
    return root


# --------------------------------------------------------------------------------------------
# Hand-made trial summaries with confirm and baseline stages
# --------------------------------------------------------------------------------------------


def _independent_t(values):
    """mean ± t_{0.975, n-1} · s / √n, written out (not scipy's ttest)."""
    x = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def _trials(rows):
    """summarize_trials-like rows: (trial_id, stage, seed, params, metric, status)."""
    out = []
    for tid, stage, seed, params, metric, status in rows:
        entry = {"run": "r", "backbone": "demo", "trial_id": tid, "status": status, "stage": stage, "seed": seed,
                 "last_epoch": 10, **{n: (params or {}).get(n) for n in PARAM_NAMES}, "metric_name": "coco/AP",
                 "metric": metric, "ar": None, "spearman": None, "wall_s": 10.0, "gpus": 0.0, "cpus": 1.0,
                 "max_epochs": 10}
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
])


def _hand_run(name: str, rows: pd.DataFrame) -> "rep.RunData":
    frame = pd.DataFrame([{**{k: t[k] for k in ("backbone", "trial_id", "status", "stage", "seed", "metric_name",
                                                  "metric", *PARAM_NAMES)},
                           "run": name, "epoch": 10, "ar": None, "spearman": None, "wall_s": 10.0, "world_size": None}
                          for _, t in rows.iterrows()])
    return rep.RunData(name, f"/nowhere/{name}", frame, {},
                       rep.RunSettings(mode="max", gpus=0.0, cpus=1.0, max_epochs=10, grace_epochs=2,
                                       reduction_factor=3))


# --------------------------------------------------------------------------------------------
# Hand-made learning curves for the ASHA fidelity
# --------------------------------------------------------------------------------------------


RUNGS = [1, 3]
MAX_T = 9


def _rows(curves: dict[str, list[float]], status: dict[str, str] | None = None, stage: dict | None = None):
    rows = []
    for tid, values in curves.items():
        for epoch, value in enumerate(values, start=1):
            last = epoch == len(values)
            rows.append({"trial_id": tid, "epoch": epoch, "metric": value,
                         "status": (status or {}).get(tid, "completed" if len(values) == MAX_T else "pruned")
                         if last else "running", "stage": (stage or {}).get(tid, "search")})
    return pd.DataFrame(rows)


# Hand-made: 5 trials reach the full budget, 2 were pruned at rung 1 (excluded from ρ).
CURVES = {
    "a": [0.10, 0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60],
    "b": [0.30, 0.32, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.52],
    "c": [0.20, 0.25, 0.40, 0.42, 0.45, 0.50, 0.55, 0.58, 0.70],
    "d": [0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45],
    "e": [0.25, 0.30, 0.35, 0.40, 0.42, 0.44, 0.46, 0.48, 0.50],
    "p1": [0.01],
    "p2": [0.02, 0.03, 0.04],
}
