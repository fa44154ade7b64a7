"""``python -m rspose_tune.bench search``: trial start overhead, and ASHA vs full-budget random search.

Runs the demo search three times on a local Ray, with the same number of trials and seed:

1. the product: Optuna TPE + ASHA (``--scheduler asha --sampler tpe``);
2. the baseline: random search, every trial to the full budget (``--scheduler fifo --sampler random``);
3. the product again, but with a fresh trial process per trial (Ray's default ``reuse_actors=False``,
   what the search did before issue 8): the baseline of the start-overhead comparison.

Prints, side by side: epochs trained, best full-budget metric, wall time. From run 1 it also
prints the per-trial start overhead: for each trial, the driver-observed duration (trial start
to end, Ray callback) minus the training time the trial itself reports (``wall_s``: from the
Runner's first hook to its last validation), as a fraction of the driver-observed duration.
The overhead covers the Ray actor, imports, config, dataset and model set-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from ray.tune import Callback


class TrialClock(Callback):
    """Driver-side start/end time of each trial."""

    def __init__(self):
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start.setdefault(trial.trial_id, time.monotonic())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.end[trial.trial_id] = time.monotonic()


def _search(storage: str, name: str, extra: list[str], trials: int, data: str, reuse_actors: bool = True):
    from rspose_tune import search
    from rspose_tune.results import read_results

    args = search.parse_options([
        "--storage", storage, "--name", name, "--num-trials", str(trials), "--data-root", data,
        "--no-dashboard", "--verbose", "0", "--no-report", *extra,
    ])
    plan = search.plan(args)
    clock = TrialClock()
    search.start_ray(plan, args)
    t0 = time.monotonic()
    try:
        search.run_search(plan, args, extra_callbacks=[clock], reuse_actors=reuse_actors)
    finally:
        import ray

        ray.shutdown()
    wall = time.monotonic() - t0
    return read_results(f"{storage}/{name}/trials"), clock, wall, plan


def _overheads(frame, clock: TrialClock) -> list[float]:
    """Per trial: (driver-observed duration - training time the trial reports) / duration."""
    last = frame.sort_values("epoch").groupby("trial_id").last()
    fractions = []
    for trial_id, row in last.iterrows():
        if trial_id in clock.start and trial_id in clock.end:
            observed = clock.end[trial_id] - clock.start[trial_id]
            fractions.append((observed - row["wall_s"]) / observed)
    return fractions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rspose_tune.bench search", description=__doc__.split("\n")[0])
    parser.add_argument("--num-trials", type=int, default=8)
    parser.add_argument("--storage", default=None, help="where the two runs go (default: a temp dir)")
    args = parser.parse_args(argv)
    from rspose_tune.demo_data import generate_demo_dataset

    with tempfile.TemporaryDirectory(prefix="rspose_bench_search_") as tmp:
        storage = args.storage or tmp
        data = str(generate_demo_dataset(f"{tmp}/data"))
        asha, clock, asha_wall, plan = _search(storage, "asha-tpe", [], args.num_trials, data)
        full, _, full_wall, _ = _search(storage, "fifo-random", ["--scheduler", "fifo", "--sampler", "random"],
                                        args.num_trials, data)
        # The same ASHA + TPE search with a fresh trial process per trial (Ray's default).
        fresh, fresh_clock, fresh_wall, _ = _search(storage, "asha-tpe-fresh", [], args.num_trials, data,
                                                    reuse_actors=False)
    rows = []
    for label, frame, wall in (("TPE + ASHA", asha, asha_wall), ("random, full budget", full, full_wall)):
        done = frame[frame["status"] == "completed"]
        best = done.groupby("trial_id")["metric"].last().max() if len(done) else float("nan")
        rows.append((label, len(frame), int(frame["trial_id"].nunique()), best, wall))
    print(f"\ndemo, {args.num_trials} trials, max {plan.max_epochs} epochs, ASHA grace {plan.grace} rf {plan.reduction_factor}")
    print(f"{'search':22s} {'epochs':>7s} {'trials':>7s} {'best coco/AP':>13s} {'wall s':>8s}")
    for label, epochs, trials, best, wall in rows:
        print(f"{label:22s} {epochs:7d} {trials:7d} {best:13.3f} {wall:8.1f}")
    print(f"epochs ASHA / full: {rows[0][1] / rows[1][1]:.2f}; wall ASHA / full: {rows[0][4] / rows[1][4]:.2f}")
    print(f"ASHA + TPE with a fresh process per trial: {fresh_wall:.1f} s wall "
          f"(reused trial processes: {asha_wall:.1f} s)")
    for label, frame, trial_clock in (("fresh process per trial (before)", fresh, fresh_clock),
                                      ("reused trial processes (after)", asha, clock)):
        fractions = _overheads(frame, trial_clock)
        if fractions:
            print(f"per-trial start overhead (actor + imports + config + data + model) as a fraction of the "
                  f"trial, {label}: median {statistics.median(fractions):.2f} over {len(fractions)} trials "
                  f"(min {min(fractions):.2f}, max {max(fractions):.2f})")
    return 0
