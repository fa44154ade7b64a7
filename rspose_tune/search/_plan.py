"""The plan of a search: everything resolved from the flags before Ray starts (:class:`Plan`, with
the run spec of a new run or the one ``--resume`` reads), and ``--dry-run``."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rspose_tune._resources import ResourceError, plan_ranks
from rspose_tune._stages import resolve_warm_start, stage_settings
from rspose_tune._storage import StorageError
from rspose_tune.errors import RSPoseTuneError
from rspose_tune.mmpose_adapter._weights import check_weights
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
from rspose_tune.search._parser import (
    DEFAULT_PRESET,
    DEFAULT_TRIALS,
    FALLBACK_TRIALS,
    FIXED,
    ONCE,
    RESUME_MAY_CHANGE,
    SearchOptions,
    preset_name,
    search_flags,
)
from rspose_tune.spaces import PARAM_NAMES, MissingDataError, Preset, budget_problem, load_preset
from rspose_tune.tracking import Tracking, check_tracking

__all__ = ["Plan", "SearchError", "check_flags", "check_reachable", "dry_run", "plan", "resume_conflicts"]


class SearchError(RSPoseTuneError, RuntimeError):
    """A problem with the user's flags or environment, reported as one line, exit code 2."""


@dataclass(frozen=True)
class Plan:
    """Everything resolved from the flags before Ray starts."""

    preset: Preset
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


def _check_storage(storage: str, *, open_uri: bool = True) -> str:
    """The storage root as an absolute local path or a non-local URI, checked without creating
    anything (:func:`_make_storage` does, once every check passed): a local folder must exist and be
    writable, or be creatable (its nearest existing parent a writable folder); a URI must open with
    pyarrow.fs (``open_uri``: a start; ``--dry-run`` does not contact an object store)."""
    try:
        resolved = resolve_storage(storage)
    except StorageError as exc:
        raise SearchError(str(exc)) from None
    if is_uri(resolved):
        if open_uri:
            try:
                filesystem(resolved)
            except (ValueError, OSError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError
                raise SearchError(f"--storage {storage!r}: pyarrow.fs cannot open it ({exc})") from None
        return resolved
    path = Path(resolved)
    nearest = next(p for p in (path, *path.parents) if p.exists())  # the root always exists
    if nearest == path and not path.is_dir():
        raise SearchError(f"--storage {storage!r}: {path} is a file, not a folder (the results root)")
    if nearest != path and not nearest.is_dir():
        raise SearchError(f"--storage {storage!r}: cannot create the folder ({nearest} is a file)")
    if not os.access(nearest, os.W_OK | os.X_OK):
        what = "the folder is not writable" if nearest == path else "cannot create the folder"
        raise SearchError(f"--storage {storage!r}: {what} ({nearest} is not writable)")
    return str(path)


def _make_storage(storage: str, given: str) -> None:
    """Create the local storage folder ``storage`` (``--storage given``) after every check passed."""
    if is_uri(storage):
        return
    path = Path(storage)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchError(f"--storage {given!r}: cannot create the folder ({exc.strerror})") from exc
    probe = path / f".rspose_write_probe_{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SearchError(f"--storage {given!r}: the folder is not writable ({exc.strerror})") from exc


def check_reachable(address: str, timeout_s: float = 5.0, *, reach: bool = True, flag: str = "--address") -> None:
    """The form of a Ray address (``auto``, ``local`` or ``[ray://]host:port``, a port 1-65535) and,
    with ``reach`` (a start, not ``--dry-run``), that ``host:port`` accepts connections: ``ray.init(address=...)``
    retries an unreachable GCS for minutes before it gives up. ``auto`` (the cluster started on this
    machine) is left to Ray, which fails fast itself. ``flag``: where the address came from."""
    if address in {"auto", "local"}:
        return
    target = address.split("://", 1)[-1]
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise SearchError(f"{flag} must be 'auto' or host:port (optionally ray://host:port), got {address!r}")
    if not 1 <= int(port_text) <= 65535:  # a form error: refused by --dry-run too, not left to a connect
        raise SearchError(f"{flag} {address!r}: the port must be 1-65535, got {int(port_text)}")
    if not reach:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SearchError(
            f"{flag} {address!r}: no Ray cluster reachable there ({reason}). Start one with "
            "`ray start --head` on the head node, or drop --address (and unset RAY_ADDRESS) "
            "to run on a local Ray"
        ) from exc


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


def _check_files(preset: Preset, *, start: bool) -> list[str]:
    """The data and weights of ``preset``: a demo data root that a start would refuse to generate
    into is an error for both; missing files are an error for a start (the demo's data excepted: a
    start generates it) and a note for ``--dry-run`` (returned)."""
    generate = False
    if getattr(preset.data, "generated", None) == "demo":
        from rspose_tune.demo_data import check_root, is_complete

        generate = not is_complete(preset.data.root)
        if generate:
            check_root(preset.data.root)  # someone else's folder: refused before anything is written
    notes = []
    if generate and not start:
        notes.append(f"the demo data is not at {preset.data.root} yet: a real start generates it")
    try:
        preset.validate_paths(data=not generate)
    except MissingDataError as exc:
        if start:
            raise
        notes.append("missing here (a real start refuses to run without them):\n" + str(exc).split("\n", 1)[1])
    return notes


def _prepare_data(preset: Preset) -> None:
    if getattr(preset.data, "generated", None) == "demo":
        from rspose_tune.demo_data import generate_demo_dataset, is_complete

        if not is_complete(preset.data.root):  # made once, here, so trials never race to write it
            generate_demo_dataset(preset.data.root)
    preset.validate_paths()  # missing data or weights: fail before any trial starts


def _budget(options: SearchOptions, preset: Preset) -> tuple[int, int, int]:
    """``(max_epochs, grace, reduction_factor)`` from the flags, else the preset; validated."""
    budget = preset.budget
    max_epochs = options.max_epochs or budget.max_epochs
    grace = options.grace_epochs or min(budget.grace_epochs, max_epochs)
    rf = options.reduction_factor or budget.reduction_factor
    # The preset's own budget rules (spaces.budget_problem), naming the flag that broke them.
    problem = budget_problem(max_epochs, grace, rf, budget.val_interval)
    if problem is None:
        return max_epochs, grace, rf
    field, _ = problem
    if field == "reduction_factor":
        raise SearchError(f"--reduction-factor must be an integer >= 2, got {rf}")  # (the parser refuses it first)
    if field == "grace_epochs" and grace > max_epochs:
        raise SearchError(f"--grace-epochs ({grace}) must not exceed --max-epochs ({max_epochs})")
    source = f"preset {preset.name!r} ({preset.source})"
    if field == "val_interval":
        raise SearchError(f"--max-epochs {max_epochs} is below the validation interval {budget.val_interval} of "
                          f"{source}: no trial would ever be validated")
    given = "--grace-epochs" if options.grace_epochs else "the grace period min(budget.grace_epochs, --max-epochs)"
    raise SearchError(f"{given} ({grace}) must be a multiple of the validation interval {budget.val_interval} of "
                      f"{source}: ASHA's rungs (grace x reduction factor^k) must fall on epochs that are validated")


def _preset_budget_resources(options: SearchOptions):
    """The preset the flags name, its budget ``(max_epochs, grace, rf)`` and per-trial resources
    ``(gpus, cpus, workers)``, each flag overriding the preset's value (shared by a start and
    ``--dry-run``)."""
    preset = load_preset(options.backbone or DEFAULT_PRESET, search_dir=options.search_dir, data_root=options.data_root,
                         weights=options.weights)
    gpus = preset.resources.gpus if options.gpus_per_trial is None else options.gpus_per_trial
    cpus = preset.resources.cpus if options.cpus_per_trial is None else options.cpus_per_trial
    try:
        workers = plan_ranks(gpus, cpus, options.workers_per_trial or preset.resources.workers)
    except ResourceError as exc:
        raise SearchError(str(exc)) from None
    return preset, _budget(options, preset), (gpus, cpus, workers)


@dataclass(frozen=True)
class _Checked:
    """What :func:`check_flags` resolved; nothing is created yet."""

    storage: str
    address: str | None
    tracking: Tracking
    trainable: Callable | None = None
    # new runs only (None on --resume, which reads them from the run spec):
    preset: Preset | None = None
    budget: tuple[int, int, int] = (0, 0, 0)  # max_epochs, grace, reduction factor
    resources: tuple[float, float, int] = (0.0, 0.0, 0)  # gpus, cpus, workers per trial
    seed: int = 0
    stages: dict = field(default_factory=dict)
    warm: tuple = ()  # the resolved --warm-start entries
    notes: tuple[str, ...] = ()  # --dry-run: files missing here


def check_flags(options: SearchOptions, *, start: bool) -> _Checked:
    """The checks of a start (``start=True``) and of ``--dry-run``: one list, in one order, so the
    dry run refuses what a start refuses, with the same message; a refused command creates nothing.

    In order: the trainable, the storage, the Ray address, ``--mlflow``/``--wandb``, then for a new
    run the preset with its budget and resources, ``--name``, the stages, ``--warm-start``, and the
    data root and weights. What only a start does: import the trainable (the dry run checks its form
    and that its module exists), open a storage URI, connect to the address and the MLflow server,
    find a W&B key; missing data or weights are an error for a start and a note for the dry run.
    """
    if options.resume and not start:
        raise SearchError("--dry-run plans a new run; it cannot be combined with --resume")
    trainable = None if options.resume else _trainable(options.trainable or DEFAULT_TRAINABLE, load=start)
    storage = _check_storage(options.storage, open_uri=start)
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address, reach=start, flag="--address" if options.address else "RAY_ADDRESS")
    tracking = check_tracking(options.mlflow, options.wandb, reach=start)
    if options.resume:
        return _Checked(storage, address, tracking)
    preset, budget, resources = _preset_budget_resources(options)
    if options.name is not None and exists(join(storage, _check_name(options.name))):
        raise SearchError(f"run {join(storage, options.name)!r} already exists: pass --resume to continue it, or "
                          "choose another --name (without --name every start gets a new one)")
    seed = 0 if options.seed is None else options.seed
    stages = stage_settings(preset, seed, top=options.confirm_top, seeds=options.confirm_seeds, baseline=options.baseline)
    warm, warm_notes = resolve_warm_start(options.warm_start or (), storage, preset)
    for note in warm_notes:
        print(note)
    notes = _check_files(preset, start=start)
    weights_note = check_weights(preset, options.weights)  # a file that would not initialise the backbone: error
    if weights_note:
        print(weights_note)
    return _Checked(storage, address, tracking, trainable, preset, budget, resources, seed, stages, tuple(warm),
                    tuple(notes))


def plan(options: SearchOptions, argv: list[str] | None = None) -> Plan:
    """Check the flags (:func:`check_flags`), then create the storage folder, generate the demo data
    when it is missing, and build the run spec of a new run (or read it on ``--resume``).

    ``argv`` (default ``sys.argv[1:]``) is the command line the run spec records.
    """
    checked = check_flags(options, start=True)
    if options.resume:
        p = _plan_resume(options, checked.storage, checked.address)
    else:
        _make_storage(checked.storage, options.storage)
        p = _plan_new(options, argv, checked)
    return dataclasses.replace(p, tracking=checked.tracking)


def _plan_new(options: SearchOptions, argv: list[str] | None, checked: _Checked) -> Plan:
    from rspose_tune.searcher import TPE_OPTIONS, startup_trials

    preset, storage = checked.preset, checked.storage
    (max_epochs, grace, rf), (gpus, cpus, workers) = checked.budget, checked.resources
    name = _check_name(options.name) if options.name is not None else _new_run_name(storage, preset.name)
    _prepare_data(preset)
    num_trials = options.num_trials or DEFAULT_TRIALS.get(preset.name, FALLBACK_TRIALS)
    sampler = options.sampler or "tpe"
    spec = RunSpec(
        run=name, storage=storage, preset=preset, num_trials=num_trials, seed=checked.seed,
        max_epochs=max_epochs, grace_epochs=grace, reduction_factor=rf, gpus_per_trial=gpus, cpus_per_trial=cpus,
        workers_per_trial=workers, dataloader_workers=options.num_workers, scheduler=options.scheduler or "asha",
        sampler=sampler, trainable=options.trainable or DEFAULT_TRAINABLE,
        # TPE samples at random until it has n_startup_trials finished trials.
        n_startup_trials=startup_trials(num_trials, sampler),
        warm_start=checked.warm, tpe_options=dict(TPE_OPTIONS), **checked.stages,
        **provenance(argv),
    )
    return _plan_of(spec, checked.address, new_run=True, trainable=checked.trainable)


def dry_run(options: SearchOptions) -> int:
    """``--dry-run``: the checks of a start (:func:`check_flags`), then what the search would cost
    (:mod:`rspose_tune._dryrun`); returns 0. Starts no Ray, reads no data, writes nothing; missing
    data or weights are a note, not an error."""
    from rspose_tune._dryrun import DryRunPlan, format_plan

    checked = check_flags(options, start=False)
    preset, stages = checked.preset, checked.stages
    (max_epochs, grace, rf), (gpus, cpus, workers) = checked.budget, checked.resources
    per_epoch = preset.cost.epoch_gpu_hours if options.epoch_gpu_hours is None else options.epoch_gpu_hours
    source = preset.cost.source if options.epoch_gpu_hours is None else "--epoch-gpu-hours"
    num_trials = options.num_trials or DEFAULT_TRIALS.get(preset.name, FALLBACK_TRIALS)
    print(format_plan(DryRunPlan(
        preset=preset.name, source=str(preset.source), num_trials=num_trials, max_epochs=max_epochs, grace=grace,
        reduction_factor=rf, scheduler=options.scheduler or "asha", sampler=options.sampler or "tpe", gpus=gpus, cpus=cpus,
        workers=workers, confirm_top=stages["confirm_top"], confirm_seeds=stages["confirm_seeds"],
        baseline_seeds=stages["baseline_seeds"], epoch_gpu_hours=per_epoch, cost_source=source,
        warm_start=tuple(w["source"] for w in checked.warm), notes=checked.notes,
        params=tuple((n, preset.params[n].describe()) for n in PARAM_NAMES),
        known_good=tuple(dict(k) for k in preset.known_good),
    )), end="")
    return 0


def _plan_of(spec: RunSpec, address: str | None, *, new_run: bool, trainable: Callable) -> Plan:
    return Plan(spec.preset, spec.run, spec.storage, spec.run_dir, spec.num_trials, spec.max_epochs,
                spec.grace_epochs, spec.reduction_factor, spec.gpus_per_trial, spec.cpus_per_trial, address,
                workers=spec.workers_per_trial, spec=spec, new_run=new_run, trainable=trainable)


def _plan_resume(options: SearchOptions, storage: str, address: str | None) -> Plan:
    if options.name is not None:
        run_dir = join(storage, _check_name(options.name))
        if not spec_exists(run_dir):
            why = ("the folder does not exist" if not exists(run_dir) else
                   f"it has no {SPEC_FILE} (started by an older rspose_tune, or never started)")
            raise SearchError(f"--resume: no run to resume at {run_dir!r}: {why}; drop --resume to start a run")
        spec = read_spec(run_dir)
    else:
        wanted = preset_name(options.backbone or DEFAULT_PRESET)
        spec = latest_unfinished(storage, wanted)
        if spec is None:
            raise SearchError(f"--resume: no unfinished run of preset {wanted!r} under {storage!r}; "
                              "name one with --name, or drop --resume to start a run")
        print(f"--resume: continuing {spec.run!r} (started {spec.created_utc}), the most recent unfinished "
              f"{wanted!r} run under {storage}")
    if spec.storage != storage and resolve_storage(spec.storage) != storage:
        print(f"note: the run was started with --storage {spec.storage}; it continues at {storage}")
        spec = dataclasses.replace(spec, storage=storage)
    conflicts = resume_conflicts(spec, options)
    if conflicts:
        raise SearchError(
            f"--resume of run {spec.run!r}: " + "; ".join(conflicts) + f". These are fixed by "
            f"{join(spec.run_dir, SPEC_FILE)}; drop them (flags that may change: {', '.join(RESUME_MAY_CHANGE)})"
        )
    trainable = _trainable(spec.trainable, f"{join(spec.run_dir, SPEC_FILE)}: `trainable`")
    _prepare_data(spec.preset)
    # the run's weights (its spec's) are checked as a start's are: the file may have changed since
    weights_note = check_weights(spec.preset, origin=f"the run's, {join(spec.run_dir, SPEC_FILE)}")
    if weights_note:
        print(weights_note)
    return _plan_of(spec, address, new_run=False, trainable=trainable)


def _spec_value(spec: RunSpec, field: str):
    value = spec
    for part in field.split("."):
        value = getattr(value, part)
    return value


def resume_conflicts(spec: RunSpec, options: SearchOptions) -> list[str]:
    """One line per flag of the table (:class:`SearchOptions`) that the run spec fixes, given with a
    value it does not hold."""
    out = []
    for dest, flag in search_flags():
        given = getattr(options, dest, None)
        if given is None or flag.spec is None or flag.resume not in (FIXED, ONCE):
            continue
        if flag.resume == ONCE:
            out.append(f"{flag.name} was resolved when the run started (the run spec's `{flag.spec}`) and cannot "
                       "be given again")
            continue
        value = _spec_value(spec, flag.spec)
        if not (flag.same(given, value, options) if flag.same else given == value):
            out.append(f"{flag.name} {given!r} differs from the run's {flag.view(value) if flag.view else value!r}")
    return out
