"""Dispatch ``python -m rspose_tune.bench NAME [args]`` to ``rspose_tune.bench._NAME.main``."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "losses": "RSPose losses vs KeypointMSELoss vs a naive per-positive loop (fwd+bwd, memory)",
    "step": "one training step of a ViTPose-style model: RSPose head vs MSE head",
    "trainable": "the same epochs through the Ray Tune trainable vs a plain mmengine Runner",
    "search": "per-trial start overhead, and ASHA vs full-budget random search on the demo",
    "gpu": "the GPU check: loss and ViTPose-H step RSPose vs MSE, and a trial's rank path, without Ray",
    "ranks": "start of a 2-rank trial: placement-group rank actors vs a Ray Train V2 TorchTrainer",
    "calibration": "RSPose heads: stock vs calibrated decoding (AP, AR, Spearman), logit-offset robustness, step cost",
    "ablation": "the paper's Table 6 on CPU: stock vs Rank, Rank+Sort, RS+Inst at several positive supports (demo, demo-simcc, demo-rtmcc)",
    "tpe": "parallel TPE options (independent vs constant liar vs multivariate+group) on a synthetic surface",
    "soak": "a demo search on a real 127.0.0.1 Ray cluster + S3 server under node kills, an outage and a driver kill; every record checked",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in BENCHMARKS:
        lines = [f"  {name:10s} {text}" for name, text in BENCHMARKS.items()]
        msg = "usage: python -m rspose_tune.bench NAME [args]\n\nbenchmarks:\n" + "\n".join(lines)
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"error: benchmark must be one of {sorted(BENCHMARKS)}, got {argv[0]!r}\n", file=sys.stderr)
            print(msg, file=sys.stderr)
            return 2
        print(msg)
        return 0
    from rspose_tune.errors import RSPoseTuneError, cli_error

    module = importlib.import_module(f"rspose_tune.bench._{argv[0]}")
    try:
        return int(module.main(argv[1:]) or 0)
    except RSPoseTuneError as exc:  # a benchmark's bad flag or input: one line, exit 2
        return cli_error(exc)


if __name__ == "__main__":
    sys.exit(main())
