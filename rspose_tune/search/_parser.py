"""The search CLI's flags, each declared once: :class:`SearchOptions` is the table (a field per flag:
its destination, type and default, with its names, group, help, the run-spec field it sets and its
rule on ``--resume``), and it drives :func:`build_parser`, :data:`RESUME_MAY_CHANGE` and
:func:`rspose_tune.search.resume_conflicts`. The parsed options go on as a :class:`SearchOptions`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rspose_tune import DEFAULT_STORAGE
from rspose_tune._flags import float_at_least, int_at_least, int_between
from rspose_tune.searcher._rules import SAMPLERS
from rspose_tune.runspec import DEFAULT_TRAINABLE
from rspose_tune.spaces import SearchSpaceError, list_presets, load_preset

__all__ = ["DEFAULT_MAX_CONCURRENT", "DEFAULT_PRESET", "DEFAULT_TRIALS", "FALLBACK_TRIALS", "FIXED", "MAY_CHANGE",
           "ONCE", "RESUME_MAY_CHANGE", "Flag", "SearchOptions", "build_parser", "parse_options", "search_flags"]

DEFAULT_PRESET = "demo"
DEFAULT_TRIALS = {"demo": 8}
FALLBACK_TRIALS = 32
DEFAULT_MAX_CONCURRENT = 8
#: The largest --seed: NumPy and Optuna take seeds below 2**32, and the confirm stage uses the ones after --seed.
MAX_SEED = 2**31 - 1
#: ``--resume``'s rules (:attr:`Flag.resume`): the run spec fixes the value; any value (how and where
#: a run executes); read once when the run starts, refused on ``--resume``; None: not a setting.
FIXED, MAY_CHANGE, ONCE = "fixed", "may change", "once"


@dataclass(frozen=True)
class Flag:
    """One search flag: a row of the table :class:`SearchOptions` declares."""

    names: tuple[str, ...]  # the first is the flag's name in messages
    group: str  # the --help group
    options: Mapping[str, Any]  # argparse's add_argument keywords (type, choices, help ...)
    spec: str | None = None  # the run-spec field it sets (dotted: preset.data.root); None: none of its own
    resume: str | None = FIXED
    listed: int = 0  # MAY_CHANGE: place in --help's list of them
    # FIXED: same(given, the spec field's value, options) (default ==); view(value): the run's value in messages
    same: Callable[[Any, Any, Any], bool] | None = None
    view: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        return self.names[0]


def _flag(*names: str, group: str, default: Any = None, spec: str | None = None, resume: str | None = FIXED,
          listed: int = 0, same=None, view=None, at_least: int | None = None, at_most: int | None = None,
          **options: Any):
    """A field of :class:`SearchOptions`: its default, and its :class:`Flag` as metadata (``at_least``,
    ``at_most``: the ``int``/``float`` ``type``'s bounds, checked by the parser naming the flag)."""
    if at_most is not None:
        options["type"] = int_between(names[0], at_least, at_most)
    elif at_least is not None:
        options["type"] = (int_at_least if options["type"] is int else float_at_least)(names[0], at_least)
    row = Flag(names, group, {"default": default, **options}, spec, resume, listed, same, view)
    return dataclasses.field(default=default, metadata={"flag": row})


def preset_name(backbone: str) -> str:
    """The name a preset given by ``--backbone`` has (a YAML path: its stem)."""
    if backbone.endswith((".yaml", ".yml")) or "/" in backbone or os.sep in backbone:
        return Path(backbone).stem
    return backbone


def _same_preset(given: str, preset, options) -> bool:
    """``--backbone`` (with ``--search-dir``) names the run's preset: its name, or for a path or a
    search folder the same file."""
    if options.search_dir is None and preset_name(given) == given:
        return given == preset.name
    try:
        source = load_preset(given, search_dir=options.search_dir).source
    except SearchSpaceError:
        return False
    return Path(source) == Path(preset.source)


def _same_path(given: str, recorded, options=None) -> bool:
    return recorded is not None and Path(given).expanduser().absolute() == Path(recorded)


def _same_weights(given: str, recorded, options) -> bool:
    if given.strip().lower() in ("none", "null", ""):
        return recorded is None
    return _same_path(given, recorded)


_WHAT, _TRUST, _WHERE, _DASH, _OUT = "what", "trust", "where", "dash", "out"
_PRESETS = "<the built-in presets>"  # in a help text: replaced by list_presets() when a parser is built
#: The --help groups: (key, title, description).
_GROUPS = (
    (_WHAT, "what to search", None),
    (_TRUST, "a setting you can trust", "after the search: re-run the best settings on further seeds, compare with "
     "the stock loss; before it: start from earlier runs, or price the search with --dry-run"),
    (_WHERE, "where it runs", None),
    (_DASH, "dashboard (local Ray only)", None),
    (_OUT, "output", None),
)


@dataclass(frozen=True)
class SearchOptions:
    """The search's options, as parsed (None: not given); each field is one flag (:func:`search_flags`)."""

    backbone: str | None = _flag(
        "--backbone", "--preset", group=_WHAT, spec="preset", same=_same_preset, view=lambda p: p.name,
        help="search-space preset (a name from search_spaces/ or a YAML path); one of " + _PRESETS + " "
        f"(default: {DEFAULT_PRESET})")
    search_dir: str | None = _flag(  # no field of its own: --backbone's check reads it
        "--search-dir", group=_WHAT, metavar="DIR",
        help="a folder of preset YAML files (<name>.yaml) added to the built-in presets; a name that is "
        "also built in is refused (pass the file's path to --backbone instead)")
    num_trials: int | None = _flag(
        "--num-trials", group=_WHAT, spec="num_trials", type=int, at_least=1,
        help=f"trials to run (default: {DEFAULT_TRIALS} by preset, else {FALLBACK_TRIALS})")
    scheduler: str | None = _flag(
        "--scheduler", group=_WHAT, spec="scheduler", choices=("asha", "fifo"),
        help="asha: stop weak trials early; fifo: every trial runs the full budget (baseline) (default: asha)")
    sampler: str | None = _flag(
        "--sampler", group=_WHAT, spec="sampler", choices=SAMPLERS,
        help="tpe: Optuna TPE after its random start-up trials; random: random search (baseline); "
        "gp: Optuna's Gaussian process after the same start-up trials (default: tpe)")
    seed: int | None = _flag(
        "--seed", group=_WHAT, spec="seed", type=int, at_least=0, at_most=MAX_SEED,
        help="seed of the searcher and of every trial's training (default: 0)")
    max_epochs: int | None = _flag(
        "--max-epochs", group=_WHAT, spec="max_epochs", type=int, at_least=1,
        help="full budget per trial (default: the preset's)")
    grace_epochs: int | None = _flag(
        "--grace-epochs", group=_WHAT, spec="grace_epochs", type=int, at_least=1,
        help="ASHA grace period in epochs (default: the preset's)")
    reduction_factor: int | None = _flag(
        "--reduction-factor", group=_WHAT, spec="reduction_factor", type=int, at_least=2,
        help="ASHA reduction factor, an integer >= 2 (default: the preset's)")
    trainable: str | None = _flag(
        "--trainable", group=_WHAT, spec="trainable", metavar="MODULE:NAME",
        help="the Ray Tune function trainable every trial calls, imported before Ray starts (its "
        f"keyword arguments: docs/real_backbone.md) (default: {DEFAULT_TRAINABLE})")
    data_root: str | None = _flag(
        "--data-root", group=_WHAT, spec="preset.data.root", same=_same_path, view=str,
        help="dataset root (overrides the preset and RSPOSE_TUNE_DATA_ROOT)")
    weights: str | None = _flag(
        "--weights", group=_WHAT, spec="preset.weights", same=_same_weights,
        view=lambda w: "none" if w is None else str(w),
        help="pretrained backbone checkpoint path, or 'none' (overrides the preset and RSPOSE_TUNE_WEIGHTS)")
    confirm_top: int | None = _flag(
        "--confirm-top", group=_TRUST, spec="confirm_top", type=int, at_least=0, metavar="K",
        help="after the search, re-run the K best full-budget settings at full budget (never pruned) "
        "on --confirm-seeds further training seeds; 0: no confirm stage (default: the preset's confirm.top)")
    confirm_seeds: int | None = _flag(
        "--confirm-seeds", group=_TRUST, spec="confirm_seeds", same=lambda n, seeds, o: n == len(seeds), view=len,
        type=int, at_least=1, metavar="N",
        help="seeds of the confirm stage: the N after --seed, >= 2 (default: the preset's confirm.seeds)")
    baseline: bool | None = _flag(
        "--baseline", group=_TRUST, spec="baseline", action=argparse.BooleanOptionalAction,
        help="also train the base config with its stock loss (KeypointMSELoss, KLDiscretLoss ...) at "
        "full budget, on the confirm seeds (without a confirm stage: on --seed); the report gives "
        "the chosen setting's gain over it (default: the preset's confirm.baseline)")
    warm_start: tuple[str, ...] | None = _flag(
        "--warm-start", group=_TRUST, spec="warm_start", resume=ONCE, nargs="+", action="extend", metavar="RUN",
        help="enqueue the chosen setting of each earlier RUN (a run folder or URI, or a run name under "
        "--storage; any backbone) after the preset's known-good settings")
    dry_run: bool = _flag(
        "--dry-run", group=_TRUST, default=False, resume=None, action="store_true",
        help="run a start's checks (the same errors; it connects to no server and imports no "
        "trainable; missing data or weights are a note), print the ASHA rungs, trials and epochs per "
        "rung, expected and worst-case epochs and GPU-hours, then exit: starts no Ray, reads no "
        "data, writes nothing")
    epoch_gpu_hours: float | None = _flag(
        "--epoch-gpu-hours", group=_TRUST, resume=None, type=float, at_least=0, metavar="H",
        help="with --dry-run: GPU-hours one epoch of one trial costs (default: the preset's cost.epoch_gpu_hours)")
    address: str | None = _flag(
        "--address", group=_WHERE, resume=MAY_CHANGE, listed=3,
        help="Ray cluster to join ('auto' or host:port); default: RAY_ADDRESS, else start a local Ray")
    max_concurrent: int | None = _flag(
        "--max-concurrent", group=_WHERE, resume=MAY_CHANGE, listed=4, type=int, at_least=1,
        help=f"trials running at once (default: as many as resources allow, at most {DEFAULT_MAX_CONCURRENT})")
    gpus_per_trial: float | None = _flag(
        "--gpus-per-trial", group=_WHERE, spec="gpus_per_trial", type=float, at_least=0,
        help="GPUs per trial, fractions allowed (default: the preset's)")
    cpus_per_trial: float | None = _flag(
        "--cpus-per-trial", group=_WHERE, spec="cpus_per_trial", type=float, at_least=0,
        help="CPUs per trial, shared by its ranks (default: the preset's)")
    workers_per_trial: int | None = _flag(
        "--workers-per-trial", group=_WHERE, spec="workers_per_trial", type=int, at_least=1,
        help="ranks (processes) each trial trains on, data-parallel: NCCL with one GPU each, or "
        "gloo on CPUs (default: the preset's, else the GPUs per trial when > 1, else 1)")
    num_workers: int | None = _flag(
        "--num-workers", group=_WHERE, spec="dataloader_workers", type=int, at_least=0,
        help="DataLoader worker processes per rank (default: the base config's)")
    allow_pending_trials: bool = _flag(
        "--allow-pending-trials", group=_WHERE, default=False, resume=MAY_CHANGE, listed=6, action="store_true",
        help="skip the check that some node can hold a trial (an autoscaler will add nodes)")
    num_cpus: int | None = _flag(
        "--num-cpus", group=_WHERE, resume=MAY_CHANGE, listed=5, type=int, at_least=1,
        help="CPUs of a local Ray (default: all); ignored when joining a cluster")
    storage: str = _flag(
        "--storage", group=_WHERE, default=DEFAULT_STORAGE, resume=MAY_CHANGE, listed=1,
        help="results root: a local dir (relative: to the working directory, so the default is "
        "./results there), a shared filesystem path, or a URI pyarrow.fs opens (file://..., s3://bucket/prefix)")
    name: str | None = _flag(
        "--name", group=_WHERE, resume=MAY_CHANGE, listed=2,
        help="run name, a folder under --storage (default: <backbone>-<UTC timestamp>, new for "
        "every start); with --resume: the run to continue")
    resume: bool = _flag(
        "--resume", group=_WHERE, default=False, resume=None, action="store_true",
        help="continue the run <storage>/<name> from its run spec (without --name: the most recent "
        "unfinished run of --backbone's preset); only the flags listed below may be given "
        "with other values than the run was started with")
    dashboard_host: str = _flag(
        "--dashboard-host", group=_DASH, default="127.0.0.1", resume=MAY_CHANGE, listed=7,
        help="interface the Ray dashboard binds to; anything but loopback exposes Ray's job API")
    dashboard_port: int = _flag(
        "--dashboard-port", group=_DASH, default=8265, resume=MAY_CHANGE, listed=8,
        type=int, at_least=1, at_most=65535)
    no_dashboard: bool = _flag(
        "--no-dashboard", group=_DASH, default=False, resume=MAY_CHANGE, listed=9, action="store_true",
        help="do not start the Ray dashboard")
    no_report: bool = _flag(
        "--no-report", group=_OUT, default=False, resume=MAY_CHANGE, listed=10, action="store_true",
        help="skip the report and the export at the end")
    mlflow: str | None = _flag(
        "--mlflow", group=_OUT, resume=MAY_CHANGE, listed=12, metavar="TRACKING_URI",
        help="also log every trial to MLflow (Ray Tune's MLflowLoggerCallback): a local path, "
        "file:///abs/path or http(s)://host:port of a tracking server; one MLflow experiment named "
        "after the run, one MLflow run per trial (docs/tracking.md)")
    wandb: str | None = _flag(
        "--wandb", group=_OUT, resume=MAY_CHANGE, listed=13, metavar="PROJECT",
        help="also log every trial to this Weights & Biases project (Ray Tune's WandbLoggerCallback; "
        "WANDB_MODE=offline for air-gapped clusters), grouped by the run (docs/tracking.md)")
    verbose: int = _flag(
        "--verbose", group=_OUT, default=1, resume=MAY_CHANGE, listed=11, type=int, choices=(0, 1, 2),
        help="Ray Tune progress verbosity")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SearchOptions:
        """The options of :func:`build_parser`'s ``args`` (lists become tuples)."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def search_flags() -> tuple[tuple[str, Flag], ...]:
    """``(destination, flag)`` of every search flag, in --help's order."""
    return tuple((f.name, f.metadata["flag"]) for f in dataclasses.fields(SearchOptions))


#: Flags that only say how and where a run executes: --resume accepts any value for them.
RESUME_MAY_CHANGE = tuple(f.name for _, f in sorted((f for f in search_flags() if f[1].resume == MAY_CHANGE),
                                                    key=lambda f: f[1].listed))


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
    groups = {key: parser.add_argument_group(title, about) for key, title, about in _GROUPS}
    for dest, flag in search_flags():
        options = dict(flag.options)
        if _PRESETS in options.get("help", ""):  # read when a parser is built, not at import
            options["help"] = options["help"].replace(_PRESETS, str(list_presets()))
        groups[flag.group].add_argument(*flag.names, dest=dest, **options)
    parser.epilog = (
        "A run's identity (preset, data root, weights, trainable, number of trials, budget, seed, scheduler, sampler, "
        "resources per trial, confirm stage, baseline, warm-start settings) is written once to "
        "<storage>/<name>/run_spec.yaml; --resume reads it and refuses "
        "flags that differ from it. Flags that may change on --resume: " + ", ".join(RESUME_MAY_CHANGE) + ". "
        "Exit status: 0 when some trial completed or was pruned, 1 when none did (one line per distinct "
        "error), 2 for a user error (one 'error:' line)."
    )
    return parser


def parse_options(argv: list[str] | None = None) -> SearchOptions:
    """The search's command line ``argv`` (default ``sys.argv[1:]``) as :class:`SearchOptions`."""
    return SearchOptions.from_args(build_parser().parse_args(argv))
