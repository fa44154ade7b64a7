"""``python -m rspose_tune.search``: Optuna TPE + ASHA over the RSPose loss settings on Ray.

Wiring only: the preset (:mod:`rspose_tune.spaces`), the trainable
(:mod:`trainables.mmpose_trainable`), the searcher (:mod:`rspose_tune.searcher`), the Parquet
callback (:mod:`rspose_tune.results`), then the report (:mod:`rspose_tune.report`) and the export
(:mod:`rspose_tune.export`) of the best setting.

With no arguments it runs the CPU ``demo`` preset on a local Ray and finishes in a few minutes.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError, cli_error

import argparse
import dataclasses
import functools
import ipaddress
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from rspose_tune import DEFAULT_STORAGE
from rspose_tune.runspec import (
    SPEC_FILE,
    RunSpec,
    RunSpecError,
    default_run_name,
    write_spec,
    exists,
    filesystem,
    is_uri,
    join,
    latest_unfinished,
    mark_finished,
    provenance,
    read_spec,
    resolve_storage,
    spec_exists,
    trial_dir_name,
)
from rspose_tune._flags import int_at_least
from rspose_tune._ray_compat import check_ray_version, restored_search_alg, use_classic_progress_table
from rspose_tune._resources import ResourceError, check_feasible, plan_ranks, rank_bundle
from rspose_tune._stages import resolve_warm_start, stage_settings
from rspose_tune.spaces import PARAM_NAMES, MissingDataError, SearchSpaceError, budget_problem, list_presets, load_preset

__all__ = ["SearchError", "build_parser", "main"]

DEFAULT_PRESET = "demo"
DEFAULT_TRIALS = {"demo": 8}
FALLBACK_TRIALS = 32
#: Flags that only say how and where a run executes: --resume accepts any value for them.
RESUME_MAY_CHANGE = ("--storage", "--name", "--address", "--max-concurrent", "--num-cpus",
                     "--allow-pending-trials", "--dashboard-host", "--dashboard-port", "--no-dashboard",
                     "--no-report", "--verbose")  # fmt: skip


class SearchError(RSPoseTuneError, RuntimeError):
    """A problem with the user's flags or environment, reported as one line, exit code 2."""


def _positive_int(flag: str):
    return int_at_least(flag, 1)


def _non_negative_int(flag: str):
    return int_at_least(flag, 0)


def _non_negative_float(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number >= 0, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number >= 0, got {text}")
        return value

    return parse


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None/False ones (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rspose_tune.search",
        description=(
            "Tune the RSPose loss hyperparameters of an MMPose model: Optuna TPE proposes, "
            "ASHA stops weak trials early, Ray runs trials in parallel (locally or on a cluster). "
            "Results go to <storage>/<name>/trials/ (Parquet); the report and the exported best "
            "config are printed at the end."
        ),
        formatter_class=_HelpFormatter,
    )
    what = parser.add_argument_group("what to search")
    what.add_argument("--backbone", "--preset", dest="backbone", default=None,
                      help=f"search-space preset (a name from search_spaces/ or a YAML path); one of {list_presets()} "
                      f"(default: {DEFAULT_PRESET})")
    what.add_argument("--search-dir", default=None, help="extra folder of preset YAML files")
    what.add_argument("--num-trials", type=_positive_int("--num-trials"), default=None,
                      help=f"trials to run (default: {DEFAULT_TRIALS} by preset, else {FALLBACK_TRIALS})")
    what.add_argument("--scheduler", choices=("asha", "fifo"), default=None,
                      help="asha: stop weak trials early; fifo: every trial runs the full budget (baseline) "
                      "(default: asha)")
    what.add_argument("--sampler", choices=("tpe", "random"), default=None,
                      help="tpe: Optuna TPE after its random start-up trials; random: random search (baseline) "
                      "(default: tpe)")
    what.add_argument("--seed", type=int, default=None,
                      help="seed of the searcher and of every trial's training (default: 0)")
    what.add_argument("--max-epochs", type=_positive_int("--max-epochs"), default=None,
                      help="full budget per trial (default: the preset's)")
    what.add_argument("--grace-epochs", type=_positive_int("--grace-epochs"), default=None,
                      help="ASHA grace period in epochs (default: the preset's)")
    what.add_argument("--reduction-factor", type=_positive_int("--reduction-factor"), default=None,
                      help="ASHA reduction factor, >= 2 (default: the preset's)")
    what.add_argument("--data-root", default=None, help="dataset root (overrides the preset and RSPOSE_TUNE_DATA_ROOT)")
    what.add_argument("--weights", default=None,
                      help="pretrained backbone checkpoint path, or 'none' (overrides the preset and RSPOSE_TUNE_WEIGHTS)")
    trust = parser.add_argument_group(
        "a setting you can trust",
        "after the search: re-run the best settings on further seeds, compare with the stock loss; "
        "before it: start from earlier runs, or price the search with --dry-run",
    )
    trust.add_argument("--confirm-top", type=_non_negative_int("--confirm-top"), default=None, metavar="K",
                       help="after the search, re-run the K best full-budget settings at full budget (never pruned) "
                       "on --confirm-seeds further training seeds; 0: no confirm stage (default: the preset's "
                       "confirm.top)")  # fmt: skip
    trust.add_argument("--confirm-seeds", type=_positive_int("--confirm-seeds"), default=None, metavar="N",
                       help="seeds of the confirm stage: the N after --seed, >= 2 (default: the preset's confirm.seeds)")
    trust.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                       help="also train the base config with its stock loss (KeypointMSELoss, KLDiscretLoss ...) at "
                       "full budget, on the confirm seeds (without a confirm stage: on --seed); the report gives "
                       "the chosen setting's gain over it (default: the preset's confirm.baseline)")  # fmt: skip
    trust.add_argument("--warm-start", nargs="+", action="extend", default=None, metavar="RUN",
                       help="enqueue the chosen setting of each earlier RUN (a run folder or URI, or a run name under "
                       "--storage; any backbone) after the preset's known-good settings")  # fmt: skip
    trust.add_argument("--dry-run", action="store_true",
                       help="validate the flags and preset, print the ASHA rungs, trials and epochs per rung, "
                       "expected and worst-case epochs and GPU-hours, then exit: starts no Ray, reads no data, "
                       "writes nothing")  # fmt: skip
    trust.add_argument("--epoch-gpu-hours", type=_non_negative_float("--epoch-gpu-hours"), default=None, metavar="H",
                       help="with --dry-run: GPU-hours one epoch of one trial costs (default: the preset's "
                       "cost.epoch_gpu_hours)")  # fmt: skip
    where = parser.add_argument_group("where it runs")
    where.add_argument("--address", default=None,
                       help="Ray cluster to join ('auto' or host:port); default: RAY_ADDRESS, else start a local Ray")
    where.add_argument("--max-concurrent", type=_positive_int("--max-concurrent"), default=None,
                       help="trials running at once (default: as many as resources allow, at most 8)")
    where.add_argument("--gpus-per-trial", type=_non_negative_float("--gpus-per-trial"), default=None,
                       help="GPUs per trial, fractions allowed (default: the preset's)")
    where.add_argument("--cpus-per-trial", type=_non_negative_float("--cpus-per-trial"), default=None,
                       help="CPUs per trial, shared by its ranks (default: the preset's)")
    where.add_argument("--workers-per-trial", type=_positive_int("--workers-per-trial"), default=None,
                       help="ranks (processes) each trial trains on, data-parallel: NCCL with one GPU each, or "
                            "gloo on CPUs (default: the preset's, else the GPUs per trial when > 1, else 1)")
    where.add_argument("--num-workers", type=_non_negative_int("--num-workers"), default=None,
                       help="DataLoader worker processes per rank (default: the base config's)")
    where.add_argument("--allow-pending-trials", action="store_true",
                       help="skip the check that some node can hold a trial (an autoscaler will add nodes)")
    where.add_argument("--num-cpus", type=_positive_int("--num-cpus"), default=None,
                       help="CPUs of a local Ray (default: all); ignored when joining a cluster")
    where.add_argument("--storage", default=DEFAULT_STORAGE,
                       help="results root: a local dir (relative: to the working directory, so the default is "
                       "./results there), a shared filesystem path, or a URI pyarrow.fs opens (file://..., "
                       "s3://bucket/prefix)")
    where.add_argument("--name", default=None,
                       help="run name, a folder under --storage (default: <backbone>-<UTC timestamp>, new for "
                       "every start); with --resume: the run to continue")
    where.add_argument("--resume", action="store_true",
                       help="continue the run <storage>/<name> from its run spec (without --name: the most recent "
                       "unfinished run of --backbone's preset); only the flags listed below may be given "
                       "with other values than the run was started with")
    dash = parser.add_argument_group("dashboard (local Ray only)")
    dash.add_argument("--dashboard-host", default="127.0.0.1",
                      help="interface the Ray dashboard binds to; anything but loopback exposes Ray's job API")
    dash.add_argument("--dashboard-port", type=_positive_int("--dashboard-port"), default=8265)
    dash.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    out = parser.add_argument_group("output")
    out.add_argument("--no-report", action="store_true", help="skip the report and the export at the end")
    out.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Ray Tune progress verbosity")
    parser.epilog = (
        "A run's identity (preset, data root, weights, number of trials, budget, seed, scheduler, sampler, "
        "resources per trial, confirm stage, baseline, warm-start settings) is written once to "
        "<storage>/<name>/run_spec.yaml; --resume reads it and refuses "
        "flags that differ from it. Flags that may change on --resume: " + ", ".join(RESUME_MAY_CHANGE) + ". "
        "Exit status: 0 when some trial completed or was pruned, 1 when none did (one line per distinct "
        "error), 2 for a user error (one 'error:' line)."
    )
    return parser


@dataclass(frozen=True)
class Plan:
    """Everything resolved from the flags before Ray starts."""

    preset: object
    name: str
    storage: str
    run_dir: str
    num_trials: int
    max_epochs: int
    grace: int
    reduction_factor: int
    gpus: float
    cpus: float
    address: str | None
    workers: int = 1  # ranks per trial; the GPUs and CPUs above are shared by them
    # The run spec (<run_dir>/run_spec.yaml) holds all of the above but ``address``; the search
    # reads the run's identity from it, never from the flags.
    spec: RunSpec | None = None
    new_run: bool = True  # False: --resume (the spec exists; Ray's state too, unless it never started)


def _check_storage(storage: str) -> str:
    """The storage root as an absolute local path or a non-local URI; local folders are created."""
    try:
        resolved = resolve_storage(storage)
    except RunSpecError as exc:
        raise SearchError(str(exc)) from None
    if is_uri(resolved):
        try:
            filesystem(resolved)
        except (ValueError, OSError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError
            raise SearchError(f"--storage {storage!r}: pyarrow.fs cannot open it ({exc})") from None
        return resolved
    path = Path(resolved)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchError(f"--storage {storage!r}: cannot create the folder ({exc.strerror})") from exc
    probe = path / f".rspose_write_probe_{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SearchError(f"--storage {storage!r}: the folder is not writable ({exc.strerror})") from exc
    return str(path)


def _check_name(name: str) -> str:
    if "/" in name or name in {"", ".", ".."} or name.startswith((".", "_")):
        raise SearchError(f"--name must be a plain folder name (not starting with '.' or '_'), got {name!r}")
    return name


def _new_run_name(storage: str, backbone: str) -> str:
    """``<backbone>-<UTC timestamp>``, with ``-2``, ``-3`` ... when started twice in one second."""
    base = default_run_name(backbone)
    name, n = base, 1
    while exists(join(storage, name)):
        n += 1
        name = f"{base}-{n}"
    return name


def _prepare_data(preset) -> None:
    if getattr(preset.data, "generated", None) == "demo":
        from rspose_tune.demo_data import generate_demo_dataset, is_complete

        if not is_complete(preset.data.root):  # made once, here, so trials never race to write it
            generate_demo_dataset(preset.data.root)
    preset.validate_paths()  # missing data or weights: fail before any trial starts


def _budget(args: argparse.Namespace, preset) -> tuple[int, int, int]:
    """``(max_epochs, grace, reduction_factor)`` from the flags, else the preset; validated."""
    budget = preset.budget
    max_epochs = args.max_epochs or budget.max_epochs
    grace = args.grace_epochs or min(budget.grace_epochs, max_epochs)
    rf = args.reduction_factor or budget.reduction_factor
    # The preset's own budget rules (spaces.budget_problem), naming the flag that broke them.
    problem = budget_problem(max_epochs, grace, rf, budget.val_interval)
    if problem is None:
        return max_epochs, grace, rf
    field, _ = problem
    if field == "reduction_factor":
        raise SearchError(f"--reduction-factor must be >= 2, got {rf}")
    if field == "grace_epochs" and grace > max_epochs:
        raise SearchError(f"--grace-epochs ({grace}) must not exceed --max-epochs ({max_epochs})")
    source = f"preset {preset.name!r} ({preset.source})"
    if field == "val_interval":
        raise SearchError(f"--max-epochs {max_epochs} is below the validation interval {budget.val_interval} of "
                          f"{source}: no trial would ever be validated")  # fmt: skip
    given = "--grace-epochs" if args.grace_epochs else "the grace period min(budget.grace_epochs, --max-epochs)"
    raise SearchError(f"{given} ({grace}) must be a multiple of the validation interval {budget.val_interval} of "
                      f"{source}: ASHA's rungs (grace x reduction factor^k) must fall on epochs that are validated")


def _preset_budget_resources(args: argparse.Namespace):
    """The preset the flags name, its budget ``(max_epochs, grace, rf)`` and per-trial resources
    ``(gpus, cpus, workers)``, each flag overriding the preset's value (shared by a start and
    ``--dry-run``)."""
    preset = load_preset(args.backbone or DEFAULT_PRESET, search_dir=args.search_dir, data_root=args.data_root,
                         weights=args.weights)  # fmt: skip
    gpus = preset.resources.gpus if args.gpus_per_trial is None else args.gpus_per_trial
    cpus = preset.resources.cpus if args.cpus_per_trial is None else args.cpus_per_trial
    try:
        workers = plan_ranks(gpus, cpus, args.workers_per_trial or preset.resources.workers)
    except ResourceError as exc:
        raise SearchError(str(exc)) from None
    return preset, _budget(args, preset), (gpus, cpus, workers)


def plan(args: argparse.Namespace, argv: list[str] | None = None) -> Plan:
    """Validate flags, the preset and its files (or read the run spec on ``--resume``).

    Touches nothing but the storage folder (and generates the demo data when it is missing).
    ``argv`` (default ``sys.argv[1:]``) is the command line the run spec records.
    """
    storage = _check_storage(args.storage)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if args.resume:
        return _plan_resume(args, storage, address)
    preset, (max_epochs, grace, rf), (gpus, cpus, workers) = _preset_budget_resources(args)
    if args.name is not None:
        name = _check_name(args.name)
        if exists(join(storage, name)):
            raise SearchError(f"run {join(storage, name)!r} already exists: pass --resume to continue it, or "
                              "choose another --name (without --name every start gets a new one)")  # fmt: skip
    else:
        name = _new_run_name(storage, preset.name)
    from rspose_tune.searcher import TPE_OPTIONS, startup_trials

    seed = 0 if args.seed is None else args.seed
    stages = stage_settings(args, preset, seed)
    warm, notes = resolve_warm_start(args.warm_start or (), storage, preset)
    for note in notes:
        print(note)
    _prepare_data(preset)
    num_trials = args.num_trials or DEFAULT_TRIALS.get(preset.name, FALLBACK_TRIALS)
    sampler = args.sampler or "tpe"
    spec = RunSpec(
        run=name, storage=storage, preset=preset, num_trials=num_trials, seed=seed,
        max_epochs=max_epochs, grace_epochs=grace, reduction_factor=rf, gpus_per_trial=gpus, cpus_per_trial=cpus,
        workers_per_trial=workers, dataloader_workers=args.num_workers, scheduler=args.scheduler or "asha",
        sampler=sampler,
        # TPE samples at random until it has n_startup_trials finished trials.
        n_startup_trials=startup_trials(num_trials, sampler),
        warm_start=tuple(warm), tpe_options=dict(TPE_OPTIONS), **stages,
        **provenance(argv),
    )  # fmt: skip
    return _plan_of(spec, address, new_run=True)


def dry_run(args: argparse.Namespace) -> int:
    """``--dry-run``: validate the flags and preset like a start would, print what the search would
    cost (:mod:`rspose_tune._dryrun`) and return 0. Starts no Ray, reads no data, writes nothing;
    missing data or weights are a note, not an error."""
    from rspose_tune._dryrun import DryRunPlan, format_plan
    from rspose_tune._stages import _run_dir

    if args.resume:
        raise SearchError("--dry-run plans a new run; it cannot be combined with --resume")
    try:
        storage = resolve_storage(args.storage)
    except RunSpecError as exc:
        raise SearchError(str(exc)) from None
    preset, (max_epochs, grace, rf), (gpus, cpus, workers) = _preset_budget_resources(args)
    if args.name is not None and exists(join(storage, _check_name(args.name))):
        raise SearchError(f"run {join(storage, args.name)!r} already exists: choose another --name")
    seed = 0 if args.seed is None else args.seed
    stages = stage_settings(args, preset, seed)
    warm = []
    for given in args.warm_start or ():
        run_dir = _run_dir(given, storage)
        if not exists(join(run_dir, "trials")):
            raise SearchError(f"--warm-start {given!r}: no run with results at {run_dir!r}")
        warm.append(f"the chosen setting of {run_dir} (read when the run starts)")
    notes = []
    try:
        preset.validate_paths()
    except MissingDataError as exc:
        if preset.data.generated == "demo":
            notes.append(f"the demo data is not at {preset.data.root} yet: a real start generates it")
        else:
            notes.append("missing here (a real start refuses to run without them):\n" + str(exc).split("\n", 1)[1])
    per_epoch = preset.cost.epoch_gpu_hours if args.epoch_gpu_hours is None else args.epoch_gpu_hours
    source = preset.cost.source if args.epoch_gpu_hours is None else "--epoch-gpu-hours"
    num_trials = args.num_trials or DEFAULT_TRIALS.get(preset.name, FALLBACK_TRIALS)
    print(format_plan(DryRunPlan(
        preset=preset.name, source=str(preset.source), num_trials=num_trials, max_epochs=max_epochs, grace=grace,
        reduction_factor=rf, scheduler=args.scheduler or "asha", sampler=args.sampler or "tpe", gpus=gpus, cpus=cpus,
        workers=workers, confirm_top=stages["confirm_top"], confirm_seeds=stages["confirm_seeds"],
        baseline_seeds=stages["baseline_seeds"], epoch_gpu_hours=per_epoch, cost_source=source,
        warm_start=tuple(warm), notes=tuple(notes),
        params=tuple((n, preset.params[n].describe()) for n in PARAM_NAMES),
        known_good=tuple(dict(k) for k in preset.known_good),
    )), end="")  # fmt: skip
    return 0


def _plan_of(spec: RunSpec, address: str | None, *, new_run: bool) -> Plan:
    return Plan(spec.preset, spec.run, spec.storage, spec.run_dir, spec.num_trials, spec.max_epochs,
                spec.grace_epochs, spec.reduction_factor, spec.gpus_per_trial, spec.cpus_per_trial, address,
                workers=spec.workers_per_trial, spec=spec, new_run=new_run)  # fmt: skip


def _plan_resume(args: argparse.Namespace, storage: str, address: str | None) -> Plan:
    if args.name is not None:
        run_dir = join(storage, _check_name(args.name))
        if not spec_exists(run_dir):
            why = ("the folder does not exist" if not exists(run_dir) else
                   f"it has no {SPEC_FILE} (started by an older rspose_tune, or never started)")  # fmt: skip
            raise SearchError(f"--resume: no run to resume at {run_dir!r}: {why}; drop --resume to start a run")
        spec = read_spec(run_dir)
    else:
        preset_name = _preset_name(args.backbone or DEFAULT_PRESET, args.search_dir)
        spec = latest_unfinished(storage, preset_name)
        if spec is None:
            raise SearchError(f"--resume: no unfinished run of preset {preset_name!r} under {storage!r}; "
                              "name one with --name, or drop --resume to start a run")  # fmt: skip
        print(f"--resume: continuing {spec.run!r} (started {spec.created_utc}), the most recent unfinished "
              f"{preset_name!r} run under {storage}")  # fmt: skip
    if spec.storage != storage and resolve_storage(spec.storage) != storage:
        print(f"note: the run was started with --storage {spec.storage}; it continues at {storage}")
        spec = dataclasses.replace(spec, storage=storage)
    conflicts = resume_conflicts(spec, args)
    if conflicts:
        raise SearchError(
            f"--resume of run {spec.run!r}: " + "; ".join(conflicts) + f". These are fixed by "
            f"{join(spec.run_dir, SPEC_FILE)}; drop them (flags that may change: {', '.join(RESUME_MAY_CHANGE)})"
        )
    _prepare_data(spec.preset)
    return _plan_of(spec, address, new_run=False)


def _preset_name(backbone: str, search_dir: str | None) -> str:
    """The name a preset given by ``--backbone`` has (a YAML path: its stem)."""
    if backbone.endswith((".yaml", ".yml")) or "/" in backbone or os.sep in backbone:
        return Path(backbone).stem
    return backbone


def _same_path(given: str, recorded) -> bool:
    return recorded is not None and Path(given).expanduser().absolute() == Path(recorded)


def resume_conflicts(spec: RunSpec, args: argparse.Namespace) -> list[str]:
    """One ``--flag X, but the run has Y`` per identity flag given with a value the spec does not hold."""
    preset = spec.preset
    out = []

    def differs(flag: str, given, recorded, same=None) -> None:
        if given is None:
            return
        if not (same(given, recorded) if same else given == recorded):
            out.append(f"{flag} {given!r} differs from the run's {recorded!r}")

    if args.backbone is not None:
        if args.search_dir is not None or _preset_name(args.backbone, None) != args.backbone:
            try:
                source = load_preset(args.backbone, search_dir=args.search_dir).source
            except SearchSpaceError:
                source = None
            if source is None or Path(source) != Path(preset.source):
                out.append(f"--backbone {args.backbone!r} is not the run's preset {preset.name!r} ({preset.source})")
        elif args.backbone != preset.name:
            out.append(f"--backbone {args.backbone!r} differs from the run's {preset.name!r}")
    differs("--num-trials", args.num_trials, spec.num_trials)
    differs("--scheduler", args.scheduler, spec.scheduler)
    differs("--sampler", args.sampler, spec.sampler)
    differs("--seed", args.seed, spec.seed)
    differs("--max-epochs", args.max_epochs, spec.max_epochs)
    differs("--grace-epochs", args.grace_epochs, spec.grace_epochs)
    differs("--reduction-factor", args.reduction_factor, spec.reduction_factor)
    differs("--gpus-per-trial", args.gpus_per_trial, spec.gpus_per_trial)
    differs("--cpus-per-trial", args.cpus_per_trial, spec.cpus_per_trial)
    differs("--workers-per-trial", getattr(args, "workers_per_trial", None), spec.workers_per_trial)
    differs("--num-workers", getattr(args, "num_workers", None), spec.dataloader_workers)
    differs("--confirm-top", getattr(args, "confirm_top", None), spec.confirm_top)
    if getattr(args, "confirm_seeds", None) is not None and args.confirm_seeds != len(spec.confirm_seeds):
        out.append(f"--confirm-seeds {args.confirm_seeds!r} differs from the run's {len(spec.confirm_seeds)} "
                   f"(seeds {list(spec.confirm_seeds)})")  # fmt: skip
    differs("--baseline", getattr(args, "baseline", None), spec.baseline)
    if getattr(args, "warm_start", None):
        out.append(f"--warm-start was resolved when the run started ({len(spec.warm_start)} setting(s) in its spec) "
                   "and cannot be given again")  # fmt: skip
    differs("--data-root", args.data_root, str(preset.data.root), _same_path)
    if args.weights is not None:
        none = args.weights.strip().lower() in ("none", "null", "")
        recorded = None if preset.weights is None else str(preset.weights)
        if (recorded is not None or not none) and (none or not _same_path(args.weights, recorded)):
            out.append(f"--weights {args.weights!r} differs from the run's {recorded or 'none'!r}")
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast if a ``host:port`` Ray address does not accept connections.

    ``ray.init(address=...)`` retries an unreachable GCS for minutes before it gives up.
    ``auto`` (the cluster started on this machine) is left to Ray, which fails fast itself.
    """
    if address in {"auto", "local"}:
        return
    target = address.split("://", 1)[-1]
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise SearchError(f"--address must be 'auto' or host:port (optionally ray://host:port), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SearchError(
            f"--address {address!r}: no Ray cluster reachable there ({reason}). Start one with "
            "`ray start --head` on the head node, or drop --address (and unset RAY_ADDRESS) "
            "to run on a local Ray"
        ) from exc


def start_ray(p: Plan, args: argparse.Namespace):
    """Join the cluster at ``p.address``, or start a fresh local Ray with a loopback-only dashboard.

    Without an address, ``address="local"``: Ray would otherwise join whatever cluster
    ``ray start`` last recorded on this machine (``<RAY_TMPDIR or /tmp>/ray/ray_current_cluster``),
    even a dead one.
    """
    import ray

    if p.address:
        check_reachable(p.address)
        try:
            return ray.init(address=p.address, log_to_driver=args.verbose > 1)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SearchError(f"--address {p.address!r}: cannot join the Ray cluster ({exc})") from exc
    if not args.no_dashboard and not _is_loopback(args.dashboard_host):
        print(
            f"WARNING: the Ray dashboard will listen on {args.dashboard_host}, not loopback. Ray's job "
            "API runs any code it is sent (CVE-2023-48022); keep token authentication on and the "
            "port firewalled.",
            file=sys.stderr,
        )
    return ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=not args.no_dashboard,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        log_to_driver=args.verbose > 1,
    )


def _print_dashboard(context) -> None:
    url = getattr(context, "dashboard_url", None)
    if not url:
        return
    url = url if url.startswith("http") else f"http://{url}"
    print(f"Ray dashboard: {url}")
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_MODE", "token") != "disabled":
        print(
            f"  token authentication is on: the dashboard asks for the token in {token_file} "
            "(print it with `ray get-auth-token`); API clients send `Authorization: Bearer <token>`."
        )


def _check_cluster_can_hold_a_trial(p: Plan) -> None:
    """Refuse, before any trial starts, resources that fit no node (Ray would wait forever)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    try:
        check_feasible(rank_bundle(p.workers, p.cpus, p.gpus), p.workers, nodes)
    except ResourceError as exc:
        raise SearchError(str(exc)) from None


def run_search(p: Plan, args: argparse.Namespace, extra_callbacks=(), *, reuse_actors: bool = True):
    """Run (or resume) the search of plan ``p``. ``reuse_actors=False`` (a fresh process per
    trial, Ray's default) exists for ``python -m rspose_tune.bench search``'s comparison."""
    from ray import tune
    from rspose_tune.searcher import (
        JOURNAL_FILE_NAME,
        PruningAwareOptunaSearch,
        ResumableConcurrencyLimiter,
        build_scheduler,
    )

    # Keeping only the last checkpoints forces an experiment snapshot per report; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    spec = p.spec
    if p.new_run:
        write_spec(spec)  # the run's identity, once; --resume, report and export read it
    preset = p.preset
    trainable = _make_trainable(p)
    # Always with the run: a local file, or a URI (uploaded at every experiment snapshot).
    journal = join(p.run_dir, JOURNAL_FILE_NAME)
    searcher = PruningAwareOptunaSearch(
        preset.params,
        max_epochs=p.max_epochs,
        metric="metric",
        mode=preset.mode,
        known_good=preset.known_good,
        journal_path=journal,
        seed=spec.seed,
        n_startup_trials=spec.n_startup_trials,
        warm_start=spec.warm_start,  # after the known-good settings; each records its source
        tpe_options=spec.tpe_options,  # constant liar, not multivariate (searcher.TPE_OPTIONS)
    )
    max_concurrent = args.max_concurrent or 8
    search_alg = ResumableConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    scheduler = build_scheduler(spec.scheduler, mode=preset.mode, max_epochs=p.max_epochs, grace_epochs=p.grace,
                                reduction_factor=p.reduction_factor)
    callback = _results_callback(p)
    reporter = tune.CLIReporter(
        metric_columns=["epoch", "metric", "loss"],
        parameter_columns=list(PARAM_NAMES),
        max_report_frequency=15,
        sort_by_metric=True,
    )
    run_config = tune.RunConfig(
        name=p.name,
        storage_path=p.storage,
        callbacks=[callback, *extra_callbacks],
        progress_reporter=reporter,
        verbose=args.verbose,
        # The one failure policy: an error in any rank (or a dead node) fails the trial, which
        # Ray Tune restarts from its last checkpoint, at most twice.
        failure_config=tune.FailureConfig(max_failures=2),
        # Upload each trial's working directory (resolved config, trial.json, MMPose logs) to
        # <storage>/<run>/trial_<id>/ with every checkpoint, from whichever node ran it.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        # Two, not one: a driver killed between a checkpoint's rotation and the next experiment
        # snapshot would otherwise resume from a checkpoint that was already deleted.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=p.num_trials,
        trial_name_creator=trial_dir_name,
        trial_dirname_creator=trial_dir_name,
        # A finished or stopped trial's process runs the next trial: torch and MMPose stay
        # imported (bench search: per-trial start overhead). Not for data-parallel trials: rank 0
        # sets its visible GPUs before CUDA starts, which needs a fresh process.
        reuse_actors=reuse_actors and p.workers == 1,
    )
    if not p.new_run and exists(join(p.run_dir, "tuner.pkl")):
        tuner = tune.Tuner.restore(p.run_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
        _set_restored_concurrency(tuner, max_concurrent)
    else:  # a new run, or one whose driver died before Ray wrote its state: start it from its spec
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    return tuner.fit()


def _make_trainable(p: Plan, *, nested: bool = False):
    """The trainable of every trial of the run (search, confirm and baseline), with its resources;
    ``nested``: for the stages' experiment inside the run directory (where its rows go)."""
    from ray import tune

    from rspose_tune.results import has_row
    from trainables.mmpose_trainable import train_rspose, trial_resources

    # has_row: a trial resumes from a checkpoint newer than Ray's snapshot only if its row exists
    trainable = tune.with_parameters(train_rspose, preset=p.preset, seed=p.spec.seed, max_epochs=p.max_epochs,
                                     num_workers=p.spec.dataloader_workers,
                                     has_row=functools.partial(has_row, nested=nested))  # fmt: skip
    # One placement-group bundle per rank; a trial on N > 1 ranks trains data-parallel.
    return tune.with_resources(trainable, trial_resources(p.workers, p.cpus, p.gpus))


def _results_callback(p: Plan, *, nested: bool = False):
    """The Parquet writer of the run's rows into ``<run>/trials/``, found from each trial's
    experiment (``nested``: the confirm stage's ``<run>/confirm``), never a path fixed now: a
    resumed run that moved writes where it is now."""
    from rspose_tune.results_callback import ParquetResultsCallback

    preset = p.preset
    return ParquetResultsCallback(
        backbone=preset.name,
        max_epochs=p.max_epochs,
        run=p.name,
        nested=nested,
        search_space=preset,
        seed=p.spec.seed,  # the `seed` column of search trials (confirm trials carry their own)
        extra_metadata={
            "budget": {"max_epochs": p.max_epochs, "grace_epochs": p.grace, "reduction_factor": p.reduction_factor},
            "resources": {"cpu": p.cpus, "gpu": p.gpus, "workers": p.workers},
            "seed": p.spec.seed,
            "run_spec": SPEC_FILE,
            "metric_name": preset.metric,
            "mode": preset.mode,
        },
    )


def run_confirm_stage(p: Plan, args: argparse.Namespace) -> list:
    """The confirm and baseline trials of the run, after its search finished (:mod:`rspose_tune._stages`)."""
    from ray import tune

    from rspose_tune._stages import run_stages

    reporter = tune.CLIReporter(metric_columns=["epoch", "metric", "loss"],
                                parameter_columns=["stage", "seed", *PARAM_NAMES], max_report_frequency=15)  # fmt: skip
    return run_stages(p, args, lambda: _make_trainable(p, nested=True), _stage_callbacks(p), reporter)


def _stage_callbacks(p: Plan) -> list:
    """The confirm experiment's callbacks (pickled into ``<run>/confirm/tuner.pkl``): its rows go
    to ``<run>/trials/`` of wherever the run is when they are written."""
    return [_results_callback(p, nested=True)]


def _run_rows(p: Plan):
    """The run's Parquet rows, or None when no trial has reported yet (no ``trials/`` folder)."""
    from rspose_tune.results import read_results

    trials = join(p.run_dir, "trials")
    return read_results(trials) if exists(trials) else None


def _stages_after_search(p: Plan, args: argparse.Namespace, num_trials: int) -> int | None:
    """Run the confirm stage once every search trial finished; the number of its trials (None:
    the run has no stages, or the search is unfinished)."""
    if not (p.spec.confirm_top or p.spec.baseline):
        return None
    rows = _run_rows(p)
    if rows is None or trial_outcomes(_search_rows(rows), num_trials)["unfinished"]:
        print("confirm stage: waits until every search trial finished (--resume the run)")
        return None
    return len(run_confirm_stage(p, args))


def _search_rows(rows):
    """The rows of search-stage trials (files written before stages existed: all rows)."""
    return rows[rows["stage"].fillna("search") == "search"]


def _set_restored_concurrency(tuner, max_concurrent: int) -> None:
    """Apply this start's ``--max-concurrent`` to a restored run.

    ``Tuner.restore`` takes the search algorithm from ``tuner.pkl`` with the limit of the first
    start and has no argument to change it (:func:`rspose_tune._ray_compat.restored_search_alg`).
    """
    from rspose_tune.searcher import ResumableConcurrencyLimiter

    search_alg = restored_search_alg(tuner)
    if not isinstance(search_alg, ResumableConcurrencyLimiter):
        raise SearchError(f"--resume: the run's search algorithm is a {type(search_alg).__name__}, not the "
                          "ResumableConcurrencyLimiter this rspose_tune writes; it was started by another version")  # fmt: skip
    search_alg.set_max_concurrency(max_concurrent)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            return dry_run(args)
        if args.epoch_gpu_hours is not None:
            raise SearchError("--epoch-gpu-hours prices a search for --dry-run only; add --dry-run or drop it")
        p = plan(args, argv)
        check_ray_version()  # the private Ray APIs of rspose_tune._ray_compat
    except RSPoseTuneError as exc:
        return cli_error(exc)
    use_classic_progress_table()  # it shows trial params
    print(
        f"rspose_tune search: preset {p.preset.name!r}, {p.num_trials} trials, {p.max_epochs} epochs max, "
        f"ASHA grace {p.grace} / rf {p.reduction_factor}, {p.gpus:g} GPU + {p.cpus:g} CPU per trial "
        f"on {p.workers} rank(s); "
        f"results in {p.run_dir}"
    )
    spec = p.spec
    if spec.confirm_top or spec.baseline:
        print(f"then: confirm the top {spec.confirm_top} setting(s) on seeds {list(spec.confirm_seeds)}"
              if spec.confirm_top else "then: no confirm stage", end="")  # fmt: skip
        print(f"; stock-loss baseline on seeds {list(spec.baseline_seeds)}" if spec.baseline else "; no baseline")
    try:
        context = start_ray(p, args)
    except RSPoseTuneError as exc:
        return cli_error(exc)
    _print_dashboard(context)
    try:
        if not args.allow_pending_trials:
            _check_cluster_can_hold_a_trial(p)
        grid = run_search(p, args)
        stage_trials = _stages_after_search(p, args, max(p.num_trials, len(grid)))
    except RSPoseTuneError as exc:
        return cli_error(exc)
    finally:
        import ray

        if p.address is None:
            ray.shutdown()
    resume = f"python -m rspose_tune.search --resume --name {p.name} --storage {p.storage}"
    rows = _run_rows(p)
    if rows is None:  # e.g. stopped (Ctrl-C) before the first validation: nothing to report yet
        print(f"error: run {p.name!r} stopped before any trial reported a result (no {join(p.run_dir, 'trials')}); "
              f"continue it with `{resume}`", file=sys.stderr)  # fmt: skip
        return 1
    outcome = trial_outcomes(_search_rows(rows), max(p.num_trials, len(grid)))
    print(f"search finished: {len(grid)} trials: {outcome['completed']} completed, {outcome['pruned']} pruned, "
          f"{outcome['errored']} errored, {outcome['unfinished']} unfinished; results in {join(p.run_dir, 'trials')}")  # fmt: skip
    for line in outcome["errors"]:
        print(line, file=sys.stderr)
    if stage_trials is not None:
        staged = trial_outcomes(rows[rows["stage"].isin(["confirm", "baseline"])], stage_trials)
        print(f"confirm stage finished: {stage_trials} trials: {staged['completed']} completed, "
              f"{staged['errored']} errored, {staged['unfinished']} unfinished")  # fmt: skip
        for line in staged["errors"]:
            print(line, file=sys.stderr)
        outcome["unfinished"] += staged["unfinished"]
    if outcome["unfinished"] == 0:
        mark_finished(p.run_dir, {k: v for k, v in outcome.items() if k != "errors"})
    else:
        print(f"the run is unfinished: continue it with `{resume}`")
    if outcome["completed"] + outcome["pruned"] == 0:
        print(f"error: no trial of run {p.name!r} completed or was pruned", file=sys.stderr)
        return 1
    if args.no_report:
        return 0
    from rspose_tune import export, report

    status = report.main([p.storage, "--run", p.name])
    if status != 0:
        return status
    if outcome["completed"] == 0:
        print("no trial reached the full budget: nothing to export (python -m rspose_tune.export --trial ID "
              "exports a pruned trial's setting)")  # fmt: skip
        return 0
    return export.main([p.storage, "--run", p.name, "--backbone", p.preset.name])


def trial_outcomes(rows, num_trials: int) -> dict:
    """What became of a run's trials, from its Parquet rows (:func:`rspose_tune.results.read_results`).

    Counts each trial by the status of its last row (``completed``, ``pruned``, ``error``;
    ``running`` and trials without rows out of ``num_trials`` are ``unfinished``) and gives one
    ``error: N trial(s) failed: <reason>`` line per distinct error reason.
    """
    last = rows.sort_values("epoch", kind="stable").groupby("trial_id").tail(1)
    status = last["status"].value_counts()
    counts = {"completed": int(status.get("completed", 0)), "pruned": int(status.get("pruned", 0)),
              "errored": int(status.get("error", 0))}  # fmt: skip
    counts["unfinished"] = max(0, num_trials - sum(counts.values()))
    reasons = last[last["status"] == "error"]["error"].fillna("unknown error").value_counts()
    lines = [f"error: {n} trial{'s' if n > 1 else ''} failed: {reason}" for reason, n in sorted(reasons.items())]
    return {**counts, "errors": lines}


if __name__ == "__main__":
    sys.exit(main())
