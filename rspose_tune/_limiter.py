"""The concurrency limiter of a search: Ray's :class:`~ray.tune.search.ConcurrencyLimiter` that
survives ``Tuner.restore``. The live search and the offline replay both wrap their searcher in it."""

from __future__ import annotations

from ray.tune.search import ConcurrencyLimiter

__all__ = ["ResumableConcurrencyLimiter"]


class ResumableConcurrencyLimiter(ConcurrencyLimiter):
    """:class:`ray.tune.search.ConcurrencyLimiter` that survives ``Tuner.restore``.

    Ray's limiter keeps its live trials only in memory (its searcher checkpoint holds the inner
    searcher's state alone), so after a driver restart it neither counts the trials Ray resumes
    against the limit nor passes their ``on_trial_complete`` on: the inner searcher would never
    learn how a resumed trial ended (its Optuna trial stays RUNNING). This subclass counts the
    trials that were unfinished in the restored searcher state from the restore on (Ray resumes
    them), adopts any other trial it does not know on its first result, and forwards the completion
    of trials it never saw.
    """

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        adopt = getattr(self.searcher, "unfinished_trial_ids", None)
        if self._limit_concurrency and not self.batch and adopt is not None:
            for trial_id in adopt():
                if trial_id not in self.live_trials:  # resumed by Ray: it holds a slot before its first result
                    self.live_trials.add(trial_id)
                    self.num_unfinished_live_trials += 1

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._limit_concurrency and not self.batch and trial_id not in self.live_trials:
            self.live_trials.add(trial_id)  # resumed after a driver restart: it runs, so it counts
            self.num_unfinished_live_trials += 1
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._limit_concurrency and not self.batch and trial_id not in self.live_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        super().on_trial_complete(trial_id, result=result, error=error)
