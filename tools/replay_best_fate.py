"""Where a replayed search loses the table's best setting: never proposed, stopped by ASHA, or trained.

    python tools/replay_best_fate.py [TABLE ...] [--search-space PRESET] [--grace-epochs G]
        [--n-startup-trials N] [--seeds 40] [--budget-epochs 640]

For each policy (ASHA + TPE, ASHA + random) and search seed 0..seeds-1, replays the search with the
replay's own :func:`rspose_tune.replay.replay` (W = 4) and counts, for the table's best setting:
``never`` (no trial was answered by it), ``stopped`` (tried, but ASHA stopped every such trial before
the full budget), ``full, not top 3`` (reached the full budget, but 3 other settings had a better
final metric on the search's training seed, so the confirm stage of ``--confirm-top 3`` would not
take it) and ``candidate`` (among those 3). Tables default to the shipped demo table (docs/replay.md).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from rspose_tune.replay import DEMO_TABLE, POLICIES, ReplaySettings, load_table, replay
    from rspose_tune.replay._table import _space_of_preset
    from rspose_tune.spaces import load_preset

    parser = argparse.ArgumentParser(prog="python tools/replay_best_fate.py", description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", default=[str(DEMO_TABLE)])
    parser.add_argument("--search-space", default=None, help="preset (name or YAML) the searcher proposes from")
    parser.add_argument("--grace-epochs", type=int, default=2)
    parser.add_argument("--n-startup-trials", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--budget-epochs", type=int, default=640)
    args = parser.parse_args(argv)
    table = load_table(args.tables)
    space = _space_of_preset(load_preset(args.search_space)) if args.search_space else None
    settings = ReplaySettings(budget_epochs=args.budget_epochs, grace_epochs=args.grace_epochs,
                              n_startup_trials=args.n_startup_trials, search_space=space)
    best = table.best_index
    print(f"best setting {best} ({table.value(best):.4f}) of {len(table.settings)}; {args.seeds} seeds")
    for name in ("asha-tpe", "asha-random"):
        fate = {"never": 0, "stopped": 0, "full, not top 3": 0, "candidate": 0}
        for seed in range(args.seeds):
            trace = replay(table, POLICIES[name], seed=seed, settings=settings)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
