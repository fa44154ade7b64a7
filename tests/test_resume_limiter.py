"""Issue 10: after Tuner.restore the concurrency limiter still passes resumed trials' completions
on to the searcher (Ray's own limiter forgets its live trials with the driver) and counts them."""

from __future__ import annotations

from ray.tune.search import Searcher

from rspose_tune.searcher import ResumableConcurrencyLimiter


class Recorder(Searcher):
    def __init__(self):
        super().__init__(metric="metric", mode="max")
        self.calls = []

    def suggest(self, trial_id):
        return {"x": 1.0}

    def on_trial_result(self, trial_id, result):
        self.calls.append(("result", trial_id))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.calls.append(("complete", trial_id, error))


def test_resumed_trials_reach_the_searcher_and_count_against_the_limit():
    inner = Recorder()
    limiter = ResumableConcurrencyLimiter(inner, max_concurrent=2)  # as unpickled by a new driver: no live trials
    limiter.on_trial_result("resumed", {"epoch": 3, "metric": 0.5})
    assert limiter.suggest("new") == {"x": 1.0}
    assert limiter.suggest("third") is None  # "resumed" runs too: 2 live trials already
    limiter.on_trial_complete("resumed", {"epoch": 4, "metric": 0.6})
    limiter.on_trial_complete("never-seen", None, error=True)  # ended before any result after the restart
    assert ("complete", "resumed", False) in inner.calls and ("complete", "never-seen", True) in inner.calls
    assert limiter.suggest("third") == {"x": 1.0}  # "resumed" finished: its slot is free
