"""rspose_tune._limiter: after Tuner.restore the concurrency limiter still passes resumed trials' completions
on to the searcher (Ray's own limiter forgets its live trials with the driver) and counts them."""

from __future__ import annotations

from ray.tune.search import Searcher

from rspose_tune._limiter import ResumableConcurrencyLimiter
from tests.conftest import make_searcher


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


def test_trials_running_at_the_snapshot_count_from_the_restore_not_from_their_first_result(tmp_path):
    """Before: a resumed trial held no slot until its first result, so a restored driver started
    new trials beyond --max-concurrent while the resumed ones were still starting."""
    journal = str(tmp_path / "optuna.journal")
    first = ResumableConcurrencyLimiter(make_searcher(journal_path=journal), max_concurrent=2)
    assert first.suggest("a") is not None and first.suggest("b") is not None
    first.on_trial_result("a", {"epoch": 1, "metric": 0.3})
    state = tmp_path / "searcher-state"
    first.save(str(state))  # the experiment snapshot; then the driver dies with a and b running

    restored = ResumableConcurrencyLimiter(make_searcher(journal_path=journal), max_concurrent=2)
    restored.restore(str(state))  # what Tuner.restore does with the snapshot
    assert sorted(restored.live_trials) == ["a", "b"]
    assert restored.suggest("c") is None  # a and b resume: the limit is reached already
    restored.on_trial_complete("b", {"epoch": 1, "metric": 0.2})
    assert restored.suggest("c") is not None
