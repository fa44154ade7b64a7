"""Could a fitted surrogate replace the replay's table? Its leave-one-setting-out prediction error.

    python tools/surrogate_loo.py [TABLE ...]

Issue 26 allows a surrogate (a model of the metric over the search space, answering any proposal)
in place of the nearest recorded setting, if its held-out prediction error is reported, as surrogate
benchmarks such as YAHPO Gym report theirs. This fits scipy's ``RBFInterpolator`` (degree-1 trend,
smoothing 1e-3) to each setting's mean full-budget metric, at the setting's point in the table's unit
cube (an off component's coordinates read as -0.5, below its range), and predicts each setting from
all the others. It prints, per table and kernel: the root-mean-square error over all settings and over
the table's 10 best, the Spearman correlation of predictions and values, the RMSE of predicting the
mean of the other settings (the no-model baseline), the seed noise (RMS of the standard deviation
between training seeds of one setting) and the gap between the table's best and its third best (what
a surrogate must resolve to say where the best setting is). Tables default to the three shipped ones
(demo; demo + the dense table around its best; held-out), each alone.
"""

from __future__ import annotations

import argparse
import sys

KERNELS = ("thin_plate_spline", "cubic", "multiquadric")


def loo_report(table, label: str) -> list[str]:
    """The printed lines for one :class:`rspose_tune.replay.CurveTable`."""
    import numpy as np
    from scipy.interpolate import RBFInterpolator
    from scipy.stats import spearmanr

    n = len(table.settings)
    points = np.array([table.unit_point(i) for i in range(n)])
    points = np.where(np.isnan(points), -0.5, points)
    values = np.array([table.value(i) for i in range(n)])
    top = np.array(table.best_indices(10))
    spreads = [np.std([c.metric[-1] for c in cs], ddof=1) for cs in table.curves if len(cs) > 1]
    seed_sd = float(np.sqrt(np.mean(np.square(spreads))))
    baseline = np.array([np.delete(values, k).mean() for k in range(n)])
    best3 = np.sort(values)[::-1][:3]
    lines = [f"{label}: {n} settings, {table.n_curves} curves, {points.shape[1]} searched dimensions; seed noise "
             f"{seed_sd:.4f}; best minus third best {best3[0] - best3[2]:.4f}; mean-of-others RMSE "
             f"{float(np.sqrt(np.mean((baseline - values) ** 2))):.4f}"]
    for kernel in KERNELS:
        predicted = np.empty(n)
        for k in range(n):
            keep = np.arange(n) != k
            model = RBFInterpolator(points[keep], values[keep], kernel=kernel, smoothing=1e-3, degree=1, epsilon=1.0)
            predicted[k] = model(points[k : k + 1])[0]
        rmse = float(np.sqrt(np.mean((predicted - values) ** 2)))
        rmse_top = float(np.sqrt(np.mean((predicted[top] - values[top]) ** 2)))
        rho = float(spearmanr(predicted, values).statistic)
        lines.append(f"  {kernel:<18} leave-one-out RMSE {rmse:.4f}, on the 10 best {rmse_top:.4f}, Spearman {rho:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from rspose_tune.replay import DEMO_TABLE, DENSE_TABLE, HELDOUT_TABLE, load_table

    parser = argparse.ArgumentParser(prog="python tools/surrogate_loo.py", description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", help="table files, fitted together (default: the shipped tables, each)")
    args = parser.parse_args(argv)
    groups = ([(args.tables, " + ".join(args.tables))] if args.tables else
              [([str(DEMO_TABLE)], "demo"), ([str(DEMO_TABLE), str(DENSE_TABLE)], "demo + dense"),
               ([str(HELDOUT_TABLE)], "held-out")])
    for paths, label in groups:
        print("\n".join(loo_report(load_table(paths), label)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
