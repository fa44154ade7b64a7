"""``python -m rspose_tune.export``: the best RSPose setting of a backbone as a standalone MMPose config.

The trial is chosen exactly as :mod:`rspose_tune.report` chooses it (the best ``completed``
trial of the backbone over the selected runs), or given with ``--trial``. The config is
built by :func:`rspose_tune.mmpose_adapter.configs.build_config` from the preset of the same
name, with the **base config's own schedule** (its ``max_epochs``, e.g. 210, and
``val_interval``, so LR milestones are the original ones), and then made fit for MMPose's own
``tools/train.py``:

- ``custom_imports`` lists ``rspose_tune.mmpose_adapter.plugin`` (first, then the base's own
  imports) so that ``RSPoseHeatmapHead``/``RSPoseSimCCHead``/``RSPoseLoss`` are registered;
- ``default_hooks`` are the base config's own again (the search makes checkpoints rare), with
  ``checkpoint.save_best`` on the preset's metric and ``rule`` from its mode;
- the ``rspose_tune`` bookkeeping key is removed; ``work_dir`` is ``./work_dirs/<file stem>``
  (what ``tools/train.py`` would pick), and provenance (run, trial, metric, git revision)
  goes into a comment header;
- when the search was tracked (``--mlflow``/``--wandb``, recorded in ``<run>/tracking.json``), the
  matching vis backend (``RSPoseMLflowVisBackend``, mmengine's ``MLflowVisBackend`` with MLflow-safe metric names, with the tracking URI and the run's experiment,
  ``WandbVisBackend`` with the project and the run as group) is added to
  ``visualizer.vis_backends`` (the base config's stay), so the full training is logged next to the
  search; ``--no-tracking-export`` leaves it out.

Pretrained weights are never downloaded: when the base config names remote weights, pass
``--weights PATH`` (a local file) or ``--weights none`` (train from scratch).

Exit status: 0 on success, 2 on bad input (no runs, unknown backbone or trial, missing weights).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rspose_tune._flags import add_run_selection
from rspose_tune.errors import RSPoseTuneError, cli_error
from rspose_tune.report import (
    ReportError,
    RunData,
    backbone_report,
    find_preset,
    load_runs,
    only_backbone,
    storage_argument,
    summarize_trials,
)
from rspose_tune.spaces import LossSetting

__all__ = ["PLUGIN_MODULE", "export_config", "export_setting", "finalize_export_config", "main", "pick_trial"]

#: Module that registers rspose_tune's MMPose modules when MMPose imports it (``custom_imports``).
PLUGIN_MODULE = "rspose_tune.mmpose_adapter.plugin"
_PRIVATE_KEYS = ("rspose_tune",)
_NONE_WORDS = ("none", "null")


def _trials_of(backbone: str, runs: Sequence[RunData]) -> tuple[pd.DataFrame, dict[str, RunData]]:
    parts = [summarize_trials(run.frame[run.frame["backbone"] == backbone], run.settings) for run in runs]
    parts = [p for p in parts if not p.empty]
    if not parts:
        found = sorted({b for run in runs for b in run.frame["backbone"]})
        raise ReportError(f"`--backbone` must be one of the backbones in runs {[r.name for r in runs]}: {found}, "
                          f"got {backbone!r}")
    return pd.concat(parts, ignore_index=True), {run.name: run for run in runs}


def pick_trial(backbone: str, runs: Sequence[RunData], trial_id: str | None = None) -> tuple[pd.Series, RunData]:
    """(trial summary row, its run): ``trial_id``, or the trial the report selects as best.

    Raises:
        ReportError: unknown backbone or trial, a trial id in several runs, no completed trial.
    """
    trials, by_name = _trials_of(backbone, runs)
    if trial_id is not None:
        match = trials[trials["trial_id"] == trial_id]
        if match.empty:
            raise ReportError(f"--trial {trial_id!r} is not a {backbone!r} trial in runs {sorted(by_name)}; "
                              f"trials there: {sorted(trials['trial_id'])}")
        if len(match) > 1:
            raise ReportError(f"--trial {trial_id!r} is in several runs {sorted(match['run'])}; pick one with --run")
        chosen = match.iloc[0]
        if chosen["status"] == "error":
            raise ReportError(f"--trial {trial_id!r} of run {chosen['run']!r} failed (status error at epoch "
                              f"{chosen['last_epoch']}): its setting has no trustworthy metric, nothing exported; "
                              "the run's report lists the error, pick a completed or pruned trial")
        return chosen, by_name[chosen["run"]]
    summary = backbone_report(backbone, runs)  # the report's own selection
    if summary.best_trial is None:
        counts = trials["status"].value_counts().to_dict()
        raise ReportError(f"no {backbone!r} trial reached the full budget (status completed) in runs "
                          f"{summary.runs} (statuses: {counts}); pass --trial ID to export another trial's "
                          "setting")
    chosen = trials[(trials["run"] == summary.best_run) & (trials["trial_id"] == summary.best_trial)].iloc[0]
    return chosen, by_name[summary.best_run]


def _params(trial: pd.Series) -> dict[str, float | None]:
    """The trial's setting as its row stores it (:class:`rspose_tune.spaces.LossSetting`; off: null)."""
    return LossSetting.from_row(trial).as_row()


def run_preset(spec, *, data_root: str | None = None, weights: str | None = None):
    """The run spec's preset, with ``--data-root``/``--weights`` of the export applied when given."""
    from rspose_tune.runspec import preset_to_yaml
    from rspose_tune.spaces import parse_preset

    if data_root is None and weights is None:
        return spec.preset
    return parse_preset(preset_to_yaml(spec.preset), name=spec.preset.name, source=spec.preset.source,
                        data_root=data_root, weights=weights)


def finalize_export_config(cfg, base, *, metric: str, mode: str, work_dir: str) -> None:
    """Make a :func:`build_config` result fit for MMPose's ``tools/train.py`` (in place; see module doc)."""
    for key in _PRIVATE_KEYS:
        cfg.pop(key, None)
    hooks = copy.deepcopy(dict(base.get("default_hooks") or {}))
    checkpoint = dict(hooks.get("checkpoint") or dict(type="CheckpointHook", interval=10))
    checkpoint["save_best"] = metric
    checkpoint["rule"] = "greater" if mode == "max" else "less"
    hooks["checkpoint"] = checkpoint
    cfg["default_hooks"] = hooks
    base_imports = dict(base.get("custom_imports") or {}).get("imports") or []
    if isinstance(base_imports, str):
        base_imports = [base_imports]
    imports = [PLUGIN_MODULE] + [m for m in base_imports if m != PLUGIN_MODULE]
    cfg["custom_imports"] = dict(imports=imports, allow_failed_imports=False)
    cfg["work_dir"] = work_dir


def export_config(
    trial: pd.Series,
    run: RunData,
    out: Path,
    *,
    data_root: str | None = None,
    weights: str | None = None,
    display: str | None = None,
    tracking: bool = True,
) -> Path:
    """Build, check and write the exported config of ``trial``; return its path.

    Args:
        weights: a local checkpoint path, ``'none'`` (train from scratch) or None (the run's).
        display: where the file will live, for its header (default: ``out``).
        tracking: add the vis backend of the run's tracking (``<run>/tracking.json``), if any.
    """
    from mmengine.config import Config

    from rspose_tune.mmpose_adapter import setup_mmpose
    from rspose_tune.mmpose_adapter._weights import check_weights
    from rspose_tune.mmpose_adapter.configs import build_config, load_base_config
    from rspose_tune.spaces import load_preset

    backbone = str(trial["backbone"])
    scratch = weights is not None and weights.strip().lower() in _NONE_WORDS
    if run.spec is not None:  # the preset exactly as the run used it (its data root and weights)
        preset = run_preset(run.spec, data_root=data_root, weights=weights)
    else:  # a run from before run specs: the preset file, the environment and the flags of now
        preset = find_preset(backbone, run.meta)  # by name, else the run's own preset file
        if preset is None:
            raise ReportError(f"no preset {backbone!r} (search_spaces/{backbone}.yaml) and the run's metadata names "
                              "no existing preset file; the export needs the preset's base config")
        preset = load_preset(preset.source, data_root=data_root, weights=weights)
    # the weights the exported config would initialise the backbone with: checked as a search's
    origin = None if run.spec is None or weights is not None else "the run's, from its run spec"
    weights_note = check_weights(preset, weights, origin=origin)
    if weights_note:
        print(weights_note, file=sys.stderr)
    base = load_base_config(preset.base_config, Path(preset.source).parent)
    max_epochs = int(base.train_cfg["max_epochs"])
    val_interval = int(base.train_cfg.get("val_interval", 1))
    setup_mmpose()  # build_config reads dataset meta from MMPose's registry
    cfg = build_config(preset, _params(trial), max_epochs=max_epochs, val_interval=val_interval, scratch=scratch)
    # save_best follows the preset's metric and mode: what this config's evaluator reports
    finalize_export_config(cfg, base, metric=preset.metric, mode=preset.mode, work_dir=f"./work_dirs/{out.stem}")
    if tracking:
        _add_tracking_backends(cfg, run, name=out.stem)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(out))
    out.write_text(_header(trial, run, preset, display or str(out.resolve()), max_epochs) + out.read_text())
    check = Config.fromfile(str(out), import_custom_modules=False)
    if check.train_cfg["max_epochs"] != max_epochs or "rspose_tune" in check:
        raise RuntimeError(f"the exported config {out} does not read back as written")
    return out


def _add_tracking_backends(cfg, run: RunData, *, name: str) -> None:
    """Append the vis backends of the run's tracking to ``cfg.visualizer.vis_backends`` (kept)."""
    from rspose_tune.tracking import read_tracking, vis_backends

    extra = vis_backends(read_tracking(run.path), run_name=name)
    if not extra:
        return
    visualizer = dict(cfg.get("visualizer") or dict(type="PoseLocalVisualizer", name="visualizer"))
    visualizer["vis_backends"] = [*(visualizer.get("vis_backends") or [dict(type="LocalVisBackend")]), *extra]
    cfg["visualizer"] = visualizer


def _header(trial: pd.Series, run: RunData, preset, out: str, max_epochs: int) -> str:
    from rspose_tune import __version__

    params = ", ".join(f"{n}={'off' if v is None else f'{v:.6g}'}" for n, v in _params(trial).items())
    metric_text = _metric_text(trial, 6)
    lines = [
        f"RSPose loss setting for {preset.name!r}, exported by rspose_tune {__version__} "
        "(python -m rspose_tune.export).",
        f"Search run {run.name!r}, trial {trial['trial_id']!r}: status {trial['status']}, "
        f"{trial['metric_name'] or preset.metric} = {metric_text} at epoch {trial['last_epoch']} of the search budget.",
        f"Params: {params}.",
        f"Base config: {preset.base_config}, with its own schedule (max_epochs {max_epochs}).",
        f"Pretrained backbone weights: {preset.weights or 'none (from scratch)'}.",
        f"Search git revision: {run.spec.git_revision if run.spec else run.meta.get('git_revision', 'unknown')}.",
        f"Train with MMPose's own script (rspose_tune must be importable): python tools/train.py {out}",
    ]
    return "".join(f"# {line}\n" for line in lines) + "\n"


def _metric_text(trial: pd.Series, digits: int) -> str:
    metric = trial["metric"]
    missing = metric is None or (isinstance(metric, float) and math.isnan(metric))
    return "no metric" if missing else f"{metric:.{digits}g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rspose_tune.export",
        description="Write the best RSPose loss setting of a backbone (or of --trial) as a standalone "
        "MMPose config for mmpose's tools/train.py, with the base config's full schedule.",
    )
    parser.add_argument("--backbone", metavar="NAME",
                        help="backbone (preset name) to export (default: the one backbone of the selected runs)")
    add_run_selection(parser, run_help="only these runs (put the storage path before --run)")  # after --backbone in --help
    parser.add_argument("--trial", metavar="ID", help="export this trial's setting instead of the best")
    parser.add_argument("--out", metavar="PATH",
                        help="output .py, a local path or a URI (default <storage>/<run>/export/<backbone>_rspose.py)")
    parser.add_argument("--data-root", metavar="PATH",
                        help="dataset root in the exported config (default: the run's, from its run_spec.yaml)")
    parser.add_argument("--weights", metavar="PATH|none",
                        help="pretrained backbone weights (local file), or 'none' to train from scratch; "
                        "default: the run's weights (from its run_spec.yaml)")
    parser.add_argument("--no-tracking-export", action="store_true",
                        help="do not add the MLflow/W&B vis backend of the run's tracking (<run>/tracking.json, "
                        "from the search's --mlflow/--wandb) to the config's visualizer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return export_setting(args.storage, args.run, backbone=args.backbone, trial_id=args.trial, out=args.out,
                          data_root=args.data_root, weights=args.weights, tracking=not args.no_tracking_export)


def export_setting(storage: str | None = None, runs: Sequence[str] | None = None, *, backbone: str | None = None,
                   trial_id: str | None = None, out: str | None = None, data_root: str | None = None,
                   weights: str | None = None, tracking: bool = True) -> int:
    """``python -m rspose_tune.export`` after parsing: write the chosen (or ``trial_id``'s) setting's
    config and print where; the exit status (2: one ``error:`` line)."""
    from rspose_tune.mmpose_adapter.configs import ConfigBuildError
    from rspose_tune._storage import copy_file, is_uri

    try:
        storage, why = storage_argument(storage, runs)
        found = load_runs(storage, runs, why=why)
        backbone = backbone or only_backbone(found)
        trial, run = pick_trial(backbone, found, trial_id)
        if out is not None and not out.endswith(".py"):
            raise ReportError(f"--out must end in .py (an MMPose Python config), got {out!r}")
        target = out or f"{run.path.rstrip('/')}/export/{backbone}_rspose.py"
        if trial["status"] != "completed":
            print(f"warning: trial {trial['trial_id']!r} is {trial['status']} at epoch {trial['last_epoch']}: its "
                  "setting was not trained to the full budget in the search", file=sys.stderr)
        if is_uri(target):  # an object store: build locally, check, then upload
            tmp = tempfile.TemporaryDirectory(prefix="rspose_export_")
            path = export_config(trial, run, Path(tmp.name) / target.rsplit("/", 1)[-1], data_root=data_root,
                                 weights=weights, display=target, tracking=tracking)
            copy_file(path, target)
        else:
            path = export_config(trial, run, Path(target), data_root=data_root, weights=weights, tracking=tracking)
    except RSPoseTuneError as exc:
        hint = ""
        if isinstance(exc, ConfigBuildError) and "weights" in str(exc) and "--weights none" not in str(exc):
            hint = "\nfix: pass --weights PATH (a local checkpoint) or --weights none (train from scratch)"
        return cli_error(exc, hint)
    params = ", ".join(f"{n}={'off' if v is None else f'{v:.4g}'}" for n, v in _params(trial).items())
    print(f"{backbone}: trial {trial['trial_id']} of run {run.name} ({trial['metric_name']} "
          f"{_metric_text(trial, 4)}); {params}")
    if is_uri(target):
        print(f"wrote {target}")
        print("train with MMPose's own script: copy it to this machine, then python tools/train.py <the copy>")
        _warn_missing_data(path)
        tmp.cleanup()
        return 0
    print(f"wrote {path}")
    print(f"train with MMPose's own script: python tools/train.py {path.resolve()}")
    _warn_missing_data(path)
    return 0


def _warn_missing_data(path: Path) -> None:
    from mmengine.config import Config

    cfg = Config.fromfile(str(path), import_custom_modules=False)
    root = cfg.train_dataloader.dataset.get("data_root")
    if root and not os.path.isdir(root):
        print(f"note: the data root {root!r} does not exist on this machine; pass --data-root to change it",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
