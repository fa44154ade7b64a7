"""``python -m rspose_tune.bench ablation``: the RSPose paper's Table 6 (loss components) on CPU,
at several positive supports of the Spatial losses (issue 16).

Rows: the preset's stock loss (``build_config(preset, None)``: KeypointMSELoss for ``demo``,
KLDiscretLoss for ``demo-simcc`` and ``demo-rtmcc``), then, at each positive threshold (``--pos-thr``; labels above
it are the positives, in label units after the per-group normalisation), Spatial Rank alone,
Rank + Sort, and Rank + Sort + Instance Sort. The components' deltas and coefficients are the
preset's first known-good setting (the paper's), with the missing components switched off.
Every row is trained on ``--seeds`` training seeds for the preset's epochs, with the preset's
recipe untouched, and validated once at the end with ground-truth boxes.

Per row, the mean and the 95 % t-interval over the seeds (scipy.stats.t) of:

- ``AP``, ``AR``: coco/AP and coco/AR as the search reports them (MMPose's CocoMetric on the
  head's own confidences);
- ``AP const``: the same CocoMetric with every keypoint score set to 1, so that only the
  positions count;
- localization only, independent of any confidence, over every labelled (v > 0) keypoint of the
  validation set: ``KS`` = mean per-keypoint similarity exp(-d^2 / (2 area (2 sigma_k)^2))
  (COCO's OKS term, COCO sigmas, the annotation's area), ``PCK`` = fraction with d < 0.05 x
  max(bbox width, height), ``px err`` = median d (original-image pixels).

Prints one JSON line per run while it runs, then the table. ``--json PATH`` also writes every
run's values and predictions. The training machinery is ``bench calibration``'s
(:func:`rspose_tune.bench._calibration.build_runner`). Run with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from rspose_tune._flags import int_at_least
from rspose_tune.spaces import COMPONENTS

PRESETS = ("demo", "demo-simcc", "demo-rtmcc")
#: Loss rows, in the paper's Table 6 order: name -> (label, components kept on).
LOSSES = {
    "stock": ("stock", ()),
    "rank": ("Rank", ("rank",)),
    "rank_sort": ("Rank+Sort", ("rank", "sort")),
    "rs_inst": ("RS+Inst", ("rank", "sort", "inst")),
}
#: Default positive thresholds: every non-zero label (the paper's), the 3 sigma disc, label > 0.5.
DEFAULT_POS_THR = "0,exp(-4.5),0.5"
METRICS = ("AP", "AR", "AP_const", "KS", "PCK", "px_err")
HEADERS = {"AP": "AP", "AR": "AR", "AP_const": "AP const", "KS": "KS", "PCK": "PCK@.05", "px_err": "px err"}
PCK_FRACTION = 0.05


class _Parser(argparse.ArgumentParser):
    """Bad flags give one ``error:`` line (naming the flag and the rule) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse_threshold(text: str) -> float:
    """A positive threshold: a number in [0, 1) or ``exp(-X)``."""
    t = text.strip()
    try:
        value = math.exp(-float(t[5:-1])) if t.startswith("exp(-") and t.endswith(")") else float(t)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(
            f"--pos-thr must be a comma-separated list of numbers in [0, 1) or exp(-X), got {text!r}")
    return value


def _thresholds(text: str) -> tuple[float, ...]:
    values = tuple(parse_threshold(t) for t in text.split(","))
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"--pos-thr lists a threshold twice: {text!r}")
    return values


def _losses(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    bad = [n for n in names if n not in LOSSES]
    if bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"--losses must be distinct names from {list(LOSSES)}, got {text!r}")
    return tuple(n for n in LOSSES if n in names)  # table order


def support_label(thr: float) -> str:
    """How a threshold reads in the table."""
    if thr == 0:
        return "label > 0"
    x = -math.log(thr)
    if abs(x - round(x * 2) / 2) < 1e-9:
        return f"label > exp(-{x:g})" + (" 3σ" if abs(x - 4.5) < 1e-9 else "")
    return f"label > {thr:g}"


@dataclass(frozen=True)
class Row:
    loss: str  # a LOSSES key
    pos_thr: float | None  # None: the stock loss

    @property
    def key(self) -> str:
        return "stock" if self.loss == "stock" else f"{self.loss}@{self.pos_thr!r}"


def row_params(known_good: dict, loss: str) -> dict | None:
    """The loss settings of a row: the known-good values with the components not kept off."""
    if loss == "stock":
        return None
    keep = LOSSES[loss][1]
    params = dict(known_good)
    for c in COMPONENTS:
        if c not in keep:
            params[f"coeff_{c}"], params[f"delta_{c}"] = 0.0, None
        elif not params.get(f"coeff_{c}"):
            raise ValueError(f"the preset's known-good setting has `coeff_{c}` off; row {loss!r} needs it on")
    return params


def t_interval(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (NaN half-width for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = v.size
    if n < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))


def localization(preds: dict[int, np.ndarray], ann_file: str | Path, sigmas: np.ndarray) -> dict[str, float]:
    """KS, PCK@0.05 (of max bbox side) and median pixel error of predictions ``{ann_id: (K, 2)}``
    against the annotations' labelled (v > 0) keypoints."""
    anns = {a["id"]: a for a in json.loads(Path(ann_file).read_text())["annotations"]}
    ks, hit, err = [], [], []
    variances = (2 * np.asarray(sigmas, dtype=float)) ** 2
    for ann_id, xy in preds.items():
        a = anns[ann_id]
        gt = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        lab = gt[:, 2] > 0
        if not lab.any():
            continue
        d = np.linalg.norm(np.asarray(xy, dtype=float) - gt[:, :2], axis=1)
        area = float(a["area"])
        ks.append(np.exp(-(d**2) / variances / (area + np.spacing(1)) / 2)[lab])
        hit.append(d[lab] < PCK_FRACTION * max(a["bbox"][2], a["bbox"][3]))
        err.append(d[lab])
    if not ks:
        raise ValueError(f"no labelled keypoint among {len(preds)} predictions")
    return dict(KS=float(np.concatenate(ks).mean()), PCK=float(np.concatenate(hit).mean()),
                px_err=float(np.median(np.concatenate(err))))


def evaluate_run(runner) -> dict:
    """Validate a trained Runner: its own metrics, the constant-score AP and localization."""
    from mmengine.hooks import Hook

    captured: list = []

    class _Capture(Hook):
        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            captured.append((data_batch, outputs))

    hook = _Capture()
    runner.register_hook(hook, priority="LOWEST")
    try:
        metrics = runner.val()
    finally:
        runner._hooks.remove(hook)
    dataset = runner.val_dataloader.dataset
    coco_cfg = [e for e in (runner.cfg.val_evaluator if isinstance(runner.cfg.val_evaluator, list)
                            else [runner.cfg.val_evaluator]) if e.get("type") == "CocoMetric"]
    evaluator = runner.build_evaluator([copy.deepcopy(dict(coco_cfg[0]))])
    evaluator.dataset_meta = dataset.metainfo
    preds: dict[int, np.ndarray] = {}
    scores: dict[int, list] = {}
    for data_batch, outputs in captured:
        const = []
        for sample in outputs:
            ann_id = int(sample.metainfo["id"])
            preds[ann_id] = sample.pred_instances.keypoints[0].astype(float)
            scores[ann_id] = np.asarray(sample.pred_instances.keypoint_scores[0], dtype=float).tolist()
            c = copy.deepcopy(sample)
            c.pred_instances.keypoint_scores = np.ones_like(c.pred_instances.keypoint_scores)
            const.append(c)
        evaluator.process(data_samples=const, data_batch=data_batch)
    const_metrics = evaluator.evaluate(len(dataset))
    ann_file = runner.cfg.val_evaluator[0]["ann_file"] if isinstance(runner.cfg.val_evaluator, list) \
        else runner.cfg.val_evaluator["ann_file"]
    loc = localization(preds, ann_file, dataset.metainfo["sigmas"])
    return dict(AP=float(metrics["coco/AP"]), AR=float(metrics["coco/AR"]), AP_const=float(const_metrics["coco/AP"]),
                **loc, predictions={str(k): dict(keypoints=v.tolist(), scores=scores[k]) for k, v in preds.items()})


def format_table(preset_name: str, stock_name: str, rows: list[Row], results: dict[str, list[dict]],
                 epochs: int, seeds: int) -> str:
    """The ablation table: one line per row, mean ± 95 % t half-width over the seeds."""
    head = f"{'loss':24s} {'positives':20s} {'n':>2s} " + " ".join(f"{HEADERS[m]:>13s}" for m in METRICS)
    lines = [f"bench ablation, preset {preset_name}: {epochs} epochs, {seeds} seeds; mean ± 95 % t half-width",
             head, "-" * len(head)]
    for row in rows:
        runs = results.get(row.key, [])
        name = f"stock ({stock_name})" if row.loss == "stock" else LOSSES[row.loss][0]
        support = "(its own target)" if row.pos_thr is None else support_label(row.pos_thr)
        cells = []
        for m in METRICS:
            if not runs:
                cells.append(f"{'–':>13s}")
                continue
            mean, hw = t_interval([r[m] for r in runs])
            digits = 2 if m == "px_err" else 3
            hw_text = "–" if math.isnan(hw) else f"{hw:.{digits}f}"
            cells.append(f"{mean:.{digits}f} ± {hw_text}".rjust(13))
        lines.append(f"{name:24s} {support:20s} {len(runs):2d} " + " ".join(cells))
    lines.append("AP, AR: coco/AP, coco/AR (GT boxes, the head's confidences); AP const: every keypoint score 1; "
                 "KS: mean per-keypoint OKS term; PCK@.05: d < 0.05 max(bbox side); px err: median (pixels)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m rspose_tune.bench ablation", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="demo")
    ap.add_argument("--seeds", type=int_at_least("--seeds", 2), default=3, help="training seeds per row (default 3)")
    ap.add_argument("--epochs", type=int_at_least("--epochs", 1), default=None,
                    help="epochs per run (default: the preset's budget)")
    ap.add_argument("--pos-thr", type=_thresholds, default=_thresholds(DEFAULT_POS_THR),
                    help=f"positive thresholds, comma-separated numbers in [0, 1) or exp(-X) (default {DEFAULT_POS_THR})")
    ap.add_argument("--losses", type=_losses, default=tuple(LOSSES), help=f"rows, from {list(LOSSES)} (default all)")
    ap.add_argument("--train-images", type=int_at_least("--train-images", 1), default=None,
                    help="generate a smaller demo dataset (default: the preset's data, 400 images)")
    ap.add_argument("--val-images", type=int_at_least("--val-images", 1), default=None,
                    help="with --train-images: validation images (default 100)")
    ap.add_argument("--data-root", default=None, help="demo data folder (default: the preset's)")
    ap.add_argument("--json", default=None, help="also write every run's values and predictions to this file")
    args = ap.parse_args(argv)
    if args.val_images is not None and args.train_images is None:
        ap.error("--val-images needs --train-images")
    if args.json is not None and not Path(args.json).parent.is_dir():
        ap.error(f"--json must be a file in an existing folder, got {args.json!r}")

    from rspose_tune.demo_data import default_demo_root, generate_demo_dataset
    from rspose_tune.mmpose_adapter import setup_mmpose
    from rspose_tune.spaces import load_preset

    from ._calibration import build_runner, ensure_demo_data

    data_root = args.data_root
    if args.train_images is not None:
        n_train, n_val = args.train_images, args.val_images or 100
        data_root = data_root or str(default_demo_root().parent / f"demo_data-{n_train}x{n_val}")
        generate_demo_dataset(data_root, n_train=n_train, n_val=n_val)
    preset = load_preset(args.preset, data_root=data_root)
    ensure_demo_data(preset)
    setup_mmpose()
    epochs = args.epochs or preset.budget.max_epochs
    known_good = dict(preset.known_good[0])
    rows = [Row(loss, None) for loss in args.losses if loss == "stock"]
    rows += [Row(loss, thr) for thr in args.pos_thr for loss in args.losses if loss != "stock"]
    for row in rows:
        row_params(known_good, row.loss)  # fail before training
    from rspose_tune.mmpose_adapter.configs import load_base_config

    stock_name = load_base_config(preset.base_config, Path(preset.source).parent).model.head.loss["type"]
    results: dict[str, list[dict]] = {}
    runs_out = []
    t_start = time.perf_counter()
    for seed in range(args.seeds):  # seeds outermost: an interrupted bench has whole tables of seeds
        for row in rows:
            tmp = Path(tempfile.mkdtemp(prefix="ablation_"))
            try:
                runner = build_runner(preset, row_params(known_good, row.loss), tmp, seed=seed, epochs=epochs,
                                      tag=f"abl_{row.loss}", pos_thr=row.pos_thr)
                t0 = time.perf_counter()
                runner.train()
                train_s = time.perf_counter() - t0
                values = evaluate_run(runner)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            predictions = values.pop("predictions")
            results.setdefault(row.key, []).append(values)
            line = dict(preset=preset.name, row=row.key, loss=row.loss, pos_thr=row.pos_thr, seed=seed,
                        epochs=epochs, train_s=round(train_s, 1), **values)
            print(json.dumps(line), flush=True)
            runs_out.append({**line, "predictions": predictions})
    table = format_table(preset.name, stock_name, rows, results, epochs, args.seeds)
    wall = time.perf_counter() - t_start
    print(f"\nABLATION\n{table}\nwall {wall:.0f} s ({len(runs_out)} runs)", flush=True)
    if args.json is not None:
        Path(args.json).write_text(json.dumps(dict(
            preset=preset.name, epochs=epochs, seeds=args.seeds, data_root=str(preset.data.root),
            val_ann=str(Path(preset.data.root) / preset.data.val_ann), command=["python", "-m", "rspose_tune.bench",
                                                                             "ablation", *(argv if argv is not None else sys.argv[1:])],
            rows=[dict(key=r.key, loss=r.loss, pos_thr=r.pos_thr) for r in rows], runs=runs_out,
            summary={r.key: {m: t_interval([v[m] for v in results[r.key]]) for m in METRICS} for r in rows},
            table=table, wall_s=wall)))
    return 0
