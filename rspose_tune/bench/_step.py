"""One full training step of a ViTPose-style model: RSPose head vs MMPose's MSE head.

``python -m rspose_tune.bench step [--device cuda] [--batch-size 32] [--repeats 5] ...``

Both models come from the installed ViTPose-B config (UDP codec, 256x192 input, two deconv layers
→ 64x48 heatmaps), by default with ViTPose-B's real backbone (768 wide, 12 layers; about 14 s a
step on 2 CPU cores); ``--embed-dims/--num-layers/--num-heads`` narrow it for a quick run (the
loss's cost is fixed, so the ratio grows as the model shrinks). They share their initial weights
and the batch. The baseline is ``HeatmapHead`` + ``KeypointMSELoss``; the RSPose
model is ``RSPoseHeatmapHead`` + ``RSPoseLoss`` with all three components on (Spatial Rank,
Spatial Sort, Instance Sort). A step is ``model.train_step``: data preprocessing, forward, loss,
backward and an AdamW update. The two models alternate (order swapped every repeat) and the median
times and their ratio are printed. The paper reports 1.065x for ViT-H; the target here is 1.03x.

The batch is synthetic but goes through MMPose's real top-down training pipeline (flip,
half-body, bbox shift/scale/rotation, UDP affine warp, ``GenerateTarget``, ``PackPoseInputs``)
from random images with random COCO-like keypoints, so the heads see realistic targets and
metainfo.
"""

from __future__ import annotations

import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

VITPOSE_CONFIG = "body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py"


def _mim_path(*parts: str) -> str:
    import mmpose

    return osp.join(osp.dirname(mmpose.__file__), ".mim", "configs", *parts)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rspose_tune.bench step", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="instances per step (default: 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per model (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first (default: 1)")
    p.add_argument("--embed-dims", type=int, default=768, help="ViT width (default: 768, ViTPose-B)")
    p.add_argument("--num-layers", type=int, default=12, help="ViT depth (default: 12, ViTPose-B)")
    p.add_argument("--num-heads", type=int, default=12, help="ViT heads (default: 12, ViTPose-B)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("batch_size", "repeats", "embed_dims", "num_layers", "num_heads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} is {getattr(args, name)}, but must be >= 1")
    if args.warmup < 0:
        p.error(f"--warmup is {args.warmup}, but must be >= 0")
    if args.embed_dims % args.num_heads:
        p.error(f"--embed-dims ({args.embed_dims}) must be divisible by --num-heads ({args.num_heads})")
    if args.device not in {"cpu", "cuda"}:
        p.error(f"--device must be one of ['cpu', 'cuda'], got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda was given, but torch.cuda.is_available() is False")
    return args


def _config(args: argparse.Namespace) -> Any:
    from mmengine.config import Config

    cfg = Config.fromfile(_mim_path(VITPOSE_CONFIG))
    backbone = cfg.model.backbone
    backbone.pop("init_cfg", None)  # no pretrained download
    backbone.arch = dict(
        embed_dims=args.embed_dims,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        feedforward_channels=4 * args.embed_dims,
    )
    cfg.model.head.in_channels = args.embed_dims
    cfg.model.train_cfg = dict(metainfo=dict(from_file=_mim_path("_base_", "datasets", "coco.py")))
    return cfg


def build_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """``{'mse': ..., 'rspose': ...}`` with identical initial weights, on ``args.device``."""
    from mmpose.registry import MODELS

    cfg = _config(args)
    torch.manual_seed(args.seed)
    mse = MODELS.build(copy.deepcopy(cfg.model))
    mse.init_weights()
    rs_cfg = copy.deepcopy(cfg.model)
    rs_cfg.head.update(type="RSPoseHeatmapHead", loss=dict(type="RSPoseLoss"), delta_inst=3.0, coeff_inst=1.0)
    rspose = MODELS.build(rs_cfg)
    rspose.load_state_dict(mse.state_dict(), strict=True)  # same initial weights
    return {"mse": mse.to(args.device).train(), "rspose": rspose.to(args.device).train()}


def synthetic_batch(args: argparse.Namespace) -> dict:
    """A batch of ``args.batch_size`` top-down samples through MMPose's ViTPose training pipeline."""
    from mmengine.dataset import Compose, pseudo_collate
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    from rspose_tune.mmpose_adapter.heads import RSPOSE_PACK_META_KEYS

    cfg = _config(args)
    pipeline = [dict(t) for t in cfg.train_pipeline if t["type"] != "LoadImage"]
    pipeline[-1] = dict(type="PackPoseInputs", meta_keys=RSPOSE_PACK_META_KEYS)
    transform = Compose(pipeline)
    meta = parse_pose_metainfo(dict(from_file=_mim_path("_base_", "datasets", "coco.py")))
    num_k = int(meta["num_keypoints"])
    rng = np.random.default_rng(args.seed)
    samples = []
    for i in range(args.batch_size):
        img_h, img_w = 480, 640
        w, h = rng.uniform(80, 300), rng.uniform(150, 420)
        x, y = rng.uniform(0, img_w - w), rng.uniform(0, img_h - h)
        kpts = np.stack([rng.uniform(x, x + w, num_k), rng.uniform(y, y + h, num_k)], -1)[None]
        results = dict(
            img=rng.integers(0, 256, (img_h, img_w, 3), dtype=np.uint8),
            img_shape=(img_h, img_w),
            ori_shape=(img_h, img_w),
            img_id=i,
            id=i,
            bbox=np.array([[x, y, x + w, y + h]], dtype=np.float32),
            bbox_score=np.ones(1, dtype=np.float32),
            keypoints=kpts.astype(np.float32),
            keypoints_visible=(rng.uniform(size=(1, num_k)) < 0.85).astype(np.float32),
            area=np.array(w * h * 0.6, dtype=np.float32),
            flip_indices=meta["flip_indices"],
            upper_body_ids=meta["upper_body_ids"],
            lower_body_ids=meta["lower_body_ids"],
            dataset_keypoint_weights=meta["dataset_keypoint_weights"],
        )
        samples.append(transform(results))
    return pseudo_collate(samples)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


Timings = dict[str, dict[str, list[float]]]  # clock ('wall', 'cpu') -> model name -> seconds


def interleaved(fns: dict[str, Callable[[], None]], args: argparse.Namespace) -> Timings:
    """Run each of ``fns`` ``warmup + repeats`` times, alternating (order swapped every repeat).

    Returns wall-clock seconds and this process's CPU seconds (``time.process_time``, robust to
    other processes on a shared machine; meaningless for CUDA work) of the timed repeats.
    """
    out: Timings = {"wall": {n: [] for n in fns}, "cpu": {n: [] for n in fns}}
    order = list(fns)
    for step in range(args.warmup + args.repeats):
        for name in order if step % 2 == 0 else order[::-1]:
            _sync(args.device)
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            _sync(args.device)
            if step >= args.warmup:
                out["wall"][name].append(time.perf_counter() - wall)
                out["cpu"][name].append(time.process_time() - cpu)
    return out


def head_loss_fns(models: dict, data: dict, args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """Per model: ``head.loss`` + backward on fixed heatmap logits (no network)."""
    samples = models["mse"].data_preprocessor(data, True)["data_samples"]
    w, h = models["mse"].head.decoder.heatmap_size
    gen = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(len(samples), 17, h, w, generator=gen).to(args.device).requires_grad_()

    def make(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.head.forward = lambda feats: logits  # instance attribute, removed below
            try:
                out = model.head.loss(None, samples, train_cfg=model.train_cfg)
                sum(v for k, v in out.items() if "loss" in k).backward()
            finally:
                del model.head.forward
            logits.grad = None

        return run

    return {name: make(m) for name, m in models.items()}


LABELS = {"mse": "HeatmapHead + KeypointMSELoss", "rspose": "RSPoseHeatmapHead (rank+sort+inst)"}


def _table(timings: Timings, clocks: list[str], extra: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    medians = {c: {n: statistics.median(t) for n, t in timings[c].items()} for c in clocks}
    head = f"{'head':34s}" + "".join(f" {c + ' median':>12s} {c + ' min':>9s}" for c in clocks)
    print(head + ("  last losses" if extra else ""))
    for name in timings["wall"]:
        row = f"{LABELS[name]:34s}"
        for c in clocks:
            row += f" {medians[c][name]:12.4f} {min(timings[c][name]):9.4f}"
        print(row + (f"  {extra[name]}" if extra else ""))
    return medians


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper

    from rspose_tune.mmpose_adapter import setup_mmpose

    setup_mmpose()
    MMLogger.get_instance("rspose_bench_step", log_level="WARNING")  # no per-parameter init log
    models = build_models(args)
    data = synthetic_batch(args)
    last: dict[str, dict[str, float]] = {}

    def step_fn(name: str) -> Callable[[], None]:
        model = models[name]
        wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1))

        def run() -> None:
            out = model.train_step(data, wrapper)
            last[name] = {k: float(v.detach()) for k, v in out.items()}

        return run

    steps = interleaved({name: step_fn(name) for name in models}, args)

    clocks = ["wall"] if args.device == "cuda" else ["wall", "cpu"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    heatmap = tuple(models["mse"].head.decoder.heatmap_size)
    print(
        f"train step (forward, loss, backward, AdamW), ViTPose-style: ViT embed_dims={args.embed_dims} "
        f"layers={args.num_layers} heads={args.num_heads}, input 256x192, heatmaps "
        f"{heatmap[1]}x{heatmap[0]}, batch {args.batch_size}, K=17, device {device}"
    )
    print(f"{args.repeats} interleaved repeats after {args.warmup} warm-up steps each; seconds per step\n")
    losses = {
        n: ", ".join(f"{k}={v:.4f}" for k, v in last[n].items() if k.startswith("loss")) for n in models
    }
    med = _table(steps, clocks, losses)
    print()
    for c in clocks:
        print(
            f"ratio RSPose / MSE ({c} medians): {med[c]['rspose'] / med[c]['mse']:.3f}x   "
            "(target <= 1.03x; paper: 1.065x on ViT-H)"
        )

    print("\nloss only: head.loss + backward on fixed heatmap logits (no network); seconds")
    loss_med = _table(interleaved(head_loss_fns(models, data, args), args), clocks)
    for c in clocks:
        extra = loss_med[c]["rspose"] - loss_med[c]["mse"]
        print(
            f"extra loss time ({c}) {extra:.4f} s = {extra / med[c]['mse']:.1%} of the median MSE step "
            f"(expected step ratio {1 + extra / med[c]['mse']:.3f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
