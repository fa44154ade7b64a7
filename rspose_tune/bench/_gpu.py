"""The GPU check: RSPose vs MSE on one device, and a trial's rank code path, without Ray.

``python -m rspose_tune.bench gpu [--device cuda|cpu] [--parts losses,step,rank] ...``

Made to run on a bare single-GPU machine (no Ray, no network; the OpenMMLab packages carried
as wheels, see ``--prepare-wheels`` and README "GPU check"). Three parts, each against its
baseline measured in the same run on the same inputs (interleaved repeats, medians):

(a) ``losses``: RSPose's ``spatial_rank_sort`` (rank + sort) vs MMPose's ``KeypointMSELoss``,
    fwd+bwd on a batch of ViTPose-H heatmaps (17 x 64x48, MSRAHeatmap targets), reusing
    :mod:`rspose_tune.bench._losses` (inputs, step closures, peak memory);
(b) ``step``: a full training step (preprocess, forward, loss, backward, AdamW) of ViTPose-H
    256x192 (ViT embed 1280, 32 layers, 16 heads) at batch 64: RSPose head (rank + sort + inst)
    vs MSE head, reusing :mod:`rspose_tune.bench._step` (models with identical initial weights,
    a batch through MMPose's real top-down pipeline, interleaved timing). Peak memory per model
    is ``torch.cuda.max_memory_allocated`` during its step, minus the persistent tensors
    (parameters, buffers, AdamW state) of the *other* model, which is resident too: i.e. what
    a process training that model alone would peak at. Paper App. D: 1.520 s vs 1.427 s per
    iteration (x1.065) and ~2 % more memory; targets here: <= 1.02x and <= +1 %;
(c) ``rank``: the trial's rank code path (``trainables._rank``: ``open_rendezvous`` ->
    ``process_group`` -> ``train_rank``) training the demo preset for one epoch in a 1-rank
    process group (NCCL on CUDA, gloo on CPU), config from
    ``trainables.mmpose_trainable.prepare_trial_config``; it must report the preset's metric
    with a checkpoint.

``--device cpu`` runs a small variant (narrowed ViT, small batches, few repeats; the CI test)
whose ratios are printed but not held against the targets (a toy model's step is dominated by
the loss's fixed cost). Nothing here imports Ray; the summary says so.

``--prepare-wheels DIR`` (on a networked machine) downloads what the bare GPU machine lacks:
cp312 manylinux wheels of the pinned OpenMMLab packages and their small dependencies, and the
xtcocotools sdist, and prints the bundle's size and the commands to carry and run it.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError, cli_error

import argparse
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE", "main"]

TARGET_STEP_RATIO = 1.02
TARGET_MEMORY_RATIO = 1.01
PAPER = "paper App. D (2xH100, 64/GPU): 1.520 s vs 1.427 s = 1.065x, ~+2 % memory"
PARTS = ("losses", "step", "rank")

# ViTPose-H and the CPU stand-in (narrowed ViT, small batches).
PROFILES: dict[str, dict[str, int]] = {
    "cuda": {"loss_batch": 64, "batch_size": 64, "embed_dims": 1280, "num_layers": 32, "num_heads": 16,
             "repeats": 5, "warmup": 2, "demo_train": 0, "demo_val": 0},
    "cpu": {"loss_batch": 16, "batch_size": 4, "embed_dims": 64, "num_layers": 2, "num_heads": 2,
            "repeats": 3, "warmup": 1, "demo_train": 48, "demo_val": 16},
}
#: Modules the check imports that a bare machine may lack; each named in one error line if missing.
NEEDED_MODULES = ("numpy", "cv2", "scipy", "matplotlib", "PIL", "yaml", "rich", "mmengine", "mmcv", "mmpose",
                  "mmpretrain", "mmdet", "xtcocotools", "pycocotools", "shapely", "pkg_resources")

#: What the bare GPU machine lacks, as ``(distribution, how)``: ``wheel`` is a cp312 manylinux or
#: pure-Python wheel from the registry; ``sdist`` is built there (``xtcocotools``: no cp312 wheel).
#: Versions come from requirements/lock.txt and build.txt. The machine's image already has torch, numpy, scipy,
#: opencv-python-headless, matplotlib, pillow, pyyaml, rich, packaging, setuptools, cython.
BUNDLE: tuple[tuple[str, str], ...] = (
    ("mmengine", "wheel"),
    ("mmcv-lite", "wheel"),
    ("mmpose", "wheel"),
    ("mmpretrain", "wheel"),
    ("mmdet", "wheel"),
    ("addict", "wheel"),  # mmengine
    ("yapf", "wheel"),  # mmengine
    ("platformdirs", "wheel"),  # yapf
    ("termcolor", "wheel"),  # mmengine
    ("json-tricks", "wheel"),  # mmpose
    ("munkres", "wheel"),  # mmpose
    ("terminaltables", "wheel"),  # mmdet
    ("pycocotools", "wheel"),  # mmdet (cp312 manylinux)
    ("shapely", "wheel"),  # mmpose/mmdet (cp312 manylinux)
    ("modelindex", "wheel"),  # mmpretrain
    ("model-index", "wheel"),  # modelindex
    ("ordered-set", "wheel"),  # model-index
    ("importlib-metadata", "wheel"),  # mmpretrain
    ("lazy-importer", "wheel"),  # importlib-metadata
    ("setuptools", "wheel"),  # mmengine's Config imports pkg_resources (gone in setuptools 81)
    ("xtcocotools", "sdist"),  # mmpose; no cp312 wheel: built there (Cython, numpy, a compiler)
)
BUNDLE_LIMIT_MIB = 60.0
GPU_SITE = "/tmp/rspose_site"


class _UsageError(RSPoseTuneError):
    """A bad flag: printed as one ``error:`` line, exit 2."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rspose_tune.bench gpu", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="cuda (ViTPose-H, batch 64) or cpu (small variant); default: cuda if available")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {list(PARTS)} (default: all)")
    p.add_argument("--loss-batch", type=int, help="(a) instances per loss batch (cuda 64, cpu 16)")
    p.add_argument("--batch-size", type=int, help="(b) instances per training step (cuda 64, cpu 4)")
    p.add_argument("--embed-dims", type=int, help="(b) ViT width (cuda 1280 = ViT-H, cpu 64)")
    p.add_argument("--num-layers", type=int, help="(b) ViT depth (cuda 32, cpu 2)")
    p.add_argument("--num-heads", type=int, help="(b) ViT heads (cuda 16, cpu 2)")
    p.add_argument("--repeats", type=int, help="(a, b) timed repeats per side (cuda 5, cpu 3)")
    p.add_argument("--warmup", type=int, help="(a, b) untimed repeats per side first (cuda 2, cpu 1)")
    p.add_argument("--data-root", help="(c) demo data folder (default: the demo preset's; generated if missing)")
    p.add_argument("--demo-train", type=int, help="(c) > 0: generate a demo dataset of this many training images "
                   "in a temporary folder instead (cuda 0 = the preset's full demo data, cpu 48)")
    p.add_argument("--demo-val", type=int, help="(c) validation images of that generated dataset (cpu 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepare-wheels", metavar="DIR",
                   help="download the GPU machine's wheel bundle into DIR (networked machine), print its size, exit")
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
    if args.prepare_wheels:
        return args
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise _UsageError(
            f"--device cuda was given, but torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use --device cpu"
        )
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not parts or any(s not in PARTS for s in parts):
        raise _UsageError(f"--parts must be a comma-separated subset of {list(PARTS)}, got {args.parts!r}")
    args.parts = [s for s in PARTS if s in parts]
    for key, value in PROFILES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("loss_batch", "batch_size", "embed_dims", "num_layers", "num_heads", "repeats"):
        if getattr(args, key) < 1:
            raise _UsageError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.warmup < 1:  # AdamW creates its state in the first step; memory is read after it
        raise _UsageError(f"--warmup must be >= 1, got {args.warmup}")
    if args.demo_train < 0 or args.demo_val < 0 or (args.demo_train and args.demo_val < 1):
        raise _UsageError(f"--demo-train must be >= 0 and --demo-val >= 1 with it, got {args.demo_train}, {args.demo_val}")
    if args.demo_train and args.data_root:
        raise _UsageError("--data-root and --demo-train > 0 exclude each other (--demo-train 0 uses --data-root)")
    if args.embed_dims % args.num_heads:
        raise _UsageError(f"--embed-dims ({args.embed_dims}) must be divisible by --num-heads ({args.num_heads})")
    return args


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


def _free_cuda() -> None:
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
    """Train the demo preset for one epoch through trainables._rank in a 1-rank process group."""
    from rspose_tune.demo_data import generate_demo_dataset, is_complete
    from rspose_tune.spaces import load_preset
    from trainables._rank import open_rendezvous, process_group, train_rank
    from trainables.mmpose_trainable import prepare_trial_config

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
        rdzv, store = open_rendezvous("127.0.0.1", 1, backend)
        with process_group(rdzv, 0, store=store):
            train_rank(cfg, metric=preset.metric, trial_id="gpu-check", report=report, device=args.device)
        wall = time.perf_counter() - t0
    if not reports:
        raise RuntimeError("train_rank finished one epoch but reported nothing")
    result, files = reports[-1]
    return {
        "backend": backend,
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


# --------------------------------------------------------------------------------------------
# The wheel bundle for the bare GPU machine
# --------------------------------------------------------------------------------------------
def _locked_versions() -> dict[str, str]:
    pins = {}
    for lock in (Path(__file__).resolve().parents[2] / "requirements" / f for f in ("lock.txt", "build.txt")):
        if not lock.is_file():
            raise _UsageError(f"--prepare-wheels needs the repository's {lock} (run it from a checkout)")
        for line in lock.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.strip().lower().replace("_", "-")] = version.strip()
    pins.setdefault("xtcocotools", "1.14.3")  # built from source by setup.sh, not in the lock
    return pins


def prepare_wheels(dest: str) -> int:
    """Download the bundle into ``dest`` (pip download, cp312 manylinux / sdist); print its size."""
    pins = _locked_versions()
    missing = [name for name, _ in BUNDLE if name not in pins]
    if missing:
        raise _UsageError(f"requirements/lock.txt pins no version for {missing}")
    out = Path(dest).absolute()
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q", "--no-deps", "-d", str(out)]
    platform_args = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
    for plat in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"):
        platform_args += ["--platform", plat]
    wheels = [f"{name}=={pins[name]}" for name, how in BUNDLE if how == "wheel"]
    sdists = [f"{name}=={pins[name]}" for name, how in BUNDLE if how == "sdist"]
    print(f"downloading {len(wheels)} wheels (cp312, manylinux x86_64 or pure Python) into {out} ...", flush=True)
    subprocess.run([*pip, *platform_args, *wheels], check=True)
    print(f"downloading {len(sdists)} sdist(s): {', '.join(sdists)} ...", flush=True)
    # --no-build-isolation: pip reads the sdist's metadata with this venv's setuptools/Cython/numpy.
    subprocess.run([*pip, "--no-binary=:all:", "--no-build-isolation", *sdists], check=True)
    files = sorted(p for p in out.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"  {p.stat().st_size / 2**20:7.2f} MiB  {p.name}")
    ok = total / 2**20 <= BUNDLE_LIMIT_MIB
    print(f"total {total / 2**20:.2f} MiB in {len(files)} files (limit {BUNDLE_LIMIT_MIB:.0f} MiB: {'ok' if ok else 'TOO BIG'})")
    rel = os.path.relpath(out)
    print(
        "\non the GPU machine (Python 3.12 with torch; carry this folder with the checkout), from the repo root:\n"
        f"  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target {GPU_SITE} {rel}/* && "
        f"PYTHONPATH={GPU_SITE} python3 -m rspose_tune.bench gpu"
    )
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _fmt_ratio(x: float) -> str:
    return f"{x:.3f}x" if math.isfinite(x) else "nan"


def _summary(args: argparse.Namespace, results: dict[str, Any], errors: dict[str, str]) -> bool:
    """Print the summary table; True when every part ran and (on CUDA) every target is met."""
    check_targets = args.device == "cuda"
    rows: list[tuple[str, str, str, str, str, str]] = []
    ok = not errors
    if "losses" in results:
        r = results["losses"]
        rows.append(("(a) loss fwd+bwd, ms", f"{r['ms']['mse']:.2f}", f"{r['ms']['ours']:.2f}",
                     _fmt_ratio(r["ratio"]), "-", "-"))
    if "step" in results:
        r = results["step"]
        step_met = r["ratio"] <= TARGET_STEP_RATIO
        mem_met = r["mem_ratio"] <= TARGET_MEMORY_RATIO
        if check_targets:
            ok &= step_met and mem_met
        verdict = (lambda met: ("yes" if met else "NO")) if check_targets else (lambda met: "not on cpu")
        rows.append(("(b) train step, s (median)", f"{r['s']['mse']:.4f}", f"{r['s']['rspose']:.4f}",
                     _fmt_ratio(r["ratio"]), f"<= {TARGET_STEP_RATIO:.2f}x", verdict(step_met)))
        rows.append(("(b) peak memory, GiB", f"{r['peak_gib']['mse']:.3f}", f"{r['peak_gib']['rspose']:.3f}",
                     _fmt_ratio(r["mem_ratio"]), f"<= {TARGET_MEMORY_RATIO:.2f}x", verdict(mem_met)))
    if "rank" in results:
        r = results["rank"]
        ran = r["epoch"] >= 1 and math.isfinite(r["metric"]) and bool(r["checkpoint_files"])
        ok &= ran
        rows.append((f"(c) 1-rank {r['backend']} trial, 1 epoch", "-", f"{r['metric_name']} {r['metric']:.3f}", "-",
                     "reports + ckpt", "yes" if ran else "NO"))
    for part, err in errors.items():
        rows.append((f"{part}: FAILED", "-", "-", "-", "-", err[:60]))
    widths = [max(len(row[i]) for row in [("part", "MSE", "RSPose", "ratio", "target", "met"), *rows]) for i in range(6)]
    line = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    print("\n=== GPU check summary ===")
    print(line(("part", "MSE", "RSPose", "ratio", "target", "met")))
    print("-" * (sum(widths) + 2 * 5))
    for row in rows:
        print(line(row))
    ray_loaded = "ray" in sys.modules
    ok &= not ray_loaded
    print(f"ray imported: {'YES (it must not be)' if ray_loaded else 'no'}")
    print(f"result: {'all parts ran' if not errors else 'FAILED parts: ' + ', '.join(errors)}"
          + ("; targets " + ("met" if ok else "NOT met") if check_targets and "step" in results else
             "; targets not checked on cpu (toy model)" if "step" in results else ""))
    return ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parse(argv)
        if args.prepare_wheels:
            return prepare_wheels(args.prepare_wheels)
    except RSPoseTuneError as exc:  # _UsageError, BundleError
        return cli_error(exc)
    missing = _missing_modules()
    if missing:
        print(f"error: this Python ({sys.executable}) cannot import {', '.join(missing)}; on a bare GPU machine "
              "install the wheel bundle first (README \"GPU check\"; python -m rspose_tune.bench gpu "
              "--prepare-wheels DIR on a networked machine)", file=sys.stderr)
        return 2
    if sys.version_info >= (3, 12):
        # mmengine's Runner (collect_env) imports distutils, which Python 3.12 removed; importing
        # setuptools puts its copy in place as `distutils` (3.11, this project's Python, has its own).
        import setuptools  # noqa: F401
    import torch

    from rspose_tune.mmpose_adapter import setup_mmpose

    setup_mmpose()
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        device = f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        device = f"cpu ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)"
    print(f"device: {device}; torch {torch.__version__}; Python {platform.python_version()}; "
          f"parts {','.join(args.parts)}", flush=True)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for part, fn in (("losses", run_losses), ("step", run_step), ("rank", run_rank)):
        if part not in args.parts:
            continue
        t0 = time.perf_counter()
        try:
            results[part] = fn(args)
        except Exception as exc:  # noqa: BLE001 - printed with its traceback, in the summary and the exit status
            import traceback

            traceback.print_exc()
            errors[part] = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            _free_cuda()  # the part's models and optimizer state are garbage now
        _print_part(part, results[part], args, time.perf_counter() - t0)
    ok = _summary(args, results, errors)
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


def _missing_modules() -> list[str]:
    import importlib.util

    return [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]


def _print_part(part: str, r: dict[str, Any], args: argparse.Namespace, wall: float) -> None:
    print()
    if part == "losses":
        print(f"(a) loss fwd+bwd on {args.device}: heatmaps {r['shape']} (MSRAHeatmap targets); "
              f"median of {args.repeats} interleaved after {args.warmup} warm-up; {wall:.1f} s")
        for m, label in (("mse", "MMPose KeypointMSELoss"), ("ours", "RSPose spatial_rank_sort (rank+sort)")):
            print(f"    {label:38s} {r['ms'][m]:9.3f} ms   peak extra {r['peak_mib'][m]:8.1f} MiB")
        print(f"    ratio RSPose / MSE: {_fmt_ratio(r['ratio'])}")
    elif part == "step":
        print(f"(b) train step (preprocess, forward, loss, backward, AdamW) on {args.device}: ViTPose "
              f"256x192, ViT embed {args.embed_dims} x {args.num_layers} layers x {args.num_heads} heads "
              f"({r['params_m']:.0f} M params), batch {args.batch_size}; median of {args.repeats} interleaved "
              f"after {args.warmup} warm-up; build {r['build_s']:.1f} s, part {wall:.1f} s")
        for n in ("mse", "rspose"):
            loss = ", ".join(f"{k}={v:.4f}" for k, v in r["losses"].get(n, {}).items() if k.startswith("loss"))
            print(f"    {n:7s} median {r['s'][n]:.4f} s  min {r['min_s'][n]:.4f} s  peak {r['peak_gib'][n]:.3f} GiB "
                  f"(state {r['persistent_gib'][n]:.3f} GiB)  {loss}")
        print(f"    step ratio {_fmt_ratio(r['ratio'])} (target <= {TARGET_STEP_RATIO}x), memory ratio "
              f"{_fmt_ratio(r['mem_ratio'])} (target <= {TARGET_MEMORY_RATIO}x); {PAPER}")
        print(f"    memory: {r['memory_how']}")
    else:
        print(f"(c) trainables._rank: 1-rank {r['backend']} process group, demo preset, 1 epoch on {args.device}: "
              f"{r['metric_name']} {r['metric']:.4f} after epoch {r['epoch']}, loss {r['loss']:.4f}, world_size "
              f"{r['world_size']}, gpu_type {r['gpu_type']}, {r['reports']} report(s), checkpoint "
              f"{r['checkpoint_files']}; {r['wall_s']:.1f} s ({r['data_s']:.1f} s of it data); data {r['data']}")
