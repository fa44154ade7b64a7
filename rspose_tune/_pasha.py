"""A PASHA-style scheduler: Ray's ASHA whose maximum budget grows only while rankings are unstable.

PASHA (Bohdal et al., "PASHA: Efficient HPO and NAS with Progressive Resource Allocation", ICLR
2023) starts ASHA with a small maximum resource (its first two rungs) and raises it one rung at a
time, only when the ranking of the trials in the top two rungs disagrees. The search's answer is
then the best trial of the highest rung reached, which the confirm stage trains to the full budget.

This is that rule on Ray's own :class:`~ray.tune.schedulers.ASHAScheduler` (which makes every
other stop decision), for the offline replay (``--policies asha-pasha``). Ray has no PASHA, and
Syne Tune's (``PASHARungSystem``) drives Syne Tune trials, not Ray's; so the rule is written here.
Choices, each explicit:

- **Levels**: Ray's ASHA milestones of the budget (:func:`rspose_tune._asha.asha_rungs`) plus the
  full budget. The top starts at the second level (the first two rungs, as PASHA).
- **Stopping, not pausing**: Ray's ASHA stops trials; a trial that reaches the current top is
  stopped there (``STOP``), and when the top later rises it is not resumed (PASHA pauses and
  promotes). Trials still running, and new ones, go on to the new top.
- **Unstable ranking** (soft, as PASHA's): among the trials recorded at both the top level and the
  one below it (each at its first result at or after the level, as Ray's ASHA records), some pair
  is ordered by more than ``epsilon`` one way at the top and by more than ``epsilon`` the other
  way below. ``epsilon`` is in metric units (default: 0.01, the replay's target regret, about the
  demo's seed noise); PASHA estimates it from the curves, which this does not.
- The check runs whenever a trial reaches the top; if the top rises, that trial continues.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from rspose_tune._asha import asha_rungs

__all__ = ["ProgressiveASHAScheduler"]


class ProgressiveASHAScheduler(ASHAScheduler):
    """Ray's ASHA (one bracket) with a PASHA-style growing maximum budget (see the module docstring).

    Args:
        metric, mode, time_attr, max_t, grace_period, reduction_factor: as Ray's ``ASHAScheduler``.
        epsilon: Two values closer than this are not ordered when rankings are compared (metric units).
    """

    def __init__(self, *, metric: str, mode: str, time_attr: str, max_t: int, grace_period: int,
                 reduction_factor: float, epsilon: float = 0.01) -> None:
        if not epsilon >= 0:
            raise ValueError(f"`epsilon` is {epsilon!r}, but must be >= 0.")
        super().__init__(metric=metric, mode=mode, time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=1)
        self._levels = [*asha_rungs(max_t, grace_period, reduction_factor), max_t]
        self._top = min(1, len(self._levels) - 1)
        self._values: list[dict[str, float]] = [{} for _ in self._levels]  # per level: trial -> value (higher better)
        self._sign = 1.0 if mode == "max" else -1.0
        self._epsilon = float(epsilon)
        self.top_history: list[int] = [self._levels[self._top]]  # the top after each rise

    @property
    def top_epochs(self) -> float:
        """The current maximum budget: a trial that reaches it is the search's candidate answer."""
        return self._levels[self._top]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        epoch, value = result.get(self._time_attr), result.get(self._metric)
        if epoch is None or value is None:
            return action
        for level, values in zip(self._levels, self._values):
            if epoch >= level and trial.trial_id not in values:
                values[trial.trial_id] = self._sign * float(value)
        if epoch >= self.top_epochs and self._top < len(self._levels) - 1:
            if self._unstable():
                self._top += 1
                self.top_history.append(self.top_epochs)
            if epoch >= self.top_epochs:
                action = TrialScheduler.STOP
        return action

    def _unstable(self) -> bool:
        """Whether some pair of trials recorded at the top two levels swaps order by > epsilon."""
        top, below = self._values[self._top], self._values[self._top - 1]
        common = [t for t in top if t in below]
        eps = self._epsilon
        for i, a in enumerate(common):
            for b in common[i + 1:]:
                up, down = top[a] - top[b], below[a] - below[b]
                if (up > eps and down < -eps) or (up < -eps and down > eps):
                    return True
        return False
