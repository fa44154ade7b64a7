"""Parallel TPE options: independent TPE vs + constant liar vs + multivariate/group (issue 11), one
candidate per proposal and a random fraction (issue 26), and random search.

``python -m rspose_tune.bench tpe [--seeds 30] [--trials 32] [--workers 8]``

What it measures: the project's own searcher (:class:`rspose_tune.searcher.PruningAwareOptunaSearch`,
the define-by-run space of the ``demo`` preset (all components always on since issue 26's third
round; docs/trust.md's first table was measured with its earlier on/off switches), the known-good setting
first with ``--known-good``, the search's ``n_startup_trials`` rule) driven asynchronously with ``--workers`` trials in
flight (each trial takes a random 0.5-1.5 time units; a new one is asked as soon as one finishes,
as Ray's ConcurrencyLimiter does). The objective is synthetic (no training): a smooth function of
the six values (the known-good setting scores 0.723) with a penalty for switched-off components, an interaction between the sort and
instance coefficients (their ratio matters, as the losses are summed), and Gaussian noise
(sd 0.01, the size of seed noise); its optimum is 0.75. Reported per variant over ``--seeds``
searches: the noise-free value of the best setting found (the incumbent by observed value), its
median/mean, and a paired Wilcoxon signed-rank test against each of :data:`REFERENCES` printed before it (scipy); and how
close concurrent proposals are (mean normalised distance between a proposal and the settings
running when it was made: clustering shows up as small distances).
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time

import numpy as np

from rspose_tune._flags import int_at_least

# Explicit options: Optuna 5's own defaults are constant_liar=True and multivariate=None (= True for
# one objective) with group=False, under which the switch-dependent parameters fall back to
# independent sampling.
VARIANTS = {
    "random search": None,  # sampler="random": every trial as TPE's start-up trials
    "independent TPE": {"constant_liar": False, "multivariate": False},
    "+ constant_liar": {"constant_liar": True, "multivariate": False},  # searcher.TPE_OPTIONS up to issue 26
    "Optuna 5 default (liar, multivariate)": {"constant_liar": True, "multivariate": True, "group": False},
    "liar, multivariate, group": {"constant_liar": True, "multivariate": True, "group": True},
    # issue 26's third and fourth rounds (docs/replay.md): one candidate per proposal, then half of the
    # proposals after the start-up drawn at random (searcher.TPE_OPTIONS since the fourth round)
    "liar, n_ei_candidates=1": {"constant_liar": True, "multivariate": False, "n_ei_candidates": 1},
    "liar, n_ei_candidates=1, random_fraction=0.5": {"constant_liar": True, "multivariate": False,
                                                     "n_ei_candidates": 1, "random_fraction": 0.5},
}
#: The variants each one is compared with (Wilcoxon signed-rank over the same seeds), when printed after them.
REFERENCES = ("independent TPE", "+ constant_liar", "liar, n_ei_candidates=1", "random search")


def objective(c: dict) -> float:
    """Synthetic demo-like surface (noise-free); max 0.75."""
    value = 0.75 - 0.3 * (c["delta_rank"] - 0.4) ** 2
    sort_on = bool(c["coeff_sort"])
    inst_on = bool(c["coeff_inst"])
    if sort_on:
        value -= 0.04 * math.log(c["delta_sort"] / 1.2) ** 2 + 0.01 * math.log(c["coeff_sort"] / 1.5) ** 2
    else:
        value -= 0.15
    if inst_on:
        value -= 0.02 * math.log(c["delta_inst"] / 2.5) ** 2
        if sort_on:  # the ratio of the two coefficients matters: a ridge, not a point
            value -= 0.05 * (math.log(c["coeff_sort"]) - math.log(c["coeff_inst"]) - 1.4) ** 2
        else:
            value -= 0.02 * math.log(c["coeff_inst"] / 0.5) ** 2
    else:
        value -= 0.03
    return value


def _unit(c: dict, space) -> np.ndarray:
    out = []
    for name in ("delta_rank", "delta_sort", "coeff_sort", "delta_inst", "coeff_inst"):
        spec = space[name]
        v = c[name]
        if v is None or v == 0:
            out.append(-0.5)  # off: far from every on value
            continue
        lo, hi, x = (math.log(spec.low), math.log(spec.high), math.log(v)) if spec.log else (spec.low, spec.high, v)
        out.append((x - lo) / (hi - lo))
    return np.asarray(out)


def run_once(options: dict | None, seed: int, trials: int, workers: int, preset, known_good: bool = False) -> tuple[float, float]:
    """(noise-free value of the observed incumbent, mean distance of a proposal to the running ones)."""
    from rspose_tune.searcher import PruningAwareOptunaSearch, startup_trials

    searcher = PruningAwareOptunaSearch(
        preset.params, max_epochs=1, metric="metric", mode="max", known_good=preset.known_good if known_good else (),
        seed=seed, n_startup_trials=startup_trials(trials), tpe_options=options or {},
        sampler="tpe" if options is not None else "random",
    )
    rng = np.random.default_rng(seed)
    running: list[tuple[float, str, dict]] = []
    clock, asked, best, distances = 0.0, 0, (-math.inf, None), []

    def ask() -> None:
        nonlocal asked
        tid = f"t{asked}"
        config = searcher.suggest(tid)
        if running:
            here = _unit(config, preset.params)
            distances.append(min(float(np.abs(here - _unit(c, preset.params)).mean()) for _, _, c in running))
        heapq.heappush(running, (clock + rng.uniform(0.5, 1.5), tid, config))
        asked += 1

    while asked < min(workers, trials):
        ask()
    while running:
        clock, tid, config = heapq.heappop(running)
        true = objective(config)
        observed = true + rng.normal(0.0, 0.01)
        searcher.on_trial_complete(tid, {"epoch": 1, "metric": observed})
        if observed > best[0]:
            best = (observed, true)
        if asked < trials:
            ask()
    return best[1], float(np.mean(distances)) if distances else math.nan  # NaN: never two trials in flight


def main(argv: list[str] | None = None) -> int:
    import logging
    import warnings

    import optuna
    from scipy import stats

    from rspose_tune.spaces import load_preset

    parser = argparse.ArgumentParser(prog="python -m rspose_tune.bench tpe", description=__doc__.split("\n")[0])
    # At least one search per variant, one trial, one in flight (0 seeds printed NaN, 0 workers failed in np.mean).
    parser.add_argument("--seeds", type=int_at_least("--seeds", 1), default=30, help="searches per variant")
    parser.add_argument("--trials", type=int_at_least("--trials", 1), default=32, help="trials per search")
    parser.add_argument("--workers", type=int_at_least("--workers", 1), default=8, help="trials in flight")
    parser.add_argument("--known-good", action="store_true", help="enqueue the demo's known-good setting first")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("rspose_tune.searcher").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    preset = load_preset("demo")
    print(f"{args.seeds} searches per variant, {args.trials} trials, {args.workers} in flight; synthetic demo "
          "surface, optimum 0.75, noise sd 0.01")
    results = {}
    for name, options in VARIANTS.items():
        start = time.perf_counter()
        results[name] = [run_once(options, s, args.trials, args.workers, preset, args.known_good)
                         for s in range(args.seeds)]
        values = np.array([v for v, _ in results[name]])
        dist = np.array([d for _, d in results[name]])
        distance = f"{dist.mean():.3f}" if np.isfinite(dist).all() else "n/a (one trial in flight)"
        line = (f"{name:46s} best true value: median {np.median(values):.4f}, mean {values.mean():.4f} "
                f"(regret {0.75 - values.mean():.4f}); proposal-to-running distance {distance}; "
                f"{time.perf_counter() - start:.0f} s")
        for ref in REFERENCES:
            if name == ref or ref not in results:
                continue
            base = np.array([v for v, _ in results[ref]])
            p = stats.wilcoxon(values, base).pvalue if np.any(values != base) else 1.0
            wins, losses = int((values > base).sum()), int((values < base).sum())
            line += f"; vs {ref}: better/worse in {wins}/{losses} of {args.seeds}, Wilcoxon p = {p:.3g}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
