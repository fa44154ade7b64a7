"""The GPU check's three parts (``python -m rspose_tune.bench gpu``; what each measures:
:mod:`rspose_tune.bench._gpu`): (a) the losses, (b) a training step, (c) the rank code path."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["free_cuda", "run_losses", "run_rank", "run_step"]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _tensor_bytes(tensors) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def _persistent_bytes(model, optimizer) -> int:
    """Parameters, buffers and optimizer state: what stays allocated between steps."""
    import torch

    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return _tensor_bytes([*model.parameters(), *model.buffers(), *state])


def free_cuda() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# (a) losses
# --------------------------------------------------------------------------------------------
def run_losses(args: argparse.Namespace) -> dict[str, Any]:
    """RSPose spatial_rank_sort vs KeypointMSELoss, fwd+bwd, interleaved; ms and peak extra MiB."""
    from rspose_tune.bench import _losses, _step

    data = _losses.build_inputs(args.loss_batch, 17, seed=args.seed)
    largs = argparse.Namespace(delta_rank=0.4, delta_sort=1.5, loop_groups=0)
    runs = {m: _losses._make_step(m, data, args.device, largs)[0] for m in ("mse", "ours")}
    peaks: dict[str, list[int]] = {m: [] for m in runs}

    def measured(name: str) -> Callable[[], None]:
        def fn() -> None:
            with _losses._PeakMemory(args.device) as mem:
                runs[name]()
            peaks[name].append(mem.extra_bytes)

        return fn

    timings = _step.interleaved({m: measured(m) for m in runs}, args)
    med = {m: statistics.median(t) for m, t in timings["wall"].items()}
    b, k, h, w = data["labels"].shape
    return {
        "shape": f"{b} x {k} x {h}x{w}",
        "ms": {m: med[m] * 1e3 for m in med},
        "peak_mib": {m: max(peaks[m]) / 2**20 for m in peaks},
        "ratio": med["ours"] / med["mse"],
    }


# --------------------------------------------------------------------------------------------
# (b) training step
# --------------------------------------------------------------------------------------------
def run_step(args: argparse.Namespace) -> dict[str, Any]:
    """ViTPose train_step, RSPose vs MSE head: median seconds and peak memory, interleaved."""
    import torch
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper

    from rspose_tune.bench import _losses, _step

    MMLogger.get_instance("rspose_bench_gpu", log_level="WARNING")
    sargs = argparse.Namespace(**vars(args))  # _step reads device, batch_size, embed_dims, ..., seed
    t0 = time.perf_counter()
    models = _step.build_models(sargs)
    data = _step.synthetic_batch(sargs)
    build_s = time.perf_counter() - t0
    optims = {n: torch.optim.AdamW(m.parameters(), lr=5e-4, weight_decay=0.1) for n, m in models.items()}
    wrappers = {n: OptimWrapper(o) for n, o in optims.items()}
    peaks: dict[str, list[int]] = {n: [] for n in models}
    losses: dict[str, dict[str, float]] = {}

    def step_fn(name: str) -> Callable[[], None]:
        model, wrapper = models[name], wrappers[name]

        def run() -> None:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                out = model.train_step(data, wrapper)
                torch.cuda.synchronize()
                peaks[name].append(torch.cuda.max_memory_allocated())
            else:
                with _losses._PeakMemory("cpu") as mem:
                    out = model.train_step(data, wrapper)
                peaks[name].append(mem.extra_bytes)
            losses[name] = {k: float(v.detach()) for k, v in out.items()}

        return run

    timings = _step.interleaved({n: step_fn(n) for n in models}, sargs)
    persistent = {n: _persistent_bytes(models[n], optims[n]) for n in models}
    other = {"mse": "rspose", "rspose": "mse"}
    if args.device == "cuda":
        # Both models are resident: a model's own peak is the step's peak minus the other's state.
        peak = {n: max(peaks[n][args.warmup:] or peaks[n]) - persistent[other[n]] for n in models}
        memory_how = "torch.cuda.max_memory_allocated during the step - the other model's params/buffers/AdamW state"
    else:
        # RSS high-water mark over the step (rough: glibc keeps freed memory) + this model's state.
        peak = {n: max(peaks[n][args.warmup:] or peaks[n]) + persistent[n] for n in models}
        memory_how = "rough on CPU: this model's params/buffers/AdamW state + the step's RSS high-water mark"
    med = {n: statistics.median(t) for n, t in timings["wall"].items()}
    result = {
        "build_s": build_s,
        "s": med,
        "min_s": {n: min(t) for n, t in timings["wall"].items()},
        "ratio": med["rspose"] / med["mse"],
        "peak_gib": {n: peak[n] / 2**30 for n in models},
        "persistent_gib": {n: persistent[n] / 2**30 for n in models},
        "mem_ratio": peak["rspose"] / peak["mse"],
        "memory_how": memory_how,
        "losses": losses,
        "params_m": sum(p.numel() for p in models["mse"].parameters()) / 1e6,
    }
    return result


# --------------------------------------------------------------------------------------------
# (c) the rank code path
# --------------------------------------------------------------------------------------------
def run_rank(args: argparse.Namespace) -> dict[str, Any]:
    """Train the demo preset for one epoch through rspose_tune.training in a 1-rank process group."""
    from rspose_tune.demo_data import generate_demo_dataset, is_complete
    from rspose_tune.spaces import load_preset
    from rspose_tune.training import open_rendezvous, prepare_trial_config, process_group, train_rank

    params = dict(load_preset("demo").known_good[0])
    backend = "nccl" if args.device == "cuda" else "gloo"
    reports: list[tuple[dict, list[str]]] = []

    def report(result, checkpoint_dir) -> None:
        files = sorted(os.listdir(checkpoint_dir)) if checkpoint_dir else []
        reports.append((dict(result), files))

    with tempfile.TemporaryDirectory(prefix="rspose_gpu_check_") as tmp:
        t0 = time.perf_counter()
        if args.demo_train:  # a small demo dataset of its own
            root = generate_demo_dataset(Path(tmp) / "demo_data", n_train=args.demo_train, n_val=args.demo_val)
            preset = load_preset("demo", data_root=root)
        else:
            preset = load_preset("demo", data_root=args.data_root)
            if not is_complete(preset.data.root):
                generate_demo_dataset(preset.data.root)
        data_s = time.perf_counter() - t0
        cfg = prepare_trial_config(preset, params, Path(tmp) / "trial", seed=args.seed, max_epochs=1)
        rdzv, store = open_rendezvous("127.0.0.1", 1, backend, timeout_s=args.pg_timeout)
        with process_group(rdzv, 0, store=store):
            train_rank(cfg, metric=preset.metric, trial_id="gpu-check", report=report, device=args.device)
        wall = time.perf_counter() - t0
    if not reports:
        raise RuntimeError("train_rank finished one epoch but reported nothing")
    result, files = reports[-1]
    return {
        "backend": backend,
        "pg_timeout_s": rdzv.timeout_s,
        "metric_name": preset.metric,
        "metric": float(result["metric"]),
        "epoch": int(result["epoch"]),
        "world_size": int(result.get("world_size", -1)),
        "gpu_type": result.get("gpu_type"),
        "loss": float(result.get("loss", float("nan"))),
        "checkpoint_files": files,
        "reports": len(reports),
        "wall_s": wall,
        "data_s": data_s,
        "data": f"{preset.data.root}" + (f" (generated: {args.demo_train} train / {args.demo_val} val images)"
                                          if args.demo_train else ""),
    }
