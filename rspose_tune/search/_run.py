"""The run of a search: the Tuner (:func:`run_search`), the confirm stage after it, and the CLI's
:func:`main` with its exit codes."""

from __future__ import annotations

import functools
import os
import sys

from rspose_tune._ray_compat import check_ray_version, restored_search_alg, use_classic_progress_table
from rspose_tune._storage import ray_storage
from rspose_tune.errors import RSPoseTuneError, cli_error
from rspose_tune.runspec import SPEC_FILE, exists, join, mark_finished, trial_dir_name, write_spec
from rspose_tune.search._parser import DEFAULT_MAX_CONCURRENT, SearchOptions, parse_options
from rspose_tune.search._plan import Plan, SearchError, dry_run, plan
from rspose_tune.search._session import _check_cluster_can_hold_a_trial, _print_dashboard, start_ray
from rspose_tune.spaces import PARAM_NAMES

__all__ = ["main", "run_confirm_stage", "run_search", "trial_outcomes"]


def run_search(p: Plan, options: SearchOptions, extra_callbacks=(), *, reuse_actors: bool = True):
    """Run (or resume) the search of plan ``p``. ``reuse_actors=False`` (a fresh process per
    trial, Ray's default) exists for ``python -m rspose_tune.bench search``'s comparison."""
    from ray import tune

    from rspose_tune._limiter import ResumableConcurrencyLimiter
    from rspose_tune._scheduler import build_scheduler
    from rspose_tune.searcher import JOURNAL_FILE_NAME, PruningAwareOptunaSearch
    from rspose_tune.tracking import use_tracking_callbacks

    # Keeping only the last checkpoints forces an experiment snapshot per report; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    spec = p.spec
    if p.new_run:
        write_spec(spec)  # the run's identity, once; --resume, report and export read it
    _record_tracking(p)
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
        sampler=spec.sampler,
        warm_start=spec.warm_start,  # after the known-good settings; each records its source
        tpe_options=spec.tpe_options,  # constant liar, not multivariate (searcher.TPE_OPTIONS)
    )
    max_concurrent = _trials_at_once(options)
    search_alg = ResumableConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    scheduler = build_scheduler(spec.scheduler, mode=preset.mode, max_epochs=p.max_epochs, grace_epochs=p.grace,
                                reduction_factor=p.reduction_factor)
    callback = _results_callback(p)
    tracking = _tracking_callbacks(p)
    reporter = tune.CLIReporter(
        metric_columns=["epoch", "metric", "loss"],
        parameter_columns=list(PARAM_NAMES),
        max_report_frequency=15,
        sort_by_metric=True,
    )
    storage_path, storage_filesystem = ray_storage(p.storage)  # S3: retried requests (rspose_tune._storage)
    run_config = tune.RunConfig(
        name=p.name,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        callbacks=[callback, *tracking, *extra_callbacks],
        progress_reporter=reporter,
        verbose=options.verbose,
        # The one failure policy: an error in any rank (or a dead node) fails the trial, which
        # Ray Tune restarts from its last checkpoint, at most twice.
        failure_config=tune.FailureConfig(max_failures=2),
        # Upload each trial's working directory (resolved config, trial.json, MMPose logs) to
        # <storage>/<run>/trial_<id>/ with every checkpoint, from whichever node ran it.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        # Two, not one: fewer restored trials name a checkpoint rotated away after the last
        # experiment snapshot; those that still do are repointed on --resume (_repair_missing_checkpoints).
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
        run_path, run_filesystem = ray_storage(p.run_dir)
        tuner = tune.Tuner.restore(run_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=run_filesystem)
        _set_restored_concurrency(tuner, max_concurrent)
        use_tracking_callbacks(tuner, tracking)  # this start's --mlflow/--wandb, not the first start's
        _repair_missing_checkpoints(tuner)
        _recorded_metrics_to_searcher(p, tuner)
    else:  # a new run, or one whose driver died before Ray wrote its state: start it from its spec
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    return tuner.fit()


def _trials_at_once(options: SearchOptions) -> int:
    """``--max-concurrent``, else :data:`DEFAULT_MAX_CONCURRENT`."""
    return options.max_concurrent or DEFAULT_MAX_CONCURRENT


def _make_trainable(p: Plan, *, nested: bool = False):
    """The trainable of every trial of the run (search, confirm and baseline), with its resources;
    ``nested``: for the stages' experiment inside the run directory (where its rows go)."""
    from ray import tune

    from rspose_tune._resources import trial_resources
    from rspose_tune.results import has_row

    # The plan resolved the run spec's `trainable` (default trainables.mmpose_trainable:train_rspose;
    # its keyword arguments: docs/real_backbone.md). has_row: a trial resumes from a checkpoint newer
    # than Ray's snapshot only if its row exists.
    trainable = tune.with_parameters(p.trainable, preset=p.preset, seed=p.spec.seed, max_epochs=p.max_epochs,
                                     num_workers=p.spec.dataloader_workers,
                                     has_row=functools.partial(has_row, nested=nested))
    # One placement-group bundle per rank; a trial on N > 1 ranks trains data-parallel.
    return tune.with_resources(trainable, trial_resources(p.workers, p.cpus, p.gpus))


def _tracking_callbacks(p: Plan) -> list:
    """The ``--mlflow``/``--wandb`` callbacks of this start (:mod:`rspose_tune.tracking`)."""
    from rspose_tune.tracking import tracking_callbacks

    return tracking_callbacks(p.tracking, run=p.name, run_dir=p.run_dir, backbone=p.preset.name, seed=p.spec.seed)


def _record_tracking(p: Plan) -> None:
    """``<run>/tracking.json``: this start's tracking, for the export; a note when it drops the earlier one."""
    from rspose_tune.tracking import read_tracking, tracking_record, write_tracking

    before = None if p.new_run else read_tracking(p.run_dir)
    now = tracking_record(p.tracking, p.name)
    for key, flag, field in (("mlflow", "--mlflow", "tracking_uri"), ("wandb", "--wandb", "project")):
        if before and before.get(key) and not now[key]:
            print(f"note: the run was tracked with {flag} {before[key][field]}; this start tracks nothing there "
                  f"(pass {flag} {before[key][field]} to go on)")
    if before is not None or p.tracking:
        write_tracking(p.run_dir, p.tracking, p.name)


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


def run_confirm_stage(p: Plan, options: SearchOptions) -> list:
    """The confirm and baseline trials of the run, after its search finished (:mod:`rspose_tune._stages`)."""
    from ray import tune

    from rspose_tune._stages import run_stages

    reporter = tune.CLIReporter(metric_columns=["epoch", "metric", "loss"],
                                parameter_columns=["stage", "seed", *PARAM_NAMES], max_report_frequency=15)
    return run_stages(p, lambda: _make_trainable(p, nested=True), _stage_callbacks(p), reporter,
                      max_concurrent=_trials_at_once(options), verbose=options.verbose)


def _stage_callbacks(p: Plan) -> list:
    """The confirm experiment's callbacks (pickled into ``<run>/confirm/tuner.pkl``): its rows go
    to ``<run>/trials/`` of wherever the run is when they are written."""
    return [_results_callback(p, nested=True), *_tracking_callbacks(p)]


def _run_rows(p: Plan):
    """The run's Parquet rows, or None when no trial has reported yet (no ``trials/`` folder)."""
    from rspose_tune.results import read_results

    trials = join(p.run_dir, "trials")
    return read_results(trials) if exists(trials) else None


def _stages_after_search(p: Plan, options: SearchOptions, num_trials: int) -> int | None:
    """Run the confirm stage once every search trial finished; the number of its trials (None:
    the run has no stages, or the search is unfinished)."""
    if not (p.spec.confirm_top or p.spec.baseline):
        return None
    rows = _run_rows(p)
    if rows is None or trial_outcomes(_search_rows(rows), num_trials)["unfinished"]:
        print("confirm stage: waits until every search trial finished (--resume the run)")
        return None
    return len(run_confirm_stage(p, options))


def _search_rows(rows):
    """The rows of search-stage trials (files written before stages existed: all rows)."""
    return rows[rows["stage"].fillna("search") == "search"]


def _repair_missing_checkpoints(tuner) -> None:
    """Let a ``Tuner.restore`` d run repoint trials whose checkpoint was rotated away after Ray's
    last snapshot (:class:`rspose_tune.search._restore.MissingCheckpointRepair`); once per start."""
    from rspose_tune._ray_compat import restored_run_config
    from rspose_tune.search._restore import MissingCheckpointRepair

    run_config = restored_run_config(tuner)
    kept = [c for c in run_config.callbacks or [] if not isinstance(c, MissingCheckpointRepair)]
    run_config.callbacks = [MissingCheckpointRepair(), *kept]


def _recorded_metrics_to_searcher(p: Plan, tuner) -> None:
    """Hand the restored searcher each search trial's metric by epoch from the run's rows, which can be
    newer than the journal of Ray's last snapshot (:meth:`PruningAwareOptunaSearch.use_recorded_metrics`)."""
    rows = _run_rows(p)
    if rows is None:
        return
    rows = _search_rows(rows)
    metrics = {tid: dict(zip(group["epoch"].astype(int), group["metric"].astype(float)))
               for tid, group in rows.groupby("trial_id")}
    restored_search_alg(tuner).searcher.use_recorded_metrics(metrics)


def _set_restored_concurrency(tuner, max_concurrent: int) -> None:
    """Apply this start's ``--max-concurrent`` to a restored run.

    ``Tuner.restore`` takes the search algorithm from ``tuner.pkl`` with the limit of the first
    start and has no argument to change it (:func:`rspose_tune._ray_compat.restored_search_alg`).
    """
    from rspose_tune._limiter import ResumableConcurrencyLimiter

    search_alg = restored_search_alg(tuner)
    if not isinstance(search_alg, ResumableConcurrencyLimiter):
        raise SearchError(f"--resume: the run's search algorithm is a {type(search_alg).__name__}, not the "
                          "ResumableConcurrencyLimiter this rspose_tune writes; it was started by another version")
    search_alg.set_max_concurrency(max_concurrent)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        if options.dry_run:
            return dry_run(options)
        if options.epoch_gpu_hours is not None:
            raise SearchError("--epoch-gpu-hours prices a search for --dry-run only; add --dry-run or drop it")
        p = plan(options, argv)
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
              if spec.confirm_top else "then: no confirm stage", end="")
        print(f"; stock-loss baseline on seeds {list(spec.baseline_seeds)}" if spec.baseline else "; no baseline")
    try:
        context = start_ray(p, options)
    except RSPoseTuneError as exc:
        return cli_error(exc)
    _print_dashboard(context)
    try:
        if not options.allow_pending_trials:
            _check_cluster_can_hold_a_trial(p)
        grid = run_search(p, options)
        stage_trials = _stages_after_search(p, options, max(p.num_trials, len(grid)))
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
              f"continue it with `{resume}`", file=sys.stderr)
        return 1
    outcome = trial_outcomes(_search_rows(rows), max(p.num_trials, len(grid)))
    print(f"search finished: {len(grid)} trials: {outcome['completed']} completed, {outcome['pruned']} pruned, "
          f"{outcome['errored']} errored, {outcome['unfinished']} unfinished; results in {join(p.run_dir, 'trials')}")
    for line in outcome["errors"]:
        print(line, file=sys.stderr)
    if stage_trials is not None:
        staged = trial_outcomes(rows[rows["stage"].isin(["confirm", "baseline"])], stage_trials)
        print(f"confirm stage finished: {stage_trials} trials: {staged['completed']} completed, "
              f"{staged['errored']} errored, {staged['unfinished']} unfinished")
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
    if options.no_report:
        return 0
    from rspose_tune.export import export_setting
    from rspose_tune.report import report_runs

    status = report_runs(p.storage, [p.name])
    if status != 0:
        return status
    if outcome["completed"] == 0:
        print("no trial reached the full budget: nothing to export (python -m rspose_tune.export --trial ID "
              "exports a pruned trial's setting)")
        return 0
    return export_setting(p.storage, [p.name], backbone=p.preset.name)


def trial_outcomes(rows, num_trials: int) -> dict:
    """What became of a run's trials, from its Parquet rows (:func:`rspose_tune.results.read_results`).

    Counts each trial by the status of its last row (``completed``, ``pruned``, ``error``;
    ``running`` and trials without rows out of ``num_trials`` are ``unfinished``) and gives one
    ``error: N trial(s) failed: <reason>`` line per distinct error reason.
    """
    last = rows.sort_values("epoch", kind="stable").groupby("trial_id").tail(1)
    status = last["status"].value_counts()
    counts = {"completed": int(status.get("completed", 0)), "pruned": int(status.get("pruned", 0)),
              "errored": int(status.get("error", 0))}
    counts["unfinished"] = max(0, num_trials - sum(counts.values()))
    reasons = last[last["status"] == "error"]["error"].fillna("unknown error").value_counts()
    lines = [f"error: {n} trial{'s' if n > 1 else ''} failed: {reason}" for reason, n in sorted(reasons.items())]
    return {**counts, "errors": lines}
