"""rspose_tune.searcher._random_fraction: TPE with a share of its proposals drawn at random (BOHB's
``random_fraction``), through a real Optuna study and the search's own ``make_sampler``."""

from __future__ import annotations

import optuna
import pytest

from rspose_tune.searcher._random_fraction import RandomFractionSampler
from rspose_tune.searcher._rules import derive_seed, make_sampler, parse_tpe_option

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "y": optuna.distributions.FloatDistribution(0.1, 3.0, log=True)}


def _study(sampler, n):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(n):
        trial = study.ask(SPACE)
        study.tell(trial, -((trial.params["x"] - 0.7) ** 2))
    return study


def test_which_trials_are_random_after_the_start_up():
    half = RandomFractionSampler(optuna.samplers.TPESampler(), optuna.samplers.RandomSampler(), 0.5, 4)
    assert [n for n in range(12) if half.is_random(n)] == [5, 7, 9, 11]  # every other, from trial 4 on
    third = RandomFractionSampler(optuna.samplers.TPESampler(), optuna.samplers.RandomSampler(), 1 / 3, 0)
    assert sum(third.is_random(n) for n in range(300)) == 100
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        RandomFractionSampler(optuna.samplers.TPESampler(), optuna.samplers.RandomSampler(), 1.0, 0)


def test_random_trials_are_a_random_samplers_draws_and_the_rest_are_tpes():
    sampler = make_sampler("tpe", 3, 0, 4, {"n_ei_candidates": 1, "random_fraction": 0.5})
    assert isinstance(sampler, RandomFractionSampler)
    study = _study(sampler, 16)
    random_trials = [t for t in study.trials if sampler.is_random(t.number)]
    # independently: a RandomSampler on the seed make_sampler gives the random share draws the same points in turn
    alone = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=(derive_seed(3, 0) + 1) % 2**32))
    expected = [alone.ask(SPACE).params for _ in random_trials]
    assert [t.params for t in random_trials] == expected
    # the other trials: what plain TPE proposes on the same history (same seed, same start-up)
    plain = _study(make_sampler("tpe", 3, 0, 4, {"n_ei_candidates": 1}), 5)
    assert [t.params for t in study.trials[:5]] == [t.params for t in plain.trials[:5]]  # start-up and trial 4: TPE's


def test_no_fraction_is_plain_tpe_and_the_option_is_checked():
    assert isinstance(make_sampler("tpe", 0, 0, 4, {"random_fraction": 0.0}), optuna.samplers.TPESampler)
    assert parse_tpe_option("random_fraction=0.25") == ("random_fraction", 0.25)
    for bad in ("1", "-0.1", "nan", "half"):
        with pytest.raises(ValueError, match=r"random_fraction must be a number in \[0, 1\)"):
            parse_tpe_option(f"random_fraction={bad}")
