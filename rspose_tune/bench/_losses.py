"""Benchmark the RSPose losses: fwd+bwd time and peak extra memory, against two baselines.

``python -m rspose_tune.bench losses [--batch 64 --keypoints 17 --repeats 5 --loop-groups 64]``

Inputs are realistic: every instance gets random keypoints inside a 192x256 image, encoded by
MMPose's own ``MSRAHeatmap`` codec (heatmaps 48x64, sigma 2) into labels; the logits are the
labels plus Gaussian noise. One ranking group per (instance, keypoint): G = batch * keypoints
groups of M = 64 * 48 pixels, about 169 positives each (``labels > 0``).

Methods, each run in a fresh subprocess so that its peak memory is its own:

1. ``ours``: :func:`rspose_tune.losses.spatial_rank_sort`, ``(rank + sort).backward()``;
2. ``mse``: MMPose's ``KeypointMSELoss(use_target_weight=True)`` on the same tensors;
3. ``loop``: the same losses and error-driven gradients computed by a naive Python loop over
   the groups and their positives (RankSortLoss's algorithm, with separate rank/sort deltas).
   It is slow (~40 s a batch), so by default it runs on the first ``--loop-groups`` groups and
   its time is extrapolated linearly in the number of positives (printed as extrapolated).

Time: median of ``--repeats`` fwd+bwd runs after one warm-up run. Memory: the peak resident set
size (VmHWM, reset through ``/proc/self/clear_refs``) during the warm-up run minus the resident
set size just before it, when the inputs are already loaded; on CUDA, the peak of
``torch.cuda.max_memory_allocated`` over the memory allocated before the run.

Threads: torch's default unless ``--threads``. On a CPU shared with other busy processes,
libgomp's default spin-waiting makes every multi-threaded operator wait for descheduled worker
threads, which slows operator-heavy code (ours, by up to ~6x) far more than the loop (whose tiny
operators run single-threaded anyway); ``--omp-wait-policy passive`` or ``--threads 1`` shows
the time without that effect. The header prints the load average to judge the conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["build_inputs", "main", "naive_loop"]

METHODS = ("ours", "mse", "loop")
LABELS = {
    "ours": "ours: spatial_rank_sort",
    "mse": "MMPose KeypointMSELoss",
    "loop": "naive per-positive loop",
}
TARGET_SPEEDUP = 50.0
TARGET_MEMORY_MIB = 512.0


# --------------------------------------------------------------------------------------------
# Inputs and the naive baseline
# --------------------------------------------------------------------------------------------
def build_inputs(batch: int, keypoints: int, *, sigma: float = 2.0, noise: float = 0.1, seed: int = 0) -> dict:
    """Heatmap labels (B, K, 64, 48) from MMPose's MSRAHeatmap, logits = labels + noise, weights (B, K)."""
    import numpy as np
    import torch
    from mmpose.codecs import MSRAHeatmap

    codec = MSRAHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=sigma)
    rng = np.random.default_rng(seed)
    heatmaps, weights = [], []
    for _ in range(batch):  # the codec encodes one instance at a time
        kpts = rng.uniform([0.0, 0.0], [192.0, 256.0], size=(1, keypoints, 2))
        encoded = codec.encode(kpts, np.ones((1, keypoints), dtype=np.float32))
        heatmaps.append(encoded["heatmaps"])
        weights.append(encoded["keypoint_weights"])
    labels = torch.from_numpy(np.stack(heatmaps)).float()
    gen = torch.Generator().manual_seed(seed)
    logits = labels + noise * torch.randn(labels.shape, generator=gen)
    return {
        "logits": logits,
        "labels": labels,
        "weights": torch.from_numpy(np.concatenate(weights)).float(),
        "meta": {"batch": batch, "keypoints": keypoints, "sigma": sigma, "noise": noise, "seed": seed},
    }


def _step(x, d: float):  # noqa: ANN001, ANN202
    import torch

    return (x >= 0).to(x.dtype) if d == 0 else torch.clamp(x / (2 * d) + 0.5, min=0, max=1)


def naive_loop(logits, labels, weights, delta_rank: float, delta_sort: float, eps: float = 1e-10):  # noqa: ANN001, ANN201
    """Rank/sort losses and error-driven gradients with a Python loop over groups and positives.

    RankSortLoss's ``RankSort.forward`` loop (Oksuz et al. 2021), per group, with the rank and
    the sort step functions smoothed separately. Returns ``(rank, sort, g_rank, g_sort)``.
    """
    import torch

    g_rank = torch.zeros_like(logits)
    g_sort = torch.zeros_like(logits)
    parts = []
    for g in range(logits.shape[0]):
        pos = labels[g] > 0
        n = int(pos.sum())
        if weights[g] <= 0 or n == 0:
            continue
        fg, fy = logits[g][pos], labels[g][pos]
        threshold = fg.min() - delta_rank  # negatives below cannot outrank any positive
        relevant = ~pos & (logits[g] >= threshold)
        bg = logits[g][relevant]
        fg_rank, fg_sort, bg_rank = torch.zeros_like(fg), torch.zeros_like(fg), torch.zeros_like(bg)
        rank_sum = sort_sum = 0.0
        for i in range(n):
            rel_fg = _step(fg - fg[i], delta_rank)
            rel_bg = _step(bg - fg[i], delta_rank)
            fp = rel_bg.sum()
            rank_err = fp / (fp + rel_fg.sum())
            rel_s = _step(fg - fg[i], delta_sort)
            current = (rel_s * (1 - fy)).sum() / rel_s.sum()
            ge = fy >= fy[i]
            target_order = ge * rel_s
            sort_err = current - (target_order * (1 - fy)).sum() / target_order.sum()
            rank_sum += float(rank_err)
            sort_sum += float(sort_err)
            if fp > eps:
                fg_rank[i] -= rank_err
                bg_rank += rel_bg * (rank_err / fp)
            missorted = (~ge) * rel_s
            denom = missorted.sum()
            if denom > eps:
                fg_sort[i] -= sort_err
                fg_sort += missorted * (sort_err / denom)
        g_rank[g][pos] = fg_rank / n
        g_rank[g][relevant] = bg_rank / n
        g_sort[g][pos] = fg_sort / n
        parts.append((g, float(weights[g]), rank_sum / n, sort_sum / n))
    total = sum(w for _, w, _, _ in parts) or 1.0
    rank = sum(w * r for _, w, r, _ in parts) / total
    sort = sum(w * s for _, w, _, s in parts) / total
    for g, w, _, _ in parts:
        g_rank[g] *= w / total
        g_sort[g] *= w / total
    return rank, sort, g_rank, g_sort


# --------------------------------------------------------------------------------------------
# Worker: one method, in its own process
# --------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


class _PeakMemory:
    """Peak extra memory of a block: RSS high-water mark on CPU, the allocator's peak on CUDA."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.how = ""
        self.extra_bytes = 0

    def __enter__(self) -> _PeakMemory:
        import resource

        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self.how = "torch.cuda.max_memory_allocated"
        elif _reset_peak_rss():
            self._base = _proc_status_kib("VmRSS") * 1024
            self.how = "VmHWM after clear_refs"
        else:  # without /proc: under-reports if the process peaked higher before the run
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.how = "ru_maxrss delta (lower bound)"
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.how.startswith("VmHWM"):
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.extra_bytes = max(0, peak - self._base)


def _make_step(method: str, data: dict, device: str, args: argparse.Namespace):  # noqa: ANN202
    """A closure running one fwd+bwd of ``method``, and the number of groups/positives it covers."""
    import torch

    logits4, labels4, weights2 = (data[k].to(device) for k in ("logits", "labels", "weights"))
    b, k = weights2.shape
    logits = logits4.reshape(b * k, -1).clone()
    labels = labels4.reshape(b * k, -1)
    weights = weights2.reshape(b * k)
    if method == "loop" and args.loop_groups:
        logits, labels, weights = logits[: args.loop_groups].clone(), labels[: args.loop_groups], weights[: args.loop_groups]
    positives = int(((labels > 0).sum(1) * (weights > 0)).sum())
    x = logits.requires_grad_(True)

    if method == "ours":
        from rspose_tune.losses import spatial_rank_sort

        def step() -> None:
            rank, sort = spatial_rank_sort(x, labels, weights, delta_rank=args.delta_rank, delta_sort=args.delta_sort)
            (rank + sort).backward()

    elif method == "mse":
        from rspose_tune.mmpose_adapter import install_mmcv_ops_shim

        install_mmcv_ops_shim()  # mmcv-lite has no compiled ops; mmpose.models imports one
        from mmpose.models.losses import KeypointMSELoss

        loss_fn = KeypointMSELoss(use_target_weight=True)
        x = logits4.clone().requires_grad_(True)

        def step() -> None:
            loss_fn(x, labels4, weights2).backward()

    else:

        class _Loop(torch.autograd.Function):
            @staticmethod
            def forward(ctx, inp):  # noqa: ANN001, ANN205
                rank, sort, g_rank, g_sort = naive_loop(inp.detach(), labels, weights, args.delta_rank, args.delta_sort)
                ctx.save_for_backward(g_rank + g_sort)
                return inp.new_tensor(rank + sort)

            @staticmethod
            def backward(ctx, grad):  # noqa: ANN001, ANN205
                return ctx.saved_tensors[0] * grad

        def step() -> None:
            _Loop.apply(x).backward()

    def run() -> None:
        x.grad = None
        step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run, x, logits.shape[0], positives, (labels, weights)


def _worker(args: argparse.Namespace) -> int:
    import gc

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = torch.load(args.inputs, weights_only=False)
    run, x, groups, positives, (labels, weights) = _make_step(args.worker, data, args.device, args)
    gc.collect()
    with _PeakMemory(args.device) as mem:
        run()  # warm-up, measured for memory
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    out = {
        "method": args.worker,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_extra_bytes": mem.extra_bytes,
        "memory_how": mem.how,
        "groups": groups,
        "positives": positives,
        "threads": torch.get_num_threads(),
    }
    if args.worker == "loop":  # check the loop against ours on the same groups
        from rspose_tune.losses import spatial_rank_sort

        y = x.detach().clone().requires_grad_(True)
        rank, sort = spatial_rank_sort(y, labels, weights, delta_rank=args.delta_rank, delta_sort=args.delta_sort)
        (rank + sort).backward()
        with torch.no_grad():
            ref = naive_loop(x.detach(), labels, weights, args.delta_rank, args.delta_sort)
        out["max_abs_loss_diff"] = max(abs(float(rank) - ref[0]), abs(float(sort) - ref[1]))
        out["max_abs_grad_diff"] = float((y.grad - (ref[2] + ref[3])).abs().max())
        out["max_abs_grad"] = float((ref[2] + ref[3]).abs().max())
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rspose_tune.bench losses",
        description="RSPose losses (spatial_rank_sort) vs MMPose KeypointMSELoss vs a naive "
        "per-positive Python loop: fwd+bwd time and peak extra memory on MSRAHeatmap labels.",
    )
    p.add_argument("--batch", type=int, default=64, help="instances per batch (default 64)")
    p.add_argument("--keypoints", type=int, default=17, help="keypoints per instance (default 17)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per method, after a warm-up (default 5)")
    p.add_argument(
        "--loop-groups", type=int, default=64,
        help="time the naive loop on the first N groups and extrapolate linearly in the number of "
        "positives; 0 runs it on all groups (~40 s per run on 2 CPU cores) (default 64)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--threads", type=int, default=0,
        help="torch.set_num_threads in every method's process; 0 keeps torch's default (default 0)",
    )
    p.add_argument(
        "--omp-wait-policy", choices=("inherit", "passive", "active"), default="inherit",
        help="OMP_WAIT_POLICY of the method processes; 'inherit' keeps this environment's. On a "
        "CPU shared with other busy processes, libgomp's default spin-waiting makes every "
        "multi-threaded operator wait for descheduled threads; 'passive' avoids that (default inherit)",
    )
    p.add_argument("--delta-rank", type=float, default=0.4)
    p.add_argument("--delta-sort", type=float, default=1.5)
    p.add_argument("--sigma", type=float, default=2.0, help="MSRAHeatmap sigma (default 2)")
    p.add_argument("--noise", type=float, default=0.1, help="std of the noise added to the labels (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {list(METHODS)}")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    for name in ("batch", "keypoints", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    if args.loop_groups < 0:
        p.error(f"--loop-groups must be >= 0, got {args.loop_groups}")
    if args.device not in ("cpu", "cuda"):
        p.error(f"--device must be one of ['cpu', 'cuda'], got {args.device!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        p.error(f"--methods must be a comma-separated subset of {list(METHODS)}, got {args.methods!r}")
    return methods


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return float("nan")


def _run_worker(method: str, inputs: Path, argv: list[str], wait_policy: str) -> dict:
    cmd = [sys.executable, "-m", "rspose_tune.bench", "losses", *argv, "--worker", method, "--inputs", str(inputs)]
    env = dict(os.environ)
    if wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {method!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _parser()
    args = p.parse_args(argv)
    methods = _check_args(p, args)
    if args.worker:
        return _worker(args)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); run with --device cpu "
            "or on a machine with a CUDA GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        return 2

    data = build_inputs(args.batch, args.keypoints, sigma=args.sigma, noise=args.noise, seed=args.seed)
    b, k, h, w = data["labels"].shape
    pos = (data["labels"].reshape(b * k, -1) > 0).sum(1)
    passthrough = [a for a in argv if a not in ("--worker", "--inputs")]
    load_before = _load()
    results = {}
    with tempfile.TemporaryDirectory(prefix="rspose_bench_") as tmp:
        path = Path(tmp) / "inputs.pt"
        torch.save(data, path)
        for method in methods:
            print(f"running {method} ...", file=sys.stderr, flush=True)
            results[method] = _run_worker(method, path, passthrough, args.omp_wait_policy)

    total_pos = int((pos * (data["weights"].reshape(-1) > 0)).sum())
    policy = os.environ.get("OMP_WAIT_POLICY", "unset") if args.omp_wait_policy == "inherit" else args.omp_wait_policy.upper()
    print(
        f"RSPose losses, fwd+bwd on {args.device} ({next(iter(results.values()))['threads']} torch threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, OMP_WAIT_POLICY="
        f"{policy}): batch {b} x {k} keypoints = "
        f"{b * k} groups of M = {h}x{w} = {h * w}; MSRAHeatmap sigma {args.sigma}, {total_pos} positives "
        f"(mean {pos.float().mean():.1f}, max {int(pos.max())} per group); delta_rank {args.delta_rank}, "
        f"delta_sort {args.delta_sort}; median of {args.repeats} after a warm-up; "
        f"load average before/after {load_before:.1f}/{_load():.1f} on {os.cpu_count()} CPUs"
    )
    header = f"{'method':<26} {'fwd+bwd ms':>12} {'peak extra MiB':>15}  note"
    print(header)
    print("-" * len(header))
    times = {}
    for method, r in results.items():
        t = r["median_s"]
        note = ""
        if method == "loop" and r["groups"] < b * k:
            scale = total_pos / max(r["positives"], 1)
            note = (
                f"EXTRAPOLATED x{scale:.1f} from {r['groups']} groups ({r['positives']} positives, "
                f"{t * 1e3:.0f} ms); memory on those groups"
            )
            t *= scale
        times[method] = t
        print(f"{LABELS[method]:<26} {t * 1e3:>12.1f} {r['peak_extra_bytes'] / 2**20:>15.1f}  {note}")
    print(f"memory: {next(iter(results.values()))['memory_how']}, over the inputs already loaded")
    if "loop" in results:
        r = results["loop"]
        print(
            f"check on the loop's groups: max |loss diff| {r['max_abs_loss_diff']:.2e}, max |grad diff| "
            f"{r['max_abs_grad_diff']:.2e} (max |grad| {r['max_abs_grad']:.2e})"
        )
    ok = True
    if "ours" in times and "loop" in times:
        ratio = times["loop"] / times["ours"]
        met = ratio >= TARGET_SPEEDUP
        ok &= met
        print(f"loop / ours: {ratio:.1f}x  (target >= {TARGET_SPEEDUP:.0f}x: {'met' if met else 'NOT met'})")
    if "ours" in times and "mse" in times:
        print(f"ours / mse: {times['ours'] / times['mse']:.1f}x")
    if "ours" in results:
        mib = results["ours"]["peak_extra_bytes"] / 2**20
        met = mib <= TARGET_MEMORY_MIB
        ok &= met
        print(f"peak extra memory of ours: {mib:.1f} MiB  (target <= {TARGET_MEMORY_MIB:.0f} MiB: {'met' if met else 'NOT met'})")
    return 0 if ok else 1
