"""``python -m rspose_tune.replay make-table``: record full learning curves for a replay table.

Trains every setting of a space-filling design (:func:`design_settings`) for the full budget on
each training seed, one after the other in this process, with the same config the live trainable
builds (:func:`rspose_tune.training.prepare_trial_config`) and the same per-epoch report
(:class:`rspose_tune.training.TuneReportHook`, without checkpoints), so every row is what a
live search would have written to its ``trials/*.parquet`` (columns of
:data:`rspose_tune.results.SCHEMA`; ``status`` ``completed`` on the last epoch).

Resumable: each finished curve is written at once to ``<work dir>/curves/<trial_id>.parquet``
(atomically); a restarted command skips the curves that are there and, when all are done, writes
the table (one Parquet file) with how and when it was made in its file metadata
(:func:`rspose_tune.results.read_metadata`: key ``table``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from rspose_tune.spaces import PARAM_NAMES, loss_param

__all__ = ["DEMO_TABLE", "DENSE_TABLE", "HELDOUT_TABLE", "design_settings", "local_settings", "main", "trial_id_of"]

#: The shipped demo table (package data).
DEMO_TABLE = Path(__file__).resolve().parent / "data" / "demo_curves.parquet"
#: The held-out demo table (package data): another design (40 settings, linear ``pos_thr``, design
#: seed 1) on other training seeds (4-7), for checking a change measured on :data:`DEMO_TABLE`
#: (docs/replay.md).
HELDOUT_TABLE = Path(__file__).resolve().parent / "data" / "demo_heldout_curves.parquet"
#: The demo table's denser part (package data): 24 settings in boxes around :data:`DEMO_TABLE`'s 3 best
#: (``make-table --around``), on its training seeds; replayed together with it (docs/replay.md).
DENSE_TABLE = Path(__file__).resolve().parent / "data" / "demo_dense_curves.parquet"

#: Design: how many settings of each on/off pattern (sort on, inst on), per 64 settings.
_PATTERN_SHARE = {(True, True): 32, (False, True): 12, (True, False): 12, (False, False): 8}


def _unit_to_value(spec: Any, u: float) -> float:
    """``u`` in [0, 1] as a value of ``spec`` (a preset's parameter, or a table's space entry as a dict)."""
    if isinstance(spec, Mapping):
        spec = SimpleNamespace(is_fixed=spec.get("low") is None, fixed=spec.get("fixed"), low=spec.get("low"),
                               high=spec.get("high"), log=bool(spec.get("log")))
    if spec.is_fixed:
        return spec.fixed
    low, high = float(spec.low), float(spec.high)
    if spec.log:
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return float(low + u * (high - low))


def _maximin_lhs(n: int, d: int, rng: np.random.Generator, candidates: int = 200) -> np.ndarray:
    """A Latin hypercube of ``n`` points in ``[0, 1]^d``: the best of ``candidates`` by minimum distance."""
    best, best_score = None, -1.0
    for _ in range(candidates):
        cut = (np.argsort(rng.random((d, n)), axis=1).T + rng.random((n, d))) / n
        if n > 1:
            diff = cut[:, None, :] - cut[None, :, :]
            dist = np.sqrt((diff**2).sum(-1)) + np.eye(n) * 1e9
            score = float(dist.min())
        else:
            score = 0.0
        if score > best_score:
            best, best_score = cut, score
    return best  # type: ignore[return-value]


def design_settings(preset: Any, n_settings: int = 64, seed: int = 0) -> list[dict[str, float | None]]:
    """A space-filling design over the preset's loss parameters, components switched off included.

    The settings are split over the on/off patterns of the components that may be off
    (:data:`_PATTERN_SHARE`: half with all on, the rest with sort and/or inst off) and within each
    pattern form a maximin Latin hypercube over the searched (log where the preset says so)
    dimensions that are on. The preset's first ``known_good`` setting replaces the first all-on
    point. Off components: coefficient 0.0, delta None (as the searcher suggests them).
    """
    if isinstance(n_settings, bool) or not isinstance(n_settings, int) or n_settings < 1:
        raise ValueError(f"`n_settings` is {n_settings!r}, but must be an int >= 1.")
    params = preset.params
    switchable = {c: params[f"coeff_{c}"].can_be_off for c in ("sort", "inst")}
    patterns = [p for p in _PATTERN_SHARE if all(on or switchable[c] for c, on in zip(("sort", "inst"), p))]
    if params["coeff_rank"].can_be_off:
        raise ValueError("design_settings expects the rank component to be always on (as the demo preset).")
    total = sum(_PATTERN_SHARE[p] for p in patterns)
    counts = {p: _PATTERN_SHARE[p] * n_settings // total for p in patterns}
    counts[patterns[0]] += n_settings - sum(counts.values())
    rng = np.random.default_rng(seed)
    out: list[dict[str, float | None]] = []
    for pattern in patterns:
        on = {"rank": True, "sort": pattern[0], "inst": pattern[1]}
        live = [n for n in PARAM_NAMES if loss_param(n).component is None or on[loss_param(n).component]]
        dims = [n for n in live if not params[n].is_fixed]
        points = _maximin_lhs(counts[pattern], len(dims), rng) if counts[pattern] else np.zeros((0, len(dims)))
        for row in points:
            setting: dict[str, float | None] = {}
            for name in PARAM_NAMES:
                if name not in live:  # a switched-off component
                    setting[name] = 0.0 if loss_param(name).kind == "coeff" else None
                elif name in dims:
                    setting[name] = _rounded(_unit_to_value(params[name], float(row[dims.index(name)])))
                else:
                    setting[name] = params[name].fixed
            out.append(setting)
    if preset.known_good and out:
        out[0] = {k: (0.0 if v is None and loss_param(k).kind == "coeff" else v) for k, v in preset.known_good[0].items()}
    return out


def local_settings(table: Any, n_settings: int, *, top: int = 3, radius: float = 0.15,
                   seed: int = 0) -> list[dict[str, float | None]]:
    """A denser design where a table's best settings are: ``n_settings`` new settings around its ``top`` best.

    Each of the ``top`` best settings of ``table`` (a :class:`rspose_tune.replay.CurveTable`, by
    mean final metric) gets ``n_settings // top`` of them (the best the remainder): a maximin Latin
    hypercube in the box of half-width ``radius`` around it in the unit cube of the table's searched
    dimensions (log-scaled where its space says so; clipped to the cube), with the centre's on/off
    components. The centres themselves are not repeated (they are in ``table``).
    """
    if isinstance(n_settings, bool) or not isinstance(n_settings, int) or n_settings < 1:
        raise ValueError(f"`n_settings` is {n_settings!r}, but must be an int >= 1.")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= min(n_settings, len(table.settings)):
        raise ValueError(f"`top` is {top!r}, but must be an int in [1, min(n_settings, the table's "
                         f"{len(table.settings)} settings)].")
    if not 0.0 < radius <= 0.5:
        raise ValueError(f"`radius` is {radius!r}, but must be in (0, 0.5].")
    searched = [n for n in PARAM_NAMES if table.space[n].get("low") is not None]
    rng = np.random.default_rng(seed)
    out: list[dict[str, float | None]] = []
    for rank, index in enumerate(table.best_indices(top)):
        centre = dict(zip(searched, table.unit_point(index)))
        live = [n for n in searched if not math.isnan(centre[n])]
        count = n_settings // top + (1 if rank < n_settings % top else 0)
        lows = np.array([max(0.0, centre[n] - radius) for n in live])
        highs = np.array([min(1.0, centre[n] + radius) for n in live])
        for row in _maximin_lhs(count, len(live), rng):
            setting = dict(table.settings[index])  # the centre's off components and fixed values
            for name, u in zip(live, lows + row * (highs - lows)):
                setting[name] = _rounded(_unit_to_value(table.space[name], float(u)))
            out.append(setting)
    return out


def _rounded(value: float) -> float:
    """4 decimals (3 significant digits below 0.01, where a log range such as pos_thr's lives)."""
    return round(value, 4) if abs(value) >= 0.01 else float(f"{value:.3g}")


def trial_id_of(index: int, seed: int) -> str:
    """Trial id of setting ``index`` trained on ``seed``: ``s017-seed1``."""
    return f"s{index:03d}-seed{seed}"


def _around(args, preset: Any) -> Any:
    """The ``--around`` table, recorded in the search space of ``--backbone`` (else one error)."""
    from rspose_tune.replay._common import ReplayError
    from rspose_tune.replay._table import _space_of_preset, load_table

    table = load_table([args.around])
    keys = ("low", "high", "log", "fixed", "allow_off")
    theirs = {n: {k: table.space[n].get(k) for k in keys} for n in PARAM_NAMES}
    ours = {n: {k: v for k, v in spec.items() if k in keys} for n, spec in _space_of_preset(preset).items()}
    if theirs != ours:
        differ = sorted(n for n in PARAM_NAMES if theirs[n] != ours.get(n))
        raise ReplayError(f"--around {args.around}: its search space differs from --backbone {args.backbone}'s in "
                          f"{differ}; a denser design must use the table's own space")
    return table


def _train_curve(preset: Any, setting: Mapping[str, Any], seed: int, trial_id: str, work: Path,
                 max_epochs: int) -> list[dict[str, Any]]:
    from mmengine.runner import Runner

    from rspose_tune.training import TuneReportHook, prepare_trial_config

    results: list[dict[str, Any]] = []
    trial_dir = work / "trials" / trial_id
    cfg = prepare_trial_config(preset, dict(setting), trial_dir, seed=seed, max_epochs=max_epochs)
    cfg.experiment_name = f"{trial_id}-{uuid.uuid4().hex[:8]}"
    runner = Runner.from_cfg(cfg)
    runner.register_hook(TuneReportHook(preset.metric, trial_id, report=lambda r, _c: results.append(dict(r)),
                                        checkpoint=False))
    runner.train()
    return results


def _best_settings(work: Path, jobs: Sequence[tuple[int, int]], mode: str, k: int) -> list[int]:
    """The ``k`` settings with the best mean final metric over their curves of ``jobs``, best first."""
    import pyarrow.parquet as pq

    finals: dict[int, list[float]] = {}
    for index, seed in jobs:
        rows = pq.read_table(work / "curves" / f"{trial_id_of(index, seed)}.parquet", columns=["epoch", "metric"])
        last = max(rows.to_pylist(), key=lambda r: r["epoch"])
        finals.setdefault(index, []).append(float(last["metric"]))
    sign = -1.0 if mode == "max" else 1.0

    def rank(i: int) -> tuple[float, int]:
        mean = float(np.mean(finals[i]))
        return (sign * mean if math.isfinite(mean) else math.inf, i)  # a diverged curve ranks last

    return sorted(finals, key=rank)[:k]


def _write_parquet(rows: list[dict[str, Any]], path: Path, metadata: Mapping[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rspose_tune.results import METADATA_KEY, SCHEMA

    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    from rspose_tune.errors import RSPoseTuneError, cli_error
    from rspose_tune.replay._common import _Parser

    parser = _Parser(
        prog="python -m rspose_tune.replay make-table",
        description="Record full learning curves of a space-filling design of settings (a replay table).",
    )
    parser.add_argument("--backbone", default="demo", help="preset name or YAML path (default: demo)")
    parser.add_argument("--out", default=str(DEMO_TABLE), help=f"table file to write (default: {DEMO_TABLE})")
    parser.add_argument("--work-dir", default="results/replay_table", help="curves so far (resume) and trial dirs")
    parser.add_argument("--settings", type=int, default=64, help="number of settings (default 64)")
    # action="extend": `--seeds 0 1 --seeds 2` is seeds 0 1 2 (a later --seeds used to replace the earlier)
    parser.add_argument("--seeds", type=int, nargs="+", action="extend", default=None,
                        help="training seeds (default 0 1)")
    parser.add_argument("--extra-seeds", type=int, nargs="+", action="extend", default=None,
                        help="further training seeds for the --extra-top best settings only, trained once every "
                             "--seeds curve is done (e.g. 2 3: 4 seeds for the best settings, so the replay can "
                             "hold a confirm stage there)")
    parser.add_argument("--extra-top", type=int, default=16,
                        help="how many settings get --extra-seeds: the best by their mean over --seeds (default 16)")
    parser.add_argument("--design-seed", type=int, default=0, help="seed of the space-filling design")
    parser.add_argument("--around", metavar="TABLE", default=None,
                        help="a denser design instead: --settings new settings in boxes around the --around-top best "
                             "settings of TABLE (a replay table of the same preset), to replay together with it")
    parser.add_argument("--around-top", type=int, default=None,
                        help="with --around: how many of TABLE's best settings get a box (default 3)")
    parser.add_argument("--radius", type=float, default=None,
                        help="with --around: the boxes' half-width in the unit cube of the searched dimensions "
                             "(default 0.15)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per curve (default: the preset's budget)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--n-train", type=int, default=None, help="demo data: training images (default: the demo's)")
    parser.add_argument("--n-val", type=int, default=None, help="demo data: validation images (default: the demo's)")
    parser.add_argument("--limit", type=int, default=None, help="train at most this many curves now (timing)")
    parser.add_argument("--partial", action="store_true",
                        help="write the table from the curves finished so far (metadata says which are missing)")
    args = parser.parse_args(argv)
    args.seeds = [0, 1] if args.seeds is None else args.seeds
    args.extra_seeds = [] if args.extra_seeds is None else args.extra_seeds
    for flag, seeds in (("--seeds", args.seeds), ("--extra-seeds", args.extra_seeds)):
        if len(set(seeds)) < len(seeds):
            parser.error(f"{flag} {seeds} names a seed twice")
    for flag, value, low in (("--settings", args.settings, 1), ("--threads", args.threads, 1),
                             ("--epochs", args.epochs, 1), ("--n-train", args.n_train, 1),
                             ("--n-val", args.n_val, 1), ("--limit", args.limit, 0),
                             ("--extra-top", args.extra_top, 1), ("--around-top", args.around_top, 1)):
        if value is not None and value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    if args.around is None and (args.around_top is not None or args.radius is not None):
        parser.error("--around-top and --radius need --around TABLE")
    args.around_top = 3 if args.around_top is None else args.around_top
    args.radius = 0.15 if args.radius is None else args.radius
    if args.around is not None and args.around_top > args.settings:
        parser.error(f"--around-top {args.around_top} must be <= --settings {args.settings} (a box needs a setting)")
    if not 0.0 < args.radius <= 0.5:
        parser.error(f"--radius must be in (0, 0.5], got {args.radius}")
    if set(args.extra_seeds) & set(args.seeds):
        parser.error(f"--extra-seeds {args.extra_seeds} must not repeat a --seeds seed {args.seeds}")
    try:
        return _make_table(args, argv)
    except RSPoseTuneError as exc:  # every user error: one line, exit 2
        return cli_error(exc)


def _make_table(args, argv: Sequence[str] | None) -> int:
    from rspose_tune.replay._common import ReplayError, _check_writable
    from rspose_tune.spaces import load_preset

    work = _check_writable(args.work_dir, "--work-dir", folder=True)  # before any training, not after it
    out = _check_writable(args.out, "--out", folder=False)
    data_root = None
    demo_sizes = {k: v for k, v in (("n_train", args.n_train), ("n_val", args.n_val)) if v is not None}
    if demo_sizes:
        data_root = str(work / "data")
    preset = load_preset(args.backbone, data_root=data_root)
    around = _around(args, preset) if args.around is not None else None  # before any file is written
    if preset.data.generated == "demo":
        from rspose_tune.demo_data import generate_demo_dataset

        generate_demo_dataset(preset.data.root, **demo_sizes)
    elif demo_sizes:
        raise ReplayError("--n-train/--n-val only apply to a preset with generated demo data")
    preset.validate_paths()

    import torch

    torch.set_num_threads(args.threads)
    max_epochs = args.epochs or preset.budget.max_epochs
    try:
        if around is None:
            settings = design_settings(preset, args.settings, seed=args.design_seed)
        else:
            settings = local_settings(around, args.settings, top=args.around_top, radius=args.radius,
                                      seed=args.design_seed)
    except ValueError as exc:
        flag = f"--backbone {args.backbone}" if around is None else f"--around {args.around}"
        raise ReplayError(f"{flag}: {exc}") from None
    (work / "curves").mkdir(parents=True, exist_ok=True)
    design = {"backbone": preset.name, "max_epochs": max_epochs, "demo_data": demo_sizes, "settings": settings}
    design_file = work / "design.json"
    if design_file.is_file():
        if json.loads(design_file.read_text()) != json.loads(json.dumps(design)):
            raise ReplayError(f"--work-dir {work} holds curves of another design (backbone, --epochs, --settings, "
                              f"--design-seed, --n-train/--n-val differ from {design_file}); use a new --work-dir")
    else:
        design_file.write_text(json.dumps(design, indent=1))
    from rspose_tune.results import build_metadata, make_row

    jobs = [(i, s) for s in args.seeds for i in range(len(settings))]  # seed 0 of all first
    done = 0
    extra: list[int] = []

    def pending():
        """The jobs in order; the --extra-seeds jobs join once every --seeds curve is there."""
        nonlocal extra
        yield from jobs
        if args.extra_seeds and all((work / "curves" / f"{trial_id_of(i, s)}.parquet").exists() for i, s in jobs):
            extra = _best_settings(work, jobs, preset.mode, args.extra_top)
            new = [(i, s) for s in args.extra_seeds for i in extra]
            jobs.extend(new)
            yield from new

    for index, seed in pending():
        tid = trial_id_of(index, seed)
        path = work / "curves" / f"{tid}.parquet"
        if path.exists():
            continue
        if args.limit is not None and done >= args.limit:
            break
        t0 = time.monotonic()
        results = _train_curve(preset, settings[index], seed, tid, work, max_epochs)
        rows = []
        for k, result in enumerate(results):
            status = "completed" if k == len(results) - 1 and result["epoch"] >= max_epochs else "running"
            rows.append(make_row(result, settings[index], run="replay-table", backbone=preset.name, trial_id=tid,
                                 status=status))
        _write_parquet(rows, path, {"seed": seed, "setting": index, "total_s": time.monotonic() - t0})
        done += 1
        last = results[-1] if results else {}
        print(f"[{dt.datetime.now():%H:%M:%S}] {tid}: {len(results)} epochs, {preset.metric} "
              f"{last.get('metric', float('nan')):.4f}, {time.monotonic() - t0:.1f} s", flush=True)
    missing = [trial_id_of(i, s) for i, s in jobs if not (work / "curves" / f"{trial_id_of(i, s)}.parquet").exists()]
    if args.extra_seeds and not extra:
        missing.append(f"--extra-seeds {args.extra_seeds} of the {args.extra_top} best settings (after every --seeds curve)")
    if missing and not args.partial:
        print(f"{len(jobs) - len(missing)} of {len(jobs)} curves done; run the same command again to continue.")
        return 0
    import pyarrow.parquet as pq

    rows, totals = [], []
    for index, seed in jobs:
        if trial_id_of(index, seed) in missing:
            continue
        part = pq.read_table(work / "curves" / f"{trial_id_of(index, seed)}.parquet")
        totals.append(json.loads(part.schema.metadata[b"rspose_tune"])["total_s"])
        rows.extend(part.to_pylist())
    if not rows:
        raise ReplayError(f"--partial: no curve is finished in --work-dir {args.work_dir} yet; no table to write")
    how = {
        "command": "python -m rspose_tune.replay make-table " + " ".join(argv if argv is not None else sys.argv[1:]),
        "made": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "design": (f"maximin Latin hypercube per on/off pattern {dict((str(k), v) for k, v in _PATTERN_SHARE.items())}"
                   f" (scaled to {args.settings}), design seed {args.design_seed}; setting 0 = the preset's known_good[0]"
                   if around is None else
                   f"maximin Latin hypercube of {args.settings} settings in boxes of half-width {args.radius} (unit cube) "
                   f"around the {args.around_top} best settings of {args.around} ({around.n_curves} curves), "
                   f"design seed {args.design_seed}"),
        "around": None if around is None else {
            "table": str(args.around), "top": args.around_top, "radius": args.radius,
            "centres": [around.settings[i] for i in around.best_indices(args.around_top)],
            "centre_values": [round(around.value(i), 4) for i in around.best_indices(args.around_top)]},
        "seeds": list(args.seeds),
        "extra_seeds": {"seeds": list(args.extra_seeds), "top": args.extra_top, "settings": extra,
                        "chosen_by": "mean final metric over --seeds"} if args.extra_seeds else None,
        "max_epochs": max_epochs,
        "torch_threads": args.threads,
        "demo_data": demo_sizes or "preset default",
        "curve_seconds": {"total": round(sum(totals), 1), "median": round(float(np.median(totals)), 1)},
        "trained": [min(r["timestamp"] for r in rows).isoformat(timespec="seconds"),
                    max(r["timestamp"] for r in rows).isoformat(timespec="seconds")],
        "complete": not missing,
        "missing_curves": missing,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
    }
    meta = build_metadata(run="replay-table", backbone=preset.name, max_epochs=max_epochs,
                          search_space=preset,
                          extra={"table": how})
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(rows, out, meta)
    print(f"wrote {out}: {len(jobs) - len(missing)} curves of {len(settings)} settings x {len(args.seeds)} seeds"
          + (f" + {len(args.extra_seeds)} seeds for the {len(extra)} best" if extra else "") + ", "
          f"{len(rows)} rows, {out.stat().st_size / 1024:.0f} KiB")
    return 0
