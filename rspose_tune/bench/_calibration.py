"""``python -m rspose_tune.bench calibration``: issue 9's measurements of the RSPose heads' decoding.

For each demo setting (seed 0, ``--epochs`` epochs, one trained model per setting) it validates the
same weights with the stock decoding on raw logits (MMPose's codec; main before issue 9) and with
the calibrated decoding (per-keypoint min-max of the training peaks), then two alternatives side by
side (refinement on the unshifted calibrated map; parabola-vertex positions; z-score + sigmoid
scores), then the logit-level robustness (a constant added to the head's final bias, which no
RSPose loss sees), and the added time per training step (statistics gathering on vs off,
interleaved, same batch, medians). Prints one JSON line per measurement and a summary.
Run with ``OMP_NUM_THREADS=1`` for steadier step times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rspose_tune.demo_data import generate_demo_dataset, is_complete
from rspose_tune.spaces import load_preset
from rspose_tune.training import prepare_trial_config

SETTINGS = {
    "known_good": dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25),
    "inst_heavy": dict(delta_rank=0.7, coeff_rank=1.0, delta_sort=0.5, coeff_sort=0.5, delta_inst=1.0, coeff_inst=1.5),
    "sort_off": dict(delta_rank=0.25, coeff_rank=1.0, delta_sort=None, coeff_sort=0.0, delta_inst=0.5, coeff_inst=0.1),
}


def ensure_demo_data(preset) -> None:
    """Generate a demo preset's data once, as the search does (idempotent)."""
    if getattr(preset.data, "generated", None) == "demo" and not is_complete(preset.data.root):
        generate_demo_dataset(preset.data.root)


def build_runner(preset, params, work_dir: Path, *, seed: int, epochs: int, tag: str,
                 pos_thr: float | None = None):
    """An untrained mmengine Runner of one demo run (the trial's own config, validation only at
    the end): ``params=None`` is the stock loss; ``pos_thr`` sets the Spatial losses' positive
    threshold as a trial does (the loss hyperparameter ``pos_thr`` of ``params``), and the built
    loss is checked to carry it."""
    from mmengine.runner import Runner

    if pos_thr is not None:
        if params is None:
            raise ValueError("`pos_thr` applies to the RSPose losses, not to the stock loss (params=None)")
        params = {**params, "pos_thr": float(pos_thr)}
    cfg = prepare_trial_config(preset, params, Path(work_dir), seed=seed, max_epochs=epochs, val_interval=epochs)
    # one MessageHub/visualizer per run (mmengine shares instances by name, and names by second)
    cfg["experiment_name"] = f"{tag}_{Path(work_dir).name}"
    cfg.visualizer["name"] = f"vis_{tag}_{Path(work_dir).name}"
    runner = Runner.from_cfg(cfg)
    if pos_thr is not None and getattr(runner.model.head.loss_module, "pos_thr", None) != float(pos_thr):
        raise RuntimeError(f"the built loss has pos_thr={runner.model.head.loss_module.pos_thr!r}, not {pos_thr!r}")
    return runner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rspose_tune.bench calibration", description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {sorted(SETTINGS)}")
    ap.add_argument("--step-repeats", type=int, default=40)
    args = ap.parse_args(argv)

    from rspose_tune.mmpose_adapter import setup_mmpose
    setup_mmpose()
    from mmpose.models.heads import HeatmapHead

    import rspose_tune.mmpose_adapter.heads as H
    from rspose_tune.mmpose_adapter.heads import _calibration, _codecs  # _codecs._refinement_input is patched below

    preset = load_preset("demo")
    ensure_demo_data(preset)
    rows = []
    unknown = sorted(set(args.settings.split(",")) - set(SETTINGS))
    if unknown:
        ap.error(f"--settings must be names from {sorted(SETTINGS)}, got {unknown}")
    for name in args.settings.split(","):
        params = SETTINGS[name]
        tmp = Path(tempfile.mkdtemp(prefix=f"calib_{name}_"))
        runner = build_runner(preset, params, tmp, seed=0, epochs=args.epochs, tag=f"calib_{name}")
        head = runner.model.head
        # record the last epoch's peaks (for the z-score alternative); the min/max is the head's own
        peaks = []
        real_gather = head._gather_peak_statistics
        def spy(p, _real=real_gather):
            if _calibration._training_epoch() == args.epochs - 1:
                peaks.append(p.detach().clone())
            _real(p)
        head._gather_peak_statistics = spy
        t0 = time.perf_counter()
        runner.train()
        train_s = time.perf_counter() - t0
        head._gather_peak_statistics = real_gather
        allp = torch.cat(peaks, dim=1)[0]  # (N, K)
        if not (torch.allclose(allp.amin(0), head.peak_min[0]) and torch.allclose(allp.amax(0), head.peak_max[0])):
            raise RuntimeError("the head's peak statistics differ from the last epoch's recorded peaks")
        mean, std = allp.mean(0), allp.std(0)

        def val(tag):
            m = runner.val()
            r = dict(setting=name, variant=tag, AP=m["coco/AP"], AR=m["coco/AR"], spearman=m["rspose/spearman"])
            rows.append(r)
            print(json.dumps(r), flush=True)

        def with_predict(fn, tag):
            head.predict = fn
            try:
                val(tag)
            finally:
                del head.predict

        # before: main's behaviour = the parent's predict/decode on raw logits
        stock = lambda feats, samples, test_cfg={}: HeatmapHead.decode(head, head.forward(feats))  # BaseHead.decode: the codec on raw logits
        with_predict(stock, "stock (before)")
        val("minmax (after)")
        # alternative positions: DARK-UDP on the calibrated map without the peak-to-1 shift
        def cal_no_shift(feats, samples, test_cfg={}):
            hm = head._calibrate(head.forward(feats))
            orig = _codecs._refinement_input
            _codecs._refinement_input = lambda c: c.astype(np.float32)
            try:
                return head._decode_calibrated(hm)
            finally:
                _codecs._refinement_input = orig
        with_predict(cal_no_shift, "minmax, refinement on calibrated map unshifted")
        # alternative positions: parabola vertex on raw logits (offset- and scale-invariant)
        def parabola(feats, samples, test_cfg={}):
            logits = head.forward(feats)
            hm = head._calibrate(logits)
            preds = head._decode_calibrated(hm)
            conf, idx = logits.flatten(2).max(2)
            xy = H.refine_argmax_2d(logits, idx).numpy()
            codec = head.decoder
            w, h = logits.shape[-1], logits.shape[-2]
            xy = xy / [w - 1, h - 1] * np.asarray(codec.input_size)
            for p, k in zip(preds, xy):
                p.keypoints = k[None].astype(np.float32)
            return preds
        with_predict(parabola, "minmax scores, parabola positions")
        # alternative confidence: per-keypoint z-score of the peak, sigmoid
        def zscore(feats, samples, test_cfg={}):
            logits = head.forward(feats)
            preds = head._decode_calibrated(head._calibrate(logits))
            z = (logits.flatten(2).amax(2) - mean) / std
            s = torch.sigmoid(z).numpy()
            for p, si in zip(preds, s):
                p.keypoint_scores = si[None].astype(np.float32)
            return preds
        with_predict(zscore, "zscore-sigmoid scores, minmax positions")
        # logit-level robustness: a constant added to the final bias (stats shifted with it)
        final = head.final_layer
        for shift in (-5.0, -20.0):
            final.bias.data += shift
            with_predict(stock, f"stock, bias {shift:+g}")
            head.peak_min += shift; head.peak_max += shift
            val(f"minmax, bias {shift:+g} (stats from the shifted model)")
            head.peak_min -= shift; head.peak_max -= shift
            final.bias.data -= shift

        # added time per training step: interleaved, same batch, gather on vs no-op
        model, optim = runner.model, runner.optim_wrapper
        model.train()
        batch = next(iter(runner.train_dataloader))
        times = {"on": [], "off": []}
        for i in range(args.step_repeats):
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                if mode == "off":
                    head._gather_peak_statistics = lambda p: None
                t = time.perf_counter()
                model.train_step(batch, optim)
                times[mode].append(time.perf_counter() - t)
                if mode == "off":
                    del head._gather_peak_statistics
        on, off = statistics.median(times["on"][4:]), statistics.median(times["off"][4:])
        r = dict(setting=name, variant="step time", on_ms=on * 1e3, off_ms=off * 1e3, added_ms=(on - off) * 1e3,
                 ratio=on / off, train_s=train_s)
        rows.append(r)
        print(json.dumps(r), flush=True)
        # the gather alone, timed directly on this batch's shapes
        hm = torch.randn(batch["inputs"].__len__(), 17, 32, 24)
        t = time.perf_counter()
        for _ in range(1000):
            real_gather(hm.flatten(2).amax(2)[None])
        print(json.dumps(dict(setting=name, variant="gather alone", us_per_call=(time.perf_counter() - t) * 1e3)), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print("\nSUMMARY")
    for r in rows:
        if "AP" in r:
            print(f"{r['setting']:11s} {r['variant']:52s} AP {r['AP']:.3f}  AR {r['AR']:.3f}  Spearman {r['spearman']:.3f}")
        else:
            print(r)
    return 0
