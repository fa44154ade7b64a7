"""The GPU check: RSPose vs MSE on one device, and a trial's rank code path, without Ray.

``python -m rspose_tune.bench gpu [--device cuda|cpu] [--parts losses,step,rank] ...``

Made to run on a bare single-GPU machine (no Ray, no network; the OpenMMLab packages carried
as wheels, see ``--prepare-wheels`` and docs/gpu_check.md). Three parts, each against its
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
(c) ``rank``: the trial's rank code path (:mod:`rspose_tune.training`: ``open_rendezvous`` ->
    ``process_group`` -> ``train_rank``) training the demo preset for one epoch in a 1-rank
    process group (NCCL on CUDA, gloo on CPU), config from
    ``rspose_tune.training.prepare_trial_config``; it must report the preset's metric
    with a checkpoint.

``--device cpu`` runs a small variant (narrowed ViT, small batches, few repeats; the CI test)
whose ratios are printed but not held against the targets (a toy model's step is dominated by
the loss's fixed cost). Without ``--device`` and with no GPU visible it runs that variant and
says so in one line (``--device cuda`` without a GPU is refused). Nothing here imports Ray; the
summary says so.

Cannot mislead, cannot hang: before anything else every module of the bundle's closure is looked
up, and the registries mmengine would import lazily (and whose failures it swallows) are imported,
so every missing module is named in one ``error:`` line (exit 2); the process group times out
after ``--pg-timeout`` (60 s); ``--deadline`` (cuda 270 s) prints every thread's stack and exits
3; each part prints its figures when it ends, and ``--out DIR`` rewrites ``gpu_check.json`` then
and keeps ``gpu_check.log``.

``--prepare-wheels DIR`` (on a networked machine) writes the bundle the bare GPU machine needs
(:mod:`rspose_tune.bench._bundle`: derived from installed metadata, with a prebuilt cp312
xtcocotools wheel); ``tools/gpu_install.py`` installs it there. ``--rehearse`` runs that whole
route on this CPU machine (:mod:`rspose_tune.bench._rehearse`).
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError, cli_error

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "preflight"]

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
#: Default of ``--pg-timeout``: how long the 1-rank process group (and its TCPStore) may wait in a
#: collective before it fails (rspose_tune.training._rank's own default, 1800 s, would eat a GPU loan).
PG_TIMEOUT_S = 60.0
#: Default of ``--deadline`` per device: past it the check prints where it was, writes what it has
#: and exits 3 (0 = none). The CUDA run is sized to a short GPU loan; the CPU variant has none.
DEADLINE_S = {"cuda": 270.0, "cpu": 0.0}
#: mmengine imports a scope's ``registry`` module inside ``try/except`` and turns any failure into
#: "X is not in the registry" (a KeyError far from its cause). The check imports these scopes'
#: registries, and every location those registries would import lazily, up front, where an import
#: error shows its cause; plus the modules it runs itself.
REGISTRY_SCOPES = ("mmpose", "mmpretrain")
DEEP_IMPORTS = ("mmengine.runner", "mmcv.transforms", "mmpretrain.models", "mmpretrain.datasets", "mmdet.utils",
                "xtcocotools.coco", "pycocotools.coco", "rspose_tune.bench._losses", "rspose_tune.bench._step",
                "rspose_tune.demo_data", "rspose_tune.spaces", "rspose_tune.training")
JSON_NAME = "gpu_check.json"
LOG_NAME = "gpu_check.log"


class _UsageError(RSPoseTuneError):
    """A bad flag or environment: printed as one ``error:`` line, exit 2."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one `error:` line, no usage block
        raise _UsageError(message)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="python -m rspose_tune.bench gpu", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="cuda (ViTPose-H, batch 64; refused without a visible GPU) or cpu (small variant); "
                        "default: cuda if one is visible, else the CPU variant, said in one line")
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
    p.add_argument("--pg-timeout", type=float, default=PG_TIMEOUT_S, metavar="S",
                   help=f"(c) seconds a collective or the rendezvous may wait before the process group fails "
                        f"(default {PG_TIMEOUT_S:.0f})")
    p.add_argument("--deadline", type=float, metavar="S",
                   help="exit 3 after S seconds, printing every thread's stack and keeping what --out has "
                        f"(default: cuda {DEADLINE_S['cuda']:.0f}, cpu none; 0 = none)")
    p.add_argument("--out", metavar="DIR", help=f"write {JSON_NAME} (the figures, rewritten after each part) and "
                   f"{LOG_NAME} (everything printed) into DIR, e.g. $OUT on the device machine")
    p.add_argument("--prepare-wheels", metavar="DIR",
                   help="derive the GPU machine's wheel bundle and write it into DIR (networked machine; replaced "
                        "whole), print what it holds and why, exit")
    p.add_argument("--python312", metavar="PATH", help="with --prepare-wheels or --rehearse: the CPython 3.12 that "
                   "builds the xtcocotools wheel / the rehearsal venv (default: python3.12 on PATH, else pyenv's)")
    p.add_argument("--rehearse", action="store_true",
                   help="rehearse the GPU machine on this CPU machine: a python3.12 venv holding only the declared "
                        "packages, the bundle prepared and installed as docs/gpu_check.md says, then --device cpu; exit")
    p.add_argument("--rehearse-dir", metavar="DIR", help="with --rehearse: work (and keep everything) in DIR "
                   "instead of a temporary folder that is removed")
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    """Flags only; nothing imported (torch may be missing: the preflight names it)."""
    args = _parser().parse_args(argv)
    modes = [f for f, on in (("--prepare-wheels", args.prepare_wheels), ("--rehearse", args.rehearse)) if on]
    if len(modes) > 1:
        raise _UsageError(f"{' and '.join(modes)} exclude each other")
    if args.rehearse_dir and not args.rehearse:
        raise _UsageError("--rehearse-dir needs --rehearse")
    if args.python312 and not modes:
        raise _UsageError("--python312 needs --prepare-wheels or --rehearse")
    if modes:
        return args
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not parts or any(s not in PARTS for s in parts):
        raise _UsageError(f"--parts must be a comma-separated subset of {list(PARTS)}, got {args.parts!r}")
    args.parts = [s for s in PARTS if s in parts]
    if not (args.pg_timeout > 0 and math.isfinite(args.pg_timeout)):
        raise _UsageError(f"--pg-timeout must be a number of seconds > 0, got {args.pg_timeout}")
    if args.deadline is not None and not (args.deadline >= 0 and math.isfinite(args.deadline)):
        raise _UsageError(f"--deadline must be a number of seconds >= 0 (0 = none), got {args.deadline}")
    for key in ("loss_batch", "batch_size", "embed_dims", "num_layers", "num_heads", "repeats", "warmup"):
        value = getattr(args, key)
        if value is not None and value < 1:  # warmup: AdamW creates its state in the first step
            raise _UsageError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    if args.device is not None:  # the profile is known: check the combinations now, before any import
        _fill_profile(args, args.device)
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise _UsageError(f"--out {args.out}: exists and is not a folder")
    return args


def _resolve_device(args: argparse.Namespace) -> None:
    """Pick the device (torch is importable by now) and fill the profile's defaults; check sizes."""
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        args.device_note = "" if args.device == "cuda" else "no CUDA device visible: running the CPU variant"
    else:
        args.device_note = ""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise _UsageError(
            f"--device cuda was given, but torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use --device cpu"
        )
    _fill_profile(args, args.device)


def _fill_profile(args: argparse.Namespace, device: str) -> None:
    """The device profile's values for flags not given; then the checks that need all of them."""
    for key, value in PROFILES[device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.deadline is None:
        args.deadline = DEADLINE_S[device]
    if args.demo_train < 0 or args.demo_val < 0 or (args.demo_train and args.demo_val < 1):
        raise _UsageError(f"--demo-train must be >= 0 and --demo-val >= 1 with it, got {args.demo_train}, {args.demo_val}")
    if args.demo_train and args.data_root:
        raise _UsageError("--data-root and --demo-train > 0 exclude each other (--demo-train 0 uses --data-root)")
    if args.embed_dims % args.num_heads:
        raise _UsageError(f"--embed-dims ({args.embed_dims}) must be divisible by --num-heads ({args.num_heads})")


# --------------------------------------------------------------------------------------------
# Preflight: every module the check needs, named at once
# --------------------------------------------------------------------------------------------
def preflight() -> list[str]:
    """What this Python cannot import, as readable items; empty when the check can run."""
    problems, missing = missing_modules()
    return problems + deep_import_problems(missing)


def missing_modules() -> tuple[list[str], list[str]]:
    """Every top-level module of the bundle's closure that cannot be found (nothing is imported).

    Returns ``(readable items, module names)``.
    """
    import importlib.util

    from rspose_tune.bench._bundle import CHECK_MODULES, MACHINE_PACKAGES

    problems: list[str] = []
    missing: list[str] = []
    for module, dist in CHECK_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
            where = "the machine's" if dist in MACHINE_PACKAGES else "in the bundle"
            problems.append(f"{module} ({dist}, {where})")
    return problems, missing


def deep_import_problems(missing: list[str]) -> list[str]:
    """Import the registries and modules that mmengine would import lazily and swallow (:data:`DEEP_IMPORTS`).

    Failures caused by a module already in ``missing`` are not repeated.
    """
    import importlib

    if "torch" in missing or "setuptools" in missing:
        return []  # nothing below imports without them
    if sys.version_info >= (3, 12):
        # mmengine's Runner (collect_env) imports distutils, which Python 3.12 removed; importing
        # setuptools puts its copy in place as `distutils` (3.11, this project's Python, has its own).
        import setuptools  # noqa: F401
    problems: list[str] = []
    deep: list[str] = []
    try:
        from rspose_tune.mmpose_adapter import setup_mmpose

        setup_mmpose()  # the mmcv.ops shim, mmpose.models, rspose_tune's registrations
        from mmengine.registry import Registry

        for scope in REGISTRY_SCOPES:
            deep.append(f"{scope}.registry")
            registry_module = importlib.import_module(f"{scope}.registry")
            deep += sorted({loc for v in vars(registry_module).values() if isinstance(v, Registry)
                            for loc in v._locations})
    except Exception as exc:  # noqa: BLE001 - reported as an import problem, with its cause
        problems.append(_import_problem("rspose_tune.mmpose_adapter.setup_mmpose()", exc, missing))
    for name in (*deep, *DEEP_IMPORTS):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            problems.append(_import_problem(name, exc, missing))
    return list(dict.fromkeys(p for p in problems if p))


def _import_problem(name: str, exc: BaseException, missing: list[str]) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if exc.name.split(".")[0] in missing:
            return ""  # already named
        return f"{name} (No module named {exc.name!r})"
    return f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


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


class _Tee:
    """A text stream that writes to the original stream and to the log file (both flushed per write)."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._stream.flush()
        self._log.write(text)
        self._log.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


class _Record:
    """``--out DIR``: the log (a tee of stdout and stderr) and the JSON, rewritten whole after each step."""

    def __init__(self, out: str | None, argv: list[str]):
        self.dir = Path(out).absolute() if out else None
        self.data: dict[str, Any] = {"argv": ["python", "-m", "rspose_tune.bench", "gpu", *argv],
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "finished": False, "status": "starting", "log": LOG_NAME,
                                     "results": {}, "errors": {}}
        self.log = None
        self._saved = None

    def open(self) -> None:
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.log = (self.dir / LOG_NAME).open("w", encoding="utf-8")
            self.write()
        except OSError as exc:
            raise _UsageError(f"--out {self.dir}: cannot write there ({exc.strerror or exc})") from None
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self.log), _Tee(sys.stderr, self.log)

    def update(self, **kw: Any) -> None:
        self.data.update(kw)
        self.write()

    def write(self) -> None:
        if self.dir is None:
            return
        tmp = self.dir / f".{JSON_NAME}.tmp"
        tmp.write_text(json.dumps(_jsonable(self.data), indent=1) + "\n")
        os.replace(tmp, self.dir / JSON_NAME)

    def close(self) -> None:
        if self._saved:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self.log:
            self.log.close()
            self.log = None


def _arm_deadline(seconds: float, record: _Record) -> Callable[[], None]:
    """After ``seconds``: print every thread's stack, mark the JSON, exit 3. Returns the disarm function.

    A Python timer thread does it (it needs the GIL; collectives and CUDA waits release it);
    faulthandler's C watchdog, 30 s later, exits even if the interpreter is wedged.
    """
    import faulthandler
    import threading

    if seconds <= 0:
        return lambda: None

    def fire() -> None:
        print(f"\nerror: --deadline {seconds:.0f} s reached; the stacks of every thread follow; exit 3", file=sys.stderr,
              flush=True)
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        if record.log:
            record.log.flush()
            faulthandler.dump_traceback(file=record.log, all_threads=True)
        record.update(status=f"deadline: stopped after {seconds:.0f} s")
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(seconds + 30, exit=True, file=sys.__stderr__)

    def disarm() -> None:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()

    return disarm


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for stream in (sys.stdout, sys.stderr):  # each line out as soon as printed, also into a pipe
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    try:
        args = _parse(argv)
        if args.prepare_wheels:
            from rspose_tune.bench import _bundle

            try:
                return _bundle.prepare(args.prepare_wheels, python312=args.python312)
            except _bundle.BundleError as exc:
                raise _UsageError(str(exc)) from None
        if args.rehearse:
            from rspose_tune.bench import _rehearse

            return _rehearse.rehearse(workdir=args.rehearse_dir, python312=args.python312)
        record = _Record(args.out, argv)
        record.open()
    except RSPoseTuneError as exc:  # _UsageError, BundleError
        return cli_error(exc)
    try:
        return _check(args, record)
    finally:
        record.close()


def _check(args: argparse.Namespace, record: _Record) -> int:
    t_pre = time.perf_counter()
    problems, missing = missing_modules()
    if "torch" not in missing:
        try:
            _resolve_device(args)  # imports torch only: a bad --device fails before the slow imports
        except _UsageError as exc:
            record.update(status="bad flags", error=str(exc))
            return cli_error(exc)
    problems += deep_import_problems(missing)
    if problems:
        record.update(status="preflight failed", preflight=problems)
        return cli_error(_UsageError(
            f"this Python ({sys.executable}, {platform.python_version()}) cannot import: {'; '.join(problems)}. On the "
            "bare GPU machine install the wheel bundle first (docs/gpu_check.md: python3 tools/gpu_install.py "
            "gpu_wheels SITE, then PYTHONPATH=SITE)"))
    import torch

    from rspose_tune.bench._bundle import MACHINE_PACKAGES

    if args.device_note:
        print(args.device_note, flush=True)
    disarm = _arm_deadline(args.deadline, record)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        device = f"{name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        name = "cpu"
        device = f"cpu ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)"
    versions = _versions(("torch", "torchvision", "numpy", "mmengine", "mmcv-lite", "mmpose", "mmpretrain", "mmdet",
                          "xtcocotools", "setuptools"))
    differ = [f"{d} {v} (declared {MACHINE_PACKAGES[d]})" for d, v in versions.items()
              if MACHINE_PACKAGES.get(d) and v and v.split("+")[0] != MACHINE_PACKAGES[d]]
    print(f"device: {device}; torch {torch.__version__}; Python {platform.python_version()}; "
          f"parts {','.join(args.parts)}; preflight {time.perf_counter() - t_pre:.1f} s", flush=True)
    if differ:
        print(f"note: this machine differs from the declared package list: {', '.join(differ)}", flush=True)
    record.update(status="running", device=args.device, device_name=name, device_detail=device,
                  device_note=args.device_note, python=platform.python_version(), versions=versions,
                  pg_timeout_s=args.pg_timeout, deadline_s=args.deadline,
                  profile={k: getattr(args, k) for k in PROFILES[args.device]})
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
            record.update(errors=errors)
            continue
        finally:
            _free_cuda()  # the part's models and optimizer state are garbage now
        results[part]["part_wall_s"] = time.perf_counter() - t0
        _print_part(part, results[part], args, results[part]["part_wall_s"])
        record.update(results=results)
    ok = _summary(args, results, errors)
    wall = time.perf_counter() - start
    print(f"total wall time {wall:.1f} s")
    disarm()
    record.update(finished=True, status="ok" if ok else "failed", ok=ok, wall_s=wall, ray_imported="ray" in sys.modules,
                  targets_checked=args.device == "cuda")
    return 0 if ok else 1


def _versions(names) -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


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
        print(f"(c) rspose_tune.training: 1-rank {r['backend']} process group, demo preset, 1 epoch on {args.device}: "
              f"{r['metric_name']} {r['metric']:.4f} after epoch {r['epoch']}, loss {r['loss']:.4f}, world_size "
              f"{r['world_size']}, gpu_type {r['gpu_type']}, process-group timeout {r['pg_timeout_s']:.0f} s, {r['reports']} report(s), checkpoint "
              f"{r['checkpoint_files']}; {r['wall_s']:.1f} s ({r['data_s']:.1f} s of it data); data {r['data']}")
