"""``python -m rspose_tune.bench ranks``: how long a 2-rank trial takes to start, by route.

The two routes of issue 8 for a data-parallel Tune trial, timed alike in the same Ray:

1. **bundles** (what rspose_tune uses, ``trainables._ray_ranks``): the trial holds a placement
   group of N bundles; it is rank 0 itself and starts ranks 1..N-1 as Ray actors in the other
   bundles; the ranks meet at a TCPStore rank 0 opened on an ephemeral port.
2. **train-v2**: the trial launches a ``ray.train.torch.TorchTrainer`` (Ray Train V2, the default in
   Ray 2.60) with ``ScalingConfig(num_workers=N)``; results come back through
   ``ray.tune.integration.ray_train.TuneReportCallback`` (Ray's "Hyperparameter Tuning with Ray
   Tune" pattern for Train V2).

Each trial joins a gloo process group of N ranks, all-reduces one tensor, and reports once; the
trial's start overhead is the driver-observed time from trial start to that report. The work
itself is the same trivial loop on both sides, so the difference is the route's own machinery
(actors, controller, worker group, process group). Trials run one after another, alternating
routes, on the same local Ray; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def _bundles_trial(config) -> None:
    import ray
    import torch
    import torch.distributed as dist
    from ray import tune
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from rspose_tune.training import open_rendezvous, process_group

    bundles = tune.get_context().get_trial_resources().bundles
    pg = get_current_placement_group()
    rdzv, store = open_rendezvous(ray.util.get_node_ip_address(), len(bundles), "gloo")

    @ray.remote
    class _Rank:
        def run(self, rdzv, rank):
            import torch
            import torch.distributed as dist

            from rspose_tune.training import process_group

            with process_group(rdzv, rank):
                t = torch.ones(1)
                dist.all_reduce(t)
            return float(t)

    actors = [
        _Rank.options(num_cpus=bundles[r]["CPU"], scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=r)).remote()
        for r in range(1, len(bundles))
    ]
    refs = [a.run.remote(rdzv, r) for r, a in enumerate(actors, start=1)]
    with process_group(rdzv, 0, store=store):
        t = torch.ones(1)
        dist.all_reduce(t)
    ray.get(refs)
    tune.report({"sum": float(t)})


def _train_v2_trial(config) -> None:
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    def loop(_):
        import ray.train
        import torch
        import torch.distributed as dist

        t = torch.ones(1)
        dist.all_reduce(t)
        ray.train.report({"sum": float(t)})

    trial_id = tune.get_context().get_trial_id()
    TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=config["workers"], use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"v2-{trial_id}", storage_path=config["storage"], callbacks=[TuneReportCallback()]),
    ).fit()


class _Clock:
    def __init__(self):
        from ray.tune import Callback

        clock = self

        class C(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                clock.start[trial.trial_id] = time.monotonic()

            def on_trial_result(self, iteration, trials, trial, result, **info):
                clock.first.setdefault(trial.trial_id, time.monotonic())

        self.start: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.callback = C()

    def seconds(self) -> list[float]:
        return [self.first[t] - self.start[t] for t in self.start if t in self.first]


def _run(route: str, trials: int, workers: int, storage: str) -> list[float]:
    from ray import tune

    clock = _Clock()
    if route == "bundles":
        trainable = tune.with_resources(_bundles_trial, tune.PlacementGroupFactory([{"CPU": 1}] * workers))
    else:  # the Tune trial holds one CPU (Ray refuses an empty request); Train's workers their own
        trainable = tune.with_resources(_train_v2_trial, {"cpu": 1})
    tune.Tuner(
        trainable,
        param_space={"workers": workers, "storage": storage},
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=storage, name=f"bench-{route}", verbose=0,
                                  callbacks=[clock.callback]),
    ).fit()
    return clock.seconds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rspose_tune.bench ranks", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both routes")
    parser.add_argument("--trials", type=int, default=2, help="trials per route per round")
    parser.add_argument("--workers", type=int, default=2, help="ranks per trial")
    args = parser.parse_args(argv)
    import ray

    # One CPU more than the ranks need: the Train V2 route's Tune trial holds one of its own.
    ray.init(address="local", num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=False)
    times: dict[str, list[float]] = {"bundles": [], "train-v2": []}
    try:
        with tempfile.TemporaryDirectory(prefix="rspose_bench_ranks_") as tmp:
            for round_ in range(args.rounds):
                for route in ("bundles", "train-v2") if round_ % 2 == 0 else ("train-v2", "bundles"):
                    times[route] += _run(route, args.trials, args.workers, f"{tmp}/{route}-{round_}")
    finally:
        ray.shutdown()
    print(f"\n{args.workers}-rank trial, trial start -> first report (gloo, trivial loop), "
          f"{args.rounds} alternating rounds x {args.trials} trials")
    for route, values in times.items():
        print(f"{route:9s} median {statistics.median(values):6.2f} s  (min {min(values):.2f}, "
              f"max {max(values):.2f}, n={len(values)})")
    ratio = statistics.median(times["train-v2"]) / statistics.median(times["bundles"])
    print(f"train-v2 / bundles: {ratio:.2f}x")
    return 0
