"""TPE with a share of its proposals drawn at random: BOHB's ``random_fraction`` (Falkner, Klein and
Hutter, "BOHB: Robust and Efficient Hyperparameter Optimization at Scale", ICML 2018, where a third
of the configurations are drawn at random). Optuna has no such option; this sampler delegates each
trial to either TPE or a ``RandomSampler`` by the trial's number, so the choice is deterministic and
a resumed study keeps it. Imported by :func:`rspose_tune.searcher._rules.make_sampler` only."""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class RandomFractionSampler(BaseSampler):
    """``model`` (TPE) for most trials; ``random`` for a ``fraction`` of those numbered
    ``n_startup_trials`` or later (before, TPE draws its own start-up trials at random), spread
    evenly: trial ``n`` is random when ``floor((k + 1) * fraction) > floor(k * fraction)`` for
    ``k = n - n_startup_trials`` (``fraction`` 0.5: every other trial)."""

    def __init__(self, model: BaseSampler, random: RandomSampler, fraction: float, n_startup_trials: int) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"`fraction` is {fraction!r}, but must be in [0, 1).")
        self._model, self._random, self._fraction, self._startup = model, random, fraction, n_startup_trials

    def is_random(self, number: int) -> bool:
        """Whether trial ``number`` is drawn at random instead of by the model."""
        k = number - self._startup
        return k >= 0 and math.floor((k + 1) * self._fraction) > math.floor(k * self._fraction)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self.is_random(trial.number):
            return {}
        return self._model.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self.is_random(trial.number):
            return {}
        return self._model.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        sampler = self._random if self.is_random(trial.number) else self._model
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._model.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> None:
        self._model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._model.reseed_rng()
        self._random.reseed_rng()


__all__ = ["RandomFractionSampler"]
