"""The plan of a search: everything resolved from the flags before Ray starts (:class:`Plan`, with
the run spec of a new run or the one ``--resume`` reads), and ``--dry-run``."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rspose_tune._resources import ResourceError, plan_ranks
from rspose_tune._stages import resolve_warm_start, stage_settings
from rspose_tune.errors import RSPoseTuneError
from rspose_tune.runspec import (
    DEFAULT_TRAINABLE,
    SPEC_FILE,
    RunSpec,
    RunSpecError,
    default_run_name,
    exists,
    filesystem,
    is_uri,
    join,
    latest_unfinished,
    provenance,
    read_spec,
    resolve_storage,
    resolve_trainable,
    spec_exists,
)
from rspose_tune.search._parser import DEFAULT_PRESET, DEFAULT_TRIALS, FALLBACK_TRIALS, RESUME_MAY_CHANGE
from rspose_tune.spaces import PARAM_NAMES, MissingDataError, SearchSpaceError, budget_problem, load_preset
from rspose_tune.tracking import Tracking, check_tracking

__all__ = ["Plan", "SearchError", "dry_run", "plan", "resume_conflicts"]


class SearchError(RSPoseTuneError, RuntimeError):
    """A problem with the user's flags or environment, reported as one line, exit code 2."""


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
    # The function every trial calls: the spec's ``trainable`` (MODULE:NAME), resolved before Ray starts.
    trainable: Callable | None = None
    # --mlflow/--wandb of this start (not the run's identity: they may change on --resume)
    tracking: Tracking = Tracking()


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


def _trainable(text: str, where: str = "--trainable", *, load: bool = True) -> Callable | None:
    """The trainable ``text`` (``MODULE:NAME``) names; a :class:`SearchError` naming ``where`` if none
    (``load=False``: its form and module only, imported by nothing)."""
    try:
        return resolve_trainable(text, where, load=load)
    except RunSpecError as exc:
        raise SearchError(str(exc)) from None


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
    ``argv`` (default ``sys.argv[1:]``) is the command line the run spec records. ``--mlflow`` and
    ``--wandb`` are checked first (a tracking server must answer), before anything is written.
    """
    tracking = check_tracking(getattr(args, "mlflow", None), getattr(args, "wandb", None))
    return dataclasses.replace(_plan(args, argv), tracking=tracking)


def _plan(args: argparse.Namespace, argv: list[str] | None) -> Plan:
    # The trainable first: a bad --trainable writes nothing, not even the storage folder.
    trainable = None if args.resume else _trainable(args.trainable or DEFAULT_TRAINABLE)
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
        sampler=sampler, trainable=args.trainable or DEFAULT_TRAINABLE,
        # TPE samples at random until it has n_startup_trials finished trials.
        n_startup_trials=startup_trials(num_trials, sampler),
        warm_start=tuple(warm), tpe_options=dict(TPE_OPTIONS), **stages,
        **provenance(argv),
    )  # fmt: skip
    return _plan_of(spec, address, new_run=True, trainable=trainable)


def dry_run(args: argparse.Namespace) -> int:
    """``--dry-run``: validate the flags and preset like a start would, print what the search would
    cost (:mod:`rspose_tune._dryrun`) and return 0. Starts no Ray, reads no data, writes nothing;
    missing data or weights are a note, not an error."""
    from rspose_tune._dryrun import DryRunPlan, format_plan
    from rspose_tune._stages import _run_dir

    if args.resume:
        raise SearchError("--dry-run plans a new run; it cannot be combined with --resume")
    _trainable(args.trainable or DEFAULT_TRAINABLE, load=False)  # the form and the module; a start imports it
    try:
        storage = resolve_storage(args.storage)
    except RunSpecError as exc:
        raise SearchError(str(exc)) from None
    check_tracking(getattr(args, "mlflow", None), getattr(args, "wandb", None), reach=False)  # the form only
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


def _plan_of(spec: RunSpec, address: str | None, *, new_run: bool, trainable: Callable) -> Plan:
    return Plan(spec.preset, spec.run, spec.storage, spec.run_dir, spec.num_trials, spec.max_epochs,
                spec.grace_epochs, spec.reduction_factor, spec.gpus_per_trial, spec.cpus_per_trial, address,
                workers=spec.workers_per_trial, spec=spec, new_run=new_run, trainable=trainable)  # fmt: skip


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
    trainable = _trainable(spec.trainable, f"{join(spec.run_dir, SPEC_FILE)}: `trainable`")
    _prepare_data(spec.preset)
    return _plan_of(spec, address, new_run=False, trainable=trainable)


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
    differs("--trainable", getattr(args, "trainable", None), spec.trainable)
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
