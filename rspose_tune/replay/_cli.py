"""``python -m rspose_tune.replay``: the command line (see :mod:`rspose_tune.replay`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Sequence

from rspose_tune._flags import int_at_least
from rspose_tune.errors import RSPoseTuneError, cli_error
from rspose_tune.replay._common import ReplayError, _check_writable, _Parser

__all__ = ["ReplayError", "build_parser", "main"]


def _float_above(flag: str, low: float, *, strict: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not (value > low if strict else value >= low) or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number {'>' if strict else '>='} {low:g}, got {text}")
        return value

    return parse


def _option(flag: str, name: str, convert=int):
    """An argparse ``type`` for ``flag``, which sets option ``name`` of ``ReplaySettings``: held to
    that option's rule (``_simulator.option_rule``) as the flag is read."""
    from rspose_tune.replay._simulator import option_rule

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = text
        rule = option_rule(name, value)
        if rule:
            raise argparse.ArgumentTypeError(f"{flag} must be {rule}, got {text if value is not text else repr(text)}")
        return value

    return parse


def _tpe_option(text: str) -> tuple[str, object]:
    from rspose_tune.searcher._rules import parse_tpe_option

    try:
        return parse_tpe_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--tpe-option {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    from rspose_tune.replay._simulator import DEFAULT_POLICIES, POLICIES, REPEAT_CURVES

    parser = _Parser(
        prog="python -m rspose_tune.replay",
        description=(
            "Replay search policies (the project's Optuna searcher and Ray's ASHA scheduler) on recorded full "
            "learning curves, on a simulated clock with W workers, over many search seeds; no Ray cluster, no "
            "training. `python -m rspose_tune.replay make-table --help`: record a table."
        ),
    )
    parser.add_argument(
        "tables", nargs="*", metavar="RUN_OR_TABLE",
        help="replay table .parquet files or run folders (<storage>/<name>, or its trials/); "
             "several are merged (same backbone and budget). Default: the shipped demo table",
    )
    parser.add_argument("--backbone", default=None,
                        help="preset (name or YAML) giving the search space, mode, ASHA budget and known-good "
                             "settings, instead of the table's metadata")
    parser.add_argument("--search-space", default=None, metavar="PRESET|TABLE",
                        help="the search space the searcher proposes from: a preset (name or YAML), or a table "
                             "(.parquet) whose recorded space to use, e.g. another scaling of pos_thr; proposals are "
                             "still matched to recorded settings in the table's own space (default: the table's "
                             "space)")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(DEFAULT_POLICIES),
                        help=f"policies to replay, of {list(POLICIES)} (default: {list(DEFAULT_POLICIES)})")
    parser.add_argument("--seeds", type=int_at_least("--seeds", 1), default=20,
                        help="search seeds per policy (default 20)")
    parser.add_argument("--first-seed", type=int_at_least("--first-seed", 0), default=0,
                        help="seeds are first-seed, first-seed+1, ... (default 0)")
    parser.add_argument("--budget-epochs", type=_option("--budget-epochs", "budget_epochs"), default=None,
                        help="epochs each replay may train in all (default: one full training per recorded "
                             "setting, the cost of training every setting of the table once)")
    parser.add_argument("--workers", "-W", type=_option("--workers", "workers"), default=4,
                        help="trials running at once (default 4)")
    parser.add_argument("--grace-epochs", type=_option("--grace-epochs", "grace_epochs"), default=None,
                        help="ASHA grace period (default: the table's / preset's budget)")
    parser.add_argument("--reduction-factor", type=_option("--reduction-factor", "reduction_factor", float), default=None,
                        help="ASHA reduction factor, > 1 (default: the table's / preset's budget)")
    parser.add_argument("--num-trials", type=int_at_least("--num-trials", 1), default=None,
                        help="trials of the live search the replay stands for: it sets TPE's start-up trials "
                             "as the search sets them (default: the table's number of settings)")
    parser.add_argument("--n-startup-trials", type=_option("--n-startup-trials", "n_startup_trials"), default=None,
                        help="TPE's random start-up trials (default: the search's rule for --num-trials, "
                             "rspose_tune.searcher.startup_trials)")
    parser.add_argument("--repeat-curves", choices=list(REPEAT_CURVES), default="same",
                        help="a proposal matched to a setting this replay already tried replays its curve on the "
                             "search's training seed again ('same', default) or, unless it is that setting itself, "
                             "its curve on the next recorded training seed ('other-seeds': the fresh training noise a "
                             "nearby setting would see)")
    parser.add_argument("--tpe-option", action="append", type=_tpe_option, default=[], metavar="KEY=VALUE",
                        help="a TPESampler option over the search's own (rspose_tune.searcher.TPE_OPTIONS), e.g. "
                             "prior_weight=2 or consider_endpoints=true; repeat for more")
    parser.add_argument("--known-good", action="store_true",
                        help="ask the known-good settings first, as the live search does (default: no, so "
                             "policies are compared from scratch)")
    parser.add_argument("--target", type=_float_above("--target", 0, strict=False), default=0.01,
                        help="regret to reach, in metric units (default 0.01)")
    parser.add_argument("--confirm-top", type=int_at_least("--confirm-top", 0), default=0, metavar="K",
                        help="after each replayed search, replay the confirm stage: the K best distinct full-budget "
                             "settings on --confirm-seeds further recorded seeds, as the live search's --confirm-top "
                             "(default 0: none)")
    parser.add_argument("--confirm-seeds", type=int_at_least("--confirm-seeds", 2), default=2, metavar="N",
                        help="seeds of the replayed confirm stage, >= 2 (default 2)")
    parser.add_argument("--confirm-race", type=int_at_least("--confirm-race", 2), default=0, metavar="R",
                        help="racing in the replayed confirm stage: from the R-th seed on, drop a candidate as soon "
                             "as its paired t-interval against the leader lies wholly on the worse side "
                             "(2 <= R < --confirm-seeds; default: no racing, as the live stage)")
    parser.add_argument("--confirm-from", choices=("full", "rung"), default="full",
                        help="which search trials the replayed confirm stage takes its candidates from: 'full', the "
                             "best at the full budget (as the live stage); 'rung', the best at the highest ASHA rung "
                             "below it, among every trial that reached that rung (default: full)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write every figure printed (and the settings of the replay) to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-table"]:
        from rspose_tune.replay._make_table import main as make_table

        return make_table(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.confirm_race and not args.confirm_top:
        parser.error("--confirm-race needs --confirm-top (racing happens in the confirm stage)")
    if args.confirm_race and not args.confirm_race < args.confirm_seeds:
        parser.error(f"--confirm-race is {args.confirm_race}, but must be < --confirm-seeds ({args.confirm_seeds}): "
                     "racing drops candidates before their last seed")
    try:
        return _replay(args, argv)
    except RSPoseTuneError as exc:  # every user error: one line, exit 2
        return cli_error(exc)


def _replay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import optuna

    from rspose_tune._asha import asha_rungs
    from rspose_tune.replay._make_table import DEMO_TABLE
    from rspose_tune.replay._simulator import POLICIES, ReplaySettings, replay
    from rspose_tune.replay._confirm import confirm
    from rspose_tune.replay._summary import (format_confirm, format_paired, format_report, paired_comparison,
                                             summarize, summarize_confirm)
    from rspose_tune.replay._table import TableError, _space_of_preset, load_table
    from rspose_tune.searcher import startup_trials
    from rspose_tune.spaces import load_preset

    t0 = time.perf_counter()
    if args.json:
        _check_writable(args.json, "--json", folder=False)  # before the replay, not after it
    preset = None if args.backbone is None else load_preset(args.backbone)
    table = load_table(args.tables or [DEMO_TABLE], preset=preset)
    search_space = None
    if args.search_space is not None and args.search_space.endswith(".parquet"):
        try:
            search_space = load_table([args.search_space]).space  # its recorded space (file metadata)
        except TableError as exc:
            raise ReplayError(f"--search-space: {exc}") from None
    elif args.search_space is not None:
        search_space = _space_of_preset(load_preset(args.search_space))
    grace, grace_from = args.grace_epochs, "--grace-epochs"
    if grace is None:
        grace, grace_from = table.budget.get("grace_epochs", 1), f"{table.source}: the recorded budget's grace_epochs"
    factor, factor_from = args.reduction_factor, "--reduction-factor"
    if factor is None:
        factor, factor_from = table.budget.get("reduction_factor", 3), f"{table.source}: the recorded budget's reduction_factor"
    budget = args.budget_epochs if args.budget_epochs is not None else len(table.settings) * table.max_epochs
    startup = args.n_startup_trials
    if startup is None and args.num_trials is not None:  # what the live search runs (its run spec records it)
        startup = startup_trials(args.num_trials)
    settings = ReplaySettings(budget_epochs=budget, workers=args.workers, grace_epochs=grace,
                              reduction_factor=factor, n_startup_trials=startup,
                              known_good=args.known_good, search_space=search_space,
                              tpe_options=dict(args.tpe_option) or None,
                              repeat_curves=args.repeat_curves).for_table(table)
    settings.check(table.max_epochs, sources={"grace_epochs": grace_from, "reduction_factor": factor_from})
    rank_epochs = None  # the confirm candidates' level: the full budget
    if args.confirm_from == "rung":
        rungs = asha_rungs(table.max_epochs, settings.grace_epochs, settings.reduction_factor)
        rank_epochs = rungs[-1] if rungs else None  # no rung below the full budget: the full budget
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "trial finished" line per simulated trial otherwise
    logging.getLogger("ray.tune.schedulers").setLevel(logging.ERROR)
    try:
        summaries, confirmed = [], []
        for name in args.policies:
            traces = [replay(table, POLICIES[name], seed, settings) for seed in seeds]
            summaries.append(summarize(table, traces, budget, args.target))
            if args.confirm_top:
                outcomes = [confirm(table, t, args.confirm_top, args.confirm_seeds, args.confirm_race,
                                    rank_epochs=rank_epochs) for t in traces]
                confirmed.append(summarize_confirm(table, traces, outcomes))
    finally:
        optuna.logging.set_verbosity(previous)
    header = (
        f"rspose_tune replay: {len(args.policies)} policies x {len(seeds)} search seeds ({seeds[0]}..{seeds[-1]}), "
        f"W={settings.workers} workers, budget {budget} epochs, ASHA grace {settings.grace_epochs} / reduction "
        f"factor {settings.reduction_factor:g}, TPE start-up {settings.n_startup_trials} trials, known-good "
        f"{'first' if settings.known_good else 'not used'}"
        + (f", search space of {args.search_space} (matched in the table's)" if args.search_space else "")
        + (", TPE options " + ", ".join(f"{k}={v}" for k, v in args.tpe_option) if args.tpe_option else "")
        + (f", repeats answered by {args.repeat_curves}" if args.repeat_curves != "same" else "")
    )
    print(format_report(table, summaries, header=header, target=args.target))
    paired = [paired_comparison(a, b, seeds) for i, a in enumerate(confirmed) for b in confirmed[i + 1:]]
    if confirmed:
        print(format_confirm(table, confirmed, top=args.confirm_top, seeds=args.confirm_seeds, race=args.confirm_race,
                             level=rank_epochs))
    if paired:
        print(format_paired(paired))
    wall = time.perf_counter() - t0
    print(f"\n(replayed in {wall:.1f} s)")
    if args.json:
        _write_json(args.json, {
            "command": "python -m rspose_tune.replay " + " ".join(argv), "header": header,
            "table": {"source": table.source, "settings": len(table.settings), "curves": table.n_curves,
                      "max_epochs": table.max_epochs, "metric": table.metric_name, "mode": table.mode,
                      "best_value": table.best_value, "best_setting": table.settings[table.best_index]},
            "settings": dataclasses.asdict(settings), "search_seeds": seeds, "target": args.target,
            "policies": [dataclasses.asdict(s) for s in summaries],
            "confirm": ({"top": args.confirm_top, "seeds": args.confirm_seeds, "race": args.confirm_race,
                         "from": args.confirm_from, "rank_epochs": rank_epochs or table.max_epochs,
                         "policies": [dataclasses.asdict(c) for c in confirmed],
                         "paired": [dataclasses.asdict(c) for c in paired]} if confirmed else None),
            "replayed_s": wall,
        })
    return 0


def _finite(value):
    """JSON has no inf/nan: they become null (a seed that found nothing; a statistic with no data)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: str, payload: dict) -> None:
    """Write ``payload`` atomically (a temporary file renamed into place)."""
    import json
    import os
    import tempfile
    from pathlib import Path

    out = Path(path).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(payload), f, indent=1, allow_nan=False)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"wrote {out}")
