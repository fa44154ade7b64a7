"""rspose_tune._pasha: Ray's ASHA with a PASHA-style growing maximum budget."""

from __future__ import annotations

import pytest
from ray.tune.schedulers import TrialScheduler

from rspose_tune._pasha import ProgressiveASHAScheduler

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _scheduler(**kw):
    return ProgressiveASHAScheduler(metric="metric", mode=kw.pop("mode", "max"), time_attr="epoch", max_t=10,
                                    grace_period=2, reduction_factor=3, **kw)


def _weak(scheduler, n=3, value=0.3):
    """Trials stopped at epoch 2 (recorded at level 2 only): they lower ASHA's rung-2 cutoff, so
    the trials under test are not stopped there by ASHA itself."""
    for i in range(n):
        _run(scheduler, f"weak{i}", {2: value})


def _run(scheduler, trial_id, curve):
    """Feed ``curve`` ({epoch: metric}) until the scheduler stops the trial; the decisions made."""
    trial = _Trial(trial_id)
    scheduler.on_trial_add(None, trial)
    decisions = {}
    for epoch, metric in sorted(curve.items()):
        decisions[epoch] = scheduler.on_trial_result(None, trial, {"epoch": epoch, "metric": metric})
        if decisions[epoch] == STOP:
            break
    return decisions


def test_the_top_starts_at_the_second_level_and_stable_rankings_keep_it_there():
    s = _scheduler()
    assert s._levels == [2, 6, 10] and s.top_epochs == 6  # Ray's ASHA milestones 2, 6, then the budget
    # the same order at epochs 2 and 6 (the two top levels): each trial reaching 6 is stopped there
    assert _run(s, "a", {2: 0.5, 4: 0.55, 6: 0.6, 8: 0.62, 10: 0.63})[6] == STOP
    assert _run(s, "b", {2: 0.6, 4: 0.65, 6: 0.7, 8: 0.7, 10: 0.7})[6] == STOP
    assert s.top_epochs == 6 and s.top_history == [6]


def test_a_ranking_that_swaps_by_more_than_epsilon_raises_the_top_and_the_trial_goes_on():
    s = _scheduler(epsilon=0.01)
    _weak(s)
    _run(s, "a", {2: 0.60, 4: 0.60, 6: 0.62, 8: 0.62, 10: 0.62})
    # b is worse than a at epoch 2 by 0.05 but better at epoch 6 by 0.05: unstable, so the top rises
    decisions = _run(s, "b", {2: 0.55, 4: 0.60, 6: 0.67, 8: 0.68, 10: 0.70})
    assert decisions[6] == CONTINUE and decisions[10] == STOP  # 10 = max_t: Ray's ASHA stops it there
    assert s.top_epochs == 10 and s.top_history == [6, 10]


def test_a_swap_within_epsilon_is_not_unstable():
    s = _scheduler(epsilon=0.1)
    _weak(s)
    _run(s, "a", {2: 0.60, 6: 0.62})
    assert _run(s, "b", {2: 0.55, 6: 0.67})[6] == STOP and s.top_epochs == 6


def test_min_mode_compares_the_other_way():
    s = _scheduler(mode="min")
    _run(s, "a", {2: 1.0, 6: 0.9})
    assert _run(s, "b", {2: 0.8, 6: 0.7})[6] == STOP and s.top_epochs == 6  # b better at both levels
    s = _scheduler(mode="min")
    _weak(s, value=5.0)
    _run(s, "a", {2: 0.8, 6: 0.9})
    assert _run(s, "b", {2: 1.0, 6: 0.7})[6] == CONTINUE and s.top_epochs == 10  # worse at 2, better at 6


def test_ashas_own_cutoffs_still_stop_weak_trials():
    s = _scheduler()
    for i in range(3):
        _run(s, f"good{i}", {2: 0.7 + 0.01 * i})
    assert _run(s, "weak", {2: 0.1, 4: 0.2})[2] == STOP  # below the rung-2 cutoff, as Ray's ASHA decides


def test_epsilon_is_checked():
    with pytest.raises(ValueError, match="epsilon"):
        _scheduler(epsilon=-1)


def test_replayed_pasha_answers_from_its_top_level_and_confirms_those_trials():
    """Through the replay: the answer's level is the scheduler's top at the end, and the confirm
    stage's candidates are trials that ended there."""
    import numpy as np

    from rspose_tune.replay import POLICIES, ReplaySettings, load_table, replay
    from rspose_tune.replay._confirm import confirm
    from rspose_tune.replay._make_table import DEMO_TABLE

    table = load_table([DEMO_TABLE])
    settings = ReplaySettings(budget_epochs=200, workers=4, grace_epochs=2, reduction_factor=3, n_startup_trials=5)
    levels = set()
    for seed in range(3):
        trace = replay(table, POLICIES["pasha-tpe"], seed, settings)
        levels.add(trace.final_epochs)
        assert trace.final_epochs in (6, 10) and trace.incumbents
        ended_at_top = {t.setting for t in trace.trials if t.last_epoch >= trace.final_epochs}
        assert trace.incumbents[-1][3] in ended_at_top
        assert max(t.last_epoch for t in trace.trials) <= max(trace.final_epochs, 10)
        if trace.final_epochs == 6:  # no trial trained past the top
            assert all(t.last_epoch <= 6 for t in trace.trials)
        out = confirm(table, trace, top=2, seeds=1)
        assert set(out.candidates) <= ended_at_top
    asha = replay(table, POLICIES["asha-tpe"], 0, settings)
    assert asha.final_epochs == 10
    assert np.isfinite(asha.spent_epochs)
