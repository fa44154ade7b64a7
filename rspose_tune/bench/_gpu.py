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

Cannot mislead, cannot hang: the preflight (:mod:`rspose_tune.bench._gpu_preflight`) names every
missing module in one ``error:`` line (exit 2); the process group times out
after ``--pg-timeout`` (60 s); ``--deadline`` (cuda 270 s) prints every thread's stack and exits
3; each part prints its figures when it ends, and ``--out DIR`` rewrites ``gpu_check.json`` then
and keeps ``gpu_check.log``.

``--prepare-wheels DIR`` (on a networked machine) writes the bundle the bare GPU machine needs
(:mod:`rspose_tune.bench._bundle`: derived from installed metadata, with a prebuilt cp312
xtcocotools wheel); ``tools/gpu_install.py`` installs it there. ``--rehearse`` runs that whole
route on this CPU machine (:mod:`rspose_tune.bench._rehearse`).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rspose_tune.bench._gpu_parts import free_cuda, run_losses, run_rank, run_step
from rspose_tune.bench._gpu_preflight import deep_import_problems, missing_modules, preflight
from rspose_tune.bench._gpu_record import JSON_NAME, LOG_NAME, _arm_deadline, _Record, _UsageError
from rspose_tune.errors import RSPoseTuneError, cli_error

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
            free_cuda()  # the part's models and optimizer state are garbage now
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
