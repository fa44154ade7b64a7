"""The search CLI's flags (:func:`build_parser`) and their defaults."""

from __future__ import annotations

import argparse
import math

from rspose_tune import DEFAULT_STORAGE
from rspose_tune._flags import int_at_least
from rspose_tune.runspec import DEFAULT_TRAINABLE
from rspose_tune.spaces import list_presets

__all__ = ["DEFAULT_PRESET", "DEFAULT_TRIALS", "FALLBACK_TRIALS", "RESUME_MAY_CHANGE", "build_parser"]

DEFAULT_PRESET = "demo"
DEFAULT_TRIALS = {"demo": 8}
FALLBACK_TRIALS = 32
#: Flags that only say how and where a run executes: --resume accepts any value for them.
RESUME_MAY_CHANGE = ("--storage", "--name", "--address", "--max-concurrent", "--num-cpus",
                     "--allow-pending-trials", "--dashboard-host", "--dashboard-port", "--no-dashboard",
                     "--no-report", "--verbose", "--mlflow", "--wandb")  # fmt: skip


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
    what.add_argument("--search-dir", default=None, metavar="DIR",
                      help="a folder of preset YAML files (<name>.yaml) added to the built-in presets; a name that is "
                      "also built in is refused (pass the file's path to --backbone instead)")  # fmt: skip
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
    what.add_argument("--reduction-factor", type=int_at_least("--reduction-factor", 2), default=None,
                      help="ASHA reduction factor, an integer >= 2 (default: the preset's)")
    what.add_argument("--trainable", default=None, metavar="MODULE:NAME",
                      help="the Ray Tune function trainable every trial calls, imported before Ray starts (its "
                      f"keyword arguments: docs/real_backbone.md) (default: {DEFAULT_TRAINABLE})")
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
                       help="run a start's checks (the same errors; it connects to no server and imports no "
                       "trainable; missing data or weights are a note), print the ASHA rungs, trials and epochs per "
                       "rung, expected and worst-case epochs and GPU-hours, then exit: starts no Ray, reads no "
                       "data, writes nothing")  # fmt: skip
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
    out.add_argument("--mlflow", metavar="TRACKING_URI", default=None,
                     help="also log every trial to MLflow (Ray Tune's MLflowLoggerCallback): a local path, "
                     "file:///abs/path or http(s)://host:port of a tracking server; one MLflow experiment named "
                     "after the run, one MLflow run per trial (docs/tracking.md)")  # fmt: skip
    out.add_argument("--wandb", metavar="PROJECT", default=None,
                     help="also log every trial to this Weights & Biases project (Ray Tune's WandbLoggerCallback; "
                     "WANDB_MODE=offline for air-gapped clusters), grouped by the run (docs/tracking.md)")  # fmt: skip
    out.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Ray Tune progress verbosity")
    parser.epilog = (
        "A run's identity (preset, data root, weights, trainable, number of trials, budget, seed, scheduler, sampler, "
        "resources per trial, confirm stage, baseline, warm-start settings) is written once to "
        "<storage>/<name>/run_spec.yaml; --resume reads it and refuses "
        "flags that differ from it. Flags that may change on --resume: " + ", ".join(RESUME_MAY_CHANGE) + ". "
        "Exit status: 0 when some trial completed or was pruned, 1 when none did (one line per distinct "
        "error), 2 for a user error (one 'error:' line)."
    )
    return parser
