"""``python -m rspose_tune.bench trainable``: the trainable's overhead over a plain Runner.

Runs the same demo training (same config, seed and epochs) two ways, interleaved, ``--repeats``
times each, each in a fresh process:

- plain: ``Runner.from_cfg(cfg).train()`` on the config the trainable would build, timed from
  after the imports of the trainable's module (which Ray does before its clock starts);
- trainable: one Ray Tune trial of the search's default trainable
  (:data:`rspose_tune.runspec.DEFAULT_TRAINABLE`, resolved as the search resolves ``--trainable``;
  reports and a checkpoint after every epoch), timed as Ray's ``time_total_s`` of the trial.

Both include config building, data and model set-up. Ray's own start-up and the trial actor's
creation are excluded here (``python -m rspose_tune.bench search`` measures those). Both use one
thread: Ray sets ``OMP_NUM_THREADS`` to a trial's CPU count (1 here), so the plain run gets
``OMP_NUM_THREADS=1`` too.
Prints each time, the medians and the ratio trainable / plain (target <= 1.03).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

PARAMS = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)

PLAIN = textwrap.dedent(
    """
    import json, sys, time
    from mmengine.runner import Runner
    from rspose_tune.spaces import load_preset
    from rspose_tune.training import prepare_trial_config
    preset = load_preset("demo", data_root=sys.argv[1])
    t0 = time.perf_counter()  # as Ray's time_total_s: after the trainable's module is imported
    cfg = prepare_trial_config(preset, json.loads(sys.argv[2]), sys.argv[3], seed=0, max_epochs=int(sys.argv[4]))
    Runner.from_cfg(cfg).train()
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    """
)

TRAINABLE = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray import tune
    from rspose_tune.spaces import load_preset
    from rspose_tune.runspec import DEFAULT_TRAINABLE, resolve_trainable
    train_rspose = resolve_trainable(DEFAULT_TRAINABLE)
    preset = load_preset("demo", data_root=sys.argv[1])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    trainable = tune.with_resources(tune.with_parameters(train_rspose, preset=preset, seed=0, max_epochs=int(sys.argv[4])), {"cpu": 1})
    grid = tune.Tuner(trainable, param_space=json.loads(sys.argv[2]),
                      run_config=tune.RunConfig(storage_path=sys.argv[3], name="bench", verbose=0)).fit()
    result = grid[0]
    assert result.error is None, result.error
    print(json.dumps({"seconds": result.metrics["time_total_s"]}))
    """
)


def _run(script: str, data: str, out: str, epochs: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, data, json.dumps(PARAMS), out, str(epochs)],
        capture_output=True, text=True, check=False, env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rspose_tune.bench trainable", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", default=None, help="demo data folder (default: generated in a temp dir)")
    args = parser.parse_args(argv)
    from rspose_tune.demo_data import generate_demo_dataset

    with tempfile.TemporaryDirectory(prefix="rspose_bench_") as tmp:
        data = args.data_root or str(generate_demo_dataset(f"{tmp}/data"))
        plain, trainable = [], []
        for i in range(args.repeats):
            plain.append(_run(PLAIN, data, f"{tmp}/plain{i}", args.epochs))
            trainable.append(_run(TRAINABLE, data, f"{tmp}/tune{i}", args.epochs))
            print(f"repeat {i + 1}: plain Runner {plain[-1]:.1f} s, trainable {trainable[-1]:.1f} s", flush=True)
    mp, mt = statistics.median(plain), statistics.median(trainable)
    print(f"\n{args.epochs} demo epochs, median of {args.repeats}: plain Runner {mp:.1f} s | trainable {mt:.1f} s"
          f" | ratio trainable/plain = {mt / mp:.3f} (target <= 1.03)")
    print(f"fixed cost per validation report (checkpoint save + tune.report persist): "
          f"{(mt - mp) / args.epochs:.2f} s; demo epochs take {mp / args.epochs:.1f} s, real-backbone epochs minutes")
    return 0
