"""What runs around the search: warm start before it, the confirm stage and the baseline after it.

Wiring for :mod:`rspose_tune.search` (kept here so the CLI module stays wiring only):

- :func:`stage_settings`: ``--confirm-top K --confirm-seeds N --baseline`` (defaults: the preset's
  ``confirm`` block) resolved to the seeds each stage trains on: the confirm seeds are the N
  seeds after the run's (``seed + 1 ... seed + N``), never the search's own; the baseline trains
  on the confirm seeds, or on the run's seed when there is no confirm stage.
- :func:`resolve_warm_start`: ``--warm-start RUN ...``: the chosen setting of each earlier run
  (the confirm stage's winner when it has one, else its best full-budget search trial; any
  backbone, any storage ``--storage`` accepts), moved into this preset's space
  (:func:`project_setting`), with a ``source`` string the Optuna study records.
- :func:`stage_configs` and :func:`run_stages`: after the search, the K best distinct settings
  of completed search trials, each on every confirm seed, plus the stock-loss baseline, as one
  Ray Tune experiment ``<run>/confirm`` (FIFO: never pruned, full budget). Its rows go to the
  run's ``trials/`` folder with ``stage`` ``confirm``/``baseline`` and their ``seed``.
"""

from __future__ import annotations

from rspose_tune._storage import ray_storage
from rspose_tune.errors import RSPoseTuneError

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rspose_tune.spaces import COMPONENTS, LOSS_PARAMS, PARAM_NAMES, LossSetting, LossSettingError, component_names

__all__ = [
    "STAGE_EXPERIMENT",
    "StageError",
    "project_setting",
    "resolve_warm_start",
    "run_stages",
    "stage_configs",
    "stage_settings",
]

#: Ray Tune experiment (folder under the run) of the confirm and baseline trials.
STAGE_EXPERIMENT = "confirm"


class StageError(RSPoseTuneError, ValueError):
    """A bad ``--confirm-*``/``--baseline``/``--warm-start`` flag; one ``error:`` line, exit 2."""


def stage_settings(preset, seed: int, *, top: int | None = None, seeds: int | None = None,
                   baseline: bool | None = None) -> dict[str, Any]:
    """``confirm_top``, ``confirm_seeds`` (the seeds), ``baseline``, ``baseline_seeds`` from
    ``--confirm-top``, ``--confirm-seeds`` and ``--baseline`` (``top``, ``seeds``, ``baseline``), else
    the preset's ``confirm`` defaults."""
    top = preset.confirm.top if top is None else top
    n = preset.confirm.seeds if seeds is None else seeds
    baseline = preset.confirm.baseline if baseline is None else baseline
    if top > 0 and n < 2:
        raise StageError(f"--confirm-seeds must be >= 2 when --confirm-top is > 0 (a 95 % interval over seeds "
                         f"needs two), got {n}")
    if seeds is not None and top == 0:
        raise StageError(f"--confirm-seeds {seeds} needs --confirm-top >= 1 (preset {preset.name!r} "
                         "has no confirm stage by default)")
    confirm_seeds = tuple(seed + i for i in range(1, n + 1)) if top > 0 else ()
    return {"confirm_top": top, "confirm_seeds": confirm_seeds, "baseline": bool(baseline),
            "baseline_seeds": (confirm_seeds or (seed,)) if baseline else ()}


# --------------------------------------------------------------------------------------------
# Warm start
# --------------------------------------------------------------------------------------------


def project_setting(params: Mapping[str, Any], space: Mapping[str, Any]) -> tuple[dict[str, float | None], list[str]]:
    """``params`` (the loss values, read as a :class:`rspose_tune.spaces.LossSetting`) moved into ``space``
    (:class:`rspose_tune.spaces.ParamSpec` per name): values outside a range are clipped to it,
    fixed values replace the given ones. Returns the setting and one line per change.

    Raises:
        StageError: a component is off in ``params`` but ``space`` cannot switch it off, or a value
            breaks its rule.
    """
    out: dict[str, float | None] = {}
    changes = []
    try:
        setting = LossSetting.from_dict(params)
    except LossSettingError as exc:
        raise StageError(str(exc)) from None
    for p in LOSS_PARAMS:
        if p.component is None:
            spec, value = space[p.name], setting[p.name]
            new = _into(spec, value)
            if value is None or float(new) != float(value):
                changes.append(f"{p.name} {value!r} -> {new:g} ({spec.describe()})")
            out[p.name] = new
    for c in COMPONENTS:
        dname, cname = component_names(c)
        dspec, cspec = space[dname], space[cname]
        coeff = setting[cname]
        if not setting.is_on(c):
            if not cspec.can_be_off:
                raise StageError(f"component {c!r} is off there, but this preset cannot switch it off "
                                 f"({cname}: {cspec.describe()})")
            out[cname], out[dname] = 0.0, None
            continue
        if cspec.is_fixed and cspec.fixed == 0:
            out[cname], out[dname] = 0.0, None
            changes.append(f"{c} switched off (this preset fixes {cname} at 0)")
            continue
        for name, spec, value in ((cname, cspec, coeff), (dname, dspec, setting[dname])):
            new = _into(spec, value)
            if value is None or float(new) != float(value):
                changes.append(f"{name} {value!r} -> {new:g} ({spec.describe()})")
            out[name] = new
    return {n: out[n] for n in PARAM_NAMES}, changes


def _into(spec, value: float | None) -> float:
    if spec.is_fixed:
        return float(spec.fixed)
    if value is None:  # an on component without a delta: the middle of the range
        return float((spec.low * spec.high) ** 0.5 if spec.log else (spec.low + spec.high) / 2)
    return float(min(max(float(value), spec.low), spec.high))


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def norm(v):
        return None if v is None or v == 0 else round(float(v), 9)

    a, b = LossSetting.from_dict(a), LossSetting.from_dict(b)
    return all(norm(a[n]) == norm(b[n]) for n in PARAM_NAMES)


def _run_dir(run: str, storage: str) -> str:
    """``run`` as given (a path or URI holding ``trials/``), else ``<storage>/<run>``."""
    from rspose_tune.runspec import exists, join, resolve_storage

    if "://" in run or os.sep in run or run.startswith("."):
        return resolve_storage(run)
    local = resolve_storage(run)
    if exists(join(local, "trials")):
        return local
    return join(storage, run)


def resolve_warm_start(runs: Sequence[str], storage: str, preset) -> tuple[list[dict[str, Any]], list[str]]:
    """The chosen setting of each run in ``runs`` (see the module docstring), moved into
    ``preset``'s space; duplicates of the preset's known-good settings or of each other are
    dropped. Returns the ``{"params", "source"}`` entries (in ``runs`` order) and notes.

    Raises:
        StageError: a run cannot be read or has no full-budget trial, or its setting cannot be
            expressed in this preset's space.
    """
    from rspose_tune.report._backbone import backbone_report
    from rspose_tune.report._load import ReportError, load_runs

    entries: list[dict[str, Any]] = []
    notes = []
    for given in runs:
        run_dir = _run_dir(given, storage)
        try:
            (data,) = load_runs(run_dir)
            backbones = sorted(set(data.frame["backbone"]))
            report = backbone_report(backbones[0], [data])
        except (ReportError, OSError, ValueError) as exc:
            raise StageError(f"--warm-start {given!r}: cannot read run {run_dir!r}: {exc}") from None
        if report.best_trial is None:
            raise StageError(f"--warm-start {given!r}: run {run_dir!r} has no trial that reached the full budget")
        try:
            params, changes = project_setting(report.params, preset.params)
        except StageError as exc:
            raise StageError(f"--warm-start {given!r}: the chosen setting of trial {report.best_trial} "
                             f"cannot be used: {exc}") from None
        how = (f"confirmed mean {report.confirmed[0].mean:.4g} over {len(report.confirmed[0].by_seed)} seeds"
               if report.confirmed else f"{report.metric_name} {report.metric:.4g}")
        source = f"{run_dir} trial {report.best_trial} ({report.backbone}, {how})"
        if changes:
            source += "; moved into this space: " + ", ".join(changes)
        if any(_same(params, k) for k in preset.known_good) or any(_same(params, e["params"]) for e in entries):
            notes.append(f"--warm-start {given!r}: its setting is already queued (known-good or another run); skipped")
            continue
        entries.append({"params": params, "source": source})
        notes.append(f"--warm-start: enqueued {source}")
    return entries, notes


# --------------------------------------------------------------------------------------------
# Confirm stage and baseline
# --------------------------------------------------------------------------------------------


def stage_configs(spec, rows) -> tuple[list[dict[str, Any]], list[str]]:
    """Trial configs of the confirm stage and the baseline, from the run's result ``rows``.

    Confirm: the ``spec.confirm_top`` best distinct settings of completed search trials (best
    first), each with every confirm seed; then the baseline on ``spec.baseline_seeds``.
    """
    from rspose_tune.report._stats import top_settings
    from rspose_tune.report._summary import summarize_trials

    notes = []
    configs: list[dict[str, Any]] = []
    if spec.confirm_top > 0:
        search = rows[rows["stage"].fillna("search") == "search"] if "stage" in rows else rows
        trials = summarize_trials(search) if not search.empty else None
        top = top_settings(trials, spec.preset.mode, spec.confirm_top) if trials is not None else []
        if len(top) < spec.confirm_top:
            notes.append(f"confirm stage: {len(top)} distinct full-budget setting(s) to confirm, fewer than "
                         f"--confirm-top {spec.confirm_top}")
        for _, trial in (top.iterrows() if len(top) else []):
            params = dict(LossSetting.from_row(trial))  # an off component: coefficient 0.0, delta None
            for seed in spec.confirm_seeds:
                configs.append({**params, "stage": "confirm", "seed": int(seed), "confirms": str(trial["trial_id"])})
    if spec.baseline:
        for seed in spec.baseline_seeds:
            configs.append({**{n: None for n in PARAM_NAMES}, "stage": "baseline", "seed": int(seed), "confirms": None})
    return configs, notes


def run_stages(p, make_trainable, callbacks: Sequence[Any], reporter, *, max_concurrent: int, verbose: int) -> list:
    """Run (or, on ``--resume``, continue) the confirm/baseline experiment of the run ``p``, at most
    ``max_concurrent`` trials at once, with Ray Tune's progress ``verbose``.

    ``make_trainable()`` gives the same trainable (with resources) as the search's; rows are
    written by ``callbacks`` (a :class:`rspose_tune.results_callback.ParquetResultsCallback` into the
    run's ``trials/``). Returns Ray's result grid (empty list when there is nothing to run).
    """
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rspose_tune.results import read_results
    from rspose_tune.runspec import exists, join, trial_dir_name

    spec = p.spec
    where = join(p.run_dir, STAGE_EXPERIMENT)
    trainable = make_trainable()
    if exists(join(where, "tuner.pkl")):
        print(f"confirm stage: continuing {where}")
        where_path, where_filesystem = ray_storage(where)
        tuner = tune.Tuner.restore(where_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=where_filesystem)
        from rspose_tune.tracking import use_tracking_callbacks

        use_tracking_callbacks(tuner, list(callbacks))  # this start's --mlflow/--wandb
        return list(tuner.fit())
    configs, notes = stage_configs(spec, read_results(join(p.run_dir, "trials")))
    for note in notes:
        print(note)
    if not configs:
        return []
    n_confirm = sum(c["stage"] == "confirm" for c in configs)
    n_settings = len({c["confirms"] for c in configs if c["stage"] == "confirm"})
    print(f"confirm stage: {n_confirm} confirm trial(s) ({n_settings} setting(s) of --confirm-top {spec.confirm_top} on "
          f"seeds {list(spec.confirm_seeds)}), "
          f"{len(configs) - n_confirm} baseline trial(s) with the stock loss, {p.max_epochs} epochs each, never "
          f"pruned; in {where}")
    # Each trial's config is one preset point; the domains list the points' values so Ray accepts them.
    keys = [*PARAM_NAMES, "stage", "seed", "confirms"]
    space = {k: tune.choice(list(dict.fromkeys(c[k] for c in configs))) for k in keys}
    search_alg = BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=max_concurrent)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=len(configs),
                                    trial_name_creator=trial_dir_name, trial_dirname_creator=trial_dir_name),
        run_config=tune.RunConfig(
            name=STAGE_EXPERIMENT,
            storage_path=ray_storage(p.run_dir)[0],
            storage_filesystem=ray_storage(p.run_dir)[1],
            callbacks=list(callbacks),
            progress_reporter=reporter,
            verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=2),
            sync_config=tune.SyncConfig(sync_artifacts=True),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return list(tuner.fit())
