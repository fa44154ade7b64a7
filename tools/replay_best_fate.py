"""Where a replayed search loses the table's best setting: never proposed, stopped by ASHA, or trained.

    python tools/replay_best_fate.py [TABLE ...] [--search-space PRESET] [--grace-epochs G]
        [--n-startup-trials N] [--seeds 40] [--budget-epochs 640] [--tpe-option KEY=VALUE]

For each policy (ASHA + TPE, ASHA + random) and search seed 0..seeds-1, replays the search with the
replay's own :func:`rspose_tune.replay.replay` (W = 4) and counts, for the table's best setting:
``never`` (no trial was answered by it), ``stopped`` (tried, but ASHA stopped every such trial before
the full budget), ``full, not top 3`` (reached the full budget, but 3 other settings had a better
final metric on the search's training seed, so the confirm stage of ``--confirm-top 3`` would not
take it) and ``candidate`` (among those 3). Tables default to the shipped demo table (docs/replay.md).
``--region-of I``: also how often the *region* of the first table's setting ``I`` (it and every setting
of the later tables nearest to it, e.g. ``make-table --around``'s box) was trained to the full budget,
how many of its settings a search tried, and the best value it trained there.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from rspose_tune.replay import DEMO_TABLE, POLICIES, ReplaySettings, load_table, replay
    from rspose_tune.replay._cli import _tpe_option  # the replay's own --tpe-option rule
    from rspose_tune.replay._table import _space_of_preset
    from rspose_tune.spaces import load_preset

    parser = argparse.ArgumentParser(prog="python tools/replay_best_fate.py", description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", default=[str(DEMO_TABLE)])
    parser.add_argument("--search-space", default=None, help="preset (name or YAML) the searcher proposes from")
    parser.add_argument("--grace-epochs", type=int, default=2)
    parser.add_argument("--n-startup-trials", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--budget-epochs", type=int, default=640)
    parser.add_argument("--region-of", type=int, default=None, metavar="I")
    parser.add_argument("--tpe-option", action="append", type=_tpe_option, default=[], metavar="KEY=VALUE",
                        help="a TPE option over the live search's, as the replay's --tpe-option "
                             "(e.g. random_fraction=0: the options before issue 26's fourth round)")
    args = parser.parse_args(argv)
    table = load_table(args.tables)
    region: set[int] = set()
    if args.region_of is not None:
        first = load_table(args.tables[:1])
        centre = table.nearest(first.settings[args.region_of]).index  # the same setting in the merged table
        later = [i for i, s in enumerate(table.settings) if first.nearest(s).index == args.region_of
                 and not first.nearest(s).exact]  # settings of the later tables nearest to it
        region = {centre, *later}
    space = _space_of_preset(load_preset(args.search_space)) if args.search_space else None
    settings = ReplaySettings(budget_epochs=args.budget_epochs, grace_epochs=args.grace_epochs,
                              n_startup_trials=args.n_startup_trials, search_space=space,
                              tpe_options=dict(args.tpe_option) or None)
    best = table.best_index
    print(f"best setting {best} ({table.value(best):.4f}) of {len(table.settings)}; {args.seeds} seeds")
    for name in ("asha-tpe", "asha-random"):
        fate = {"never": 0, "stopped": 0, "full, not top 3": 0, "candidate": 0}
        reached, tried, best_there = 0, [], []
        for seed in range(args.seeds):
            trace = replay(table, POLICIES[name], seed=seed, settings=settings)
            if region:
                full = {r.setting for r in trace.trials if r.setting in region and r.last_epoch >= table.max_epochs}
                reached += bool(full)
                tried.append(len({r.setting for r in trace.trials if r.setting in region}))
                best_there += [max(table.value(i) for i in full)] if full else []
            if not any(r.setting == best for r in trace.trials):
                fate["never"] += 1
                continue
            finals: dict[int, float] = {}
            for r in trace.trials:
                if r.last_epoch >= table.max_epochs:
                    curve = next(c for c in table.curves[r.setting] if c.trial_id == r.curve)
                    finals[r.setting] = max(finals.get(r.setting, float("-inf")), curve.metric[-1])
            if best not in finals:
                fate["stopped"] += 1
            else:
                rank = sorted(finals, key=lambda i: -finals[i]).index(best)
                fate["candidate" if rank < 3 else "full, not top 3"] += 1
        print(f"  {name:12s} " + ", ".join(f"{k} {v}" for k, v in fate.items()))
        if region:
            import statistics

            print(f"  {'':12s} region of setting {args.region_of} ({len(region)} settings): trained to the full budget "
                  f"in {reached}/{args.seeds}; settings of it tried, median {statistics.median(tried):g}; best value "
                  f"trained there, median {statistics.median(best_there) if best_there else float('nan'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
