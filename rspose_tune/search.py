"""``python -m rspose_tune.search``: Optuna TPE + ASHA over the six RSPose loss settings on Ray.

Wiring only: the preset (:mod:`rspose_tune.spaces`), the trainable
(:mod:`trainables.mmpose_trainable`), the searcher (:mod:`rspose_tune.searcher`), the Parquet
callback (:mod:`rspose_tune.results`), then the report (:mod:`rspose_tune.report`) and the export
(:mod:`rspose_tune.export`) of the best setting.

With no arguments it runs the CPU ``demo`` preset on a local Ray and finishes in a few minutes.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from rspose_tune import DEFAULT_STORAGE
from rspose_tune.spaces import PARAM_NAMES, MissingDataError, SearchSpaceError, list_presets, load_preset

__all__ = ["SearchError", "build_parser", "main"]

DEFAULT_TRIALS = {"demo": 8}
FALLBACK_TRIALS = 32


class SearchError(RuntimeError):
    """A problem with the user's flags or environment, reported as one line, exit code 2."""


def _positive_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= 1, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= 1, got {value}")
        return value

    return parse


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rspose_tune.search",
        description=(
            "Tune the six RSPose loss hyperparameters of an MMPose model: Optuna TPE proposes, "
            "ASHA stops weak trials early, Ray runs trials in parallel (locally or on a cluster). "
            "Results go to <storage>/<name>/trials/ (Parquet); the report and the exported best "
            "config are printed at the end."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    what = parser.add_argument_group("what to search")
    what.add_argument("--backbone", "--preset", dest="backbone", default="demo",
                      help=f"search-space preset (a name from search_spaces/ or a YAML path); one of {list_presets()}")
    what.add_argument("--search-dir", default=None, help="extra folder of preset YAML files")
    what.add_argument("--num-trials", type=_positive_int("--num-trials"), default=None,
                      help=f"trials to run (default: {DEFAULT_TRIALS} by preset, else {FALLBACK_TRIALS})")
    what.add_argument("--scheduler", choices=("asha", "fifo"), default="asha",
                      help="asha: stop weak trials early; fifo: every trial runs the full budget (baseline)")
    what.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                      help="tpe: Optuna TPE after its random start-up trials; random: random search (baseline)")
    what.add_argument("--seed", type=int, default=0, help="seed of the searcher and of every trial's training")
    what.add_argument("--max-epochs", type=_positive_int("--max-epochs"), default=None,
                      help="full budget per trial (default: the preset's)")
    what.add_argument("--grace-epochs", type=_positive_int("--grace-epochs"), default=None,
                      help="ASHA grace period in epochs (default: the preset's)")
    what.add_argument("--reduction-factor", type=_positive_int("--reduction-factor"), default=None,
                      help="ASHA reduction factor, >= 2 (default: the preset's)")
    what.add_argument("--data-root", default=None, help="dataset root (overrides the preset and RSPOSE_TUNE_DATA_ROOT)")
    what.add_argument("--weights", default=None,
                      help="pretrained backbone checkpoint path, or 'none' (overrides the preset and RSPOSE_TUNE_WEIGHTS)")
    where = parser.add_argument_group("where it runs")
    where.add_argument("--address", default=None,
                       help="Ray cluster to join ('auto' or host:port); default: RAY_ADDRESS, else start a local Ray")
    where.add_argument("--max-concurrent", type=_positive_int("--max-concurrent"), default=None,
                       help="trials running at once (default: as many as resources allow, at most 8)")
    where.add_argument("--gpus-per-trial", type=_non_negative_float("--gpus-per-trial"), default=None,
                       help="GPUs per trial, fractions allowed (default: the preset's)")
    where.add_argument("--cpus-per-trial", type=_non_negative_float("--cpus-per-trial"), default=None,
                       help="CPUs per trial (default: the preset's)")
    where.add_argument("--num-cpus", type=_positive_int("--num-cpus"), default=None,
                       help="CPUs of a local Ray (default: all); ignored when joining a cluster")
    where.add_argument("--storage", default=DEFAULT_STORAGE,
                       help="results root: a local dir, a shared filesystem path or a URI such as s3://bucket/path")
    where.add_argument("--name", default=None, help="run name (default: <backbone>-search)")
    where.add_argument("--resume", action="store_true",
                       help="continue the run <storage>/<name> (its searcher keeps its history)")
    dash = parser.add_argument_group("dashboard (local Ray only)")
    dash.add_argument("--dashboard-host", default="127.0.0.1",
                      help="interface the Ray dashboard binds to; anything but loopback exposes Ray's job API")
    dash.add_argument("--dashboard-port", type=_positive_int("--dashboard-port"), default=8265)
    dash.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    out = parser.add_argument_group("output")
    out.add_argument("--no-report", action="store_true", help="skip the report and the export at the end")
    out.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Ray Tune progress verbosity")
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


def _is_uri(path: str) -> bool:
    return "://" in path


def _check_storage(storage: str) -> str:
    if _is_uri(storage):
        return storage
    path = Path(storage).expanduser().absolute()
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


def plan(args: argparse.Namespace) -> Plan:
    """Validate flags, the preset and its files; touch nothing but the storage folder."""
    preset = load_preset(args.backbone, search_dir=args.search_dir, data_root=args.data_root, weights=args.weights)
    budget = preset.budget
    max_epochs = args.max_epochs or budget.max_epochs
    grace = args.grace_epochs or min(budget.grace_epochs, max_epochs)
    rf = args.reduction_factor or budget.reduction_factor
    if rf < 2:
        raise SearchError(f"--reduction-factor must be >= 2, got {rf}")
    if grace > max_epochs:
        raise SearchError(f"--grace-epochs ({grace}) must not exceed --max-epochs ({max_epochs})")
    gpus = preset.resources.gpus if args.gpus_per_trial is None else args.gpus_per_trial
    cpus = preset.resources.cpus if args.cpus_per_trial is None else args.cpus_per_trial
    if gpus > 1 and not float(gpus).is_integer():
        raise SearchError(f"--gpus-per-trial above 1 must be a whole number, got {gpus}")
    name = args.name or f"{preset.name}-search"
    if "/" in name or name in {"", ".", ".."}:
        raise SearchError(f"--name must be a plain folder name, got {name!r}")
    storage = _check_storage(args.storage)
    run_dir = f"{storage.rstrip('/')}/{name}"
    if not _is_uri(run_dir):
        exists = Path(run_dir, "tuner.pkl").exists()
        if args.resume and not exists:
            raise SearchError(f"--resume: no run to resume at {run_dir!r} (no tuner.pkl); drop --resume to start it")
        if not args.resume and exists:
            raise SearchError(
                f"run {run_dir!r} already exists: pass --resume to continue it, or choose another --name"
            )
    if getattr(preset.data, "generated", None) == "demo":
        from rspose_tune.demo_data import generate_demo_dataset, is_complete

        if not is_complete(preset.data.root):  # made once, here, so trials never race to write it
            generate_demo_dataset(preset.data.root)
    preset.validate_paths()  # missing data or weights: fail before any trial starts
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    num_trials = args.num_trials or DEFAULT_TRIALS.get(preset.name, FALLBACK_TRIALS)
    return Plan(preset, name, storage, run_dir, num_trials, max_epochs, grace, rf, gpus, cpus, address)


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
    """Join the cluster at ``p.address``, or start a local Ray with a loopback-only dashboard."""
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


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def run_search(p: Plan, args: argparse.Namespace, extra_callbacks=()):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from rspose_tune.results import ParquetResultsCallback
    from rspose_tune.searcher import JOURNAL_FILE_NAME, PruningAwareOptunaSearch
    from trainables.mmpose_trainable import train_rspose

    # Keeping only the last checkpoints forces an experiment snapshot per report; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    preset = p.preset
    # A trial holding N > 1 GPUs trains data-parallel on all of them (one process per GPU).
    world_size = int(p.gpus) if p.gpus > 1 else 1
    trainable = tune.with_parameters(
        train_rspose, preset=preset, seed=args.seed, max_epochs=p.max_epochs, world_size=world_size
    )
    resources = {"cpu": p.cpus, "gpu": p.gpus}
    trainable = tune.with_resources(trainable, resources)
    if p.address is None:  # local Ray: ray.init has made the folder reachable
        journal = Path(p.run_dir) / JOURNAL_FILE_NAME
        journal.parent.mkdir(parents=True, exist_ok=True)
    else:
        journal = Path(p.run_dir) / JOURNAL_FILE_NAME if not _is_uri(p.run_dir) else None
    searcher = PruningAwareOptunaSearch(
        preset.params,
        max_epochs=p.max_epochs,
        metric="metric",
        mode=preset.mode,
        known_good=preset.known_good,
        journal_path=journal,
        seed=args.seed,
        # TPE samples at random until it has n_startup_trials finished trials.
        n_startup_trials=p.num_trials if args.sampler == "random" else min(10, max(2, p.num_trials // 3)),
    )
    max_concurrent = args.max_concurrent or 8
    search_alg = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    if args.scheduler == "asha":
        scheduler = ASHAScheduler(
            metric="metric",
            mode=preset.mode,
            time_attr="epoch",
            max_t=p.max_epochs,
            grace_period=p.grace,
            reduction_factor=p.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    callback = ParquetResultsCallback(
        backbone=preset.name,
        max_epochs=p.max_epochs,
        run=p.name,
        search_space=preset,
        extra_metadata={
            "budget": {"max_epochs": p.max_epochs, "grace_epochs": p.grace, "reduction_factor": p.reduction_factor},
            "resources": resources,
            "seed": args.seed,
            "metric_name": preset.metric,
            "mode": preset.mode,
        },
    )
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
        failure_config=tune.FailureConfig(max_failures=2),
        # Two, not one: a driver killed between a checkpoint's rotation and the next experiment
        # snapshot would otherwise resume from a checkpoint that was already deleted.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=p.num_trials,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
    if args.resume:
        tuner = tune.Tuner.restore(p.run_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    return tuner.fit()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        p = plan(args)
    except (SearchSpaceError, MissingDataError, SearchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table shows trial params
    print(
        f"rspose_tune search: preset {p.preset.name!r}, {p.num_trials} trials, {p.max_epochs} epochs max, "
        f"ASHA grace {p.grace} / rf {p.reduction_factor}, {p.gpus:g} GPU + {p.cpus:g} CPU per trial; "
        f"results in {p.run_dir}"
    )
    try:
        context = start_ray(p, args)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_dashboard(context)
    try:
        grid = run_search(p, args)
    finally:
        import ray

        if p.address is None:
            ray.shutdown()
    errors = [r for r in grid if r.error is not None]
    print(f"search finished: {len(grid)} trials, {len(errors)} errored; results in {p.run_dir}/trials/")
    if args.no_report:
        return 0
    from rspose_tune import export, report

    status = report.main([p.storage, "--run", p.name])
    if status != 0:
        return status
    weights = ["--weights", "none"] if p.preset.weights is None else ["--weights", str(p.preset.weights)]
    return export.main([p.storage, "--run", p.name, "--backbone", p.preset.name, *weights])


if __name__ == "__main__":
    sys.exit(main())
