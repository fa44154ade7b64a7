"""rspose_tune.replay._confirm: the replayed confirm stage (its seeds, the winner by mean, candidates the
table cannot confirm on every seed, racing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rspose_tune.replay import POLICIES, table_from_frame
from tests.replay.conftest import MAX_EPOCHS, SPACE_ON, _curve_rows, _grid_settings


# ------------------------------------------------------------------------------------- confirm stage
def _seeded_table(finals_by_setting, mode="max"):
    """One constant-shape curve per (setting, seed) with the given final metric; ids ``sNN-seedK``."""
    settings = _grid_settings()[: len(finals_by_setting)]
    rows = []
    for i, (setting, finals) in enumerate(zip(settings, finals_by_setting)):
        for seed, final in finals.items():
            rows += _curve_rows(f"s{i:02d}-seed{seed}", setting, final)
    return table_from_frame(pd.DataFrame(rows), source="seeded", max_epochs=MAX_EPOCHS, mode=mode, space=SPACE_ON)


def _trace_of(table, settings_and_seed, search_seed):
    """A finished search trace: full-budget trials of these settings, replayed on ``search_seed``."""
    from rspose_tune.replay._simulator import Trace, TrialRecord

    trace = Trace(policy=POLICIES["full-random"], seed=0, search_seed=search_seed)
    for n, index in enumerate(settings_and_seed):
        curve = table.curve_of_seed(index, search_seed)
        trace.trials.append(TrialRecord(f"t{n}", dict(table.settings[index]), index, curve.trial_id, 0.0, True, True,
                                        start_s=0.0, end_s=1.0, last_epoch=MAX_EPOCHS))
    return trace


def test_confirm_seeds_follow_the_search_seed_and_wrap_around():
    from rspose_tune.replay._confirm import confirm_seeds

    table = _seeded_table([{0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}])
    assert confirm_seeds(table, 0, 2) == (1, 2)
    assert confirm_seeds(table, 2, 3) == (3, 0, 1)
    assert confirm_seeds(table, 3, 9) == (0, 1, 2)


def test_confirm_picks_the_best_mean_on_further_seeds_not_the_lucky_search_trial():
    from scipy import stats

    from rspose_tune.replay._confirm import confirm

    # setting 0 is lucky on seed 0 (the search seed) but worse on average; setting 1 is the table's best
    table = _seeded_table([{0: 0.90, 1: 0.50, 2: 0.52, 3: 0.48},
                           {0: 0.70, 1: 0.61, 2: 0.66, 3: 0.60},
                           {0: 0.60, 1: 0.55, 2: 0.50, 3: 0.55}])
    assert table.best_index == 1
    trace = _trace_of(table, [2, 0, 1], search_seed=0)
    out = confirm(table, trace, top=2, seeds=3)
    assert out.candidates == (0, 1)  # the 2 best search trials by observed metric (0.90, 0.70)
    assert out.seeds == (1, 2, 3) and out.winner == 1 and out.correct and out.regret == 0
    assert out.epochs == 2 * 3 * MAX_EPOCHS and out.short == 0
    diff = np.array([0.61 - 0.50, 0.66 - 0.52, 0.60 - 0.48])  # independent: scipy's paired t-test interval
    low, high = stats.ttest_rel(diff + 0.0, np.zeros(3)).confidence_interval(0.95)
    assert out.distinguishable == bool(low > 0 or high < 0)
    # top 1: only the lucky setting is confirmed, so the confirm stage cannot repair the choice
    alone = confirm(table, trace, top=1, seeds=3)
    assert alone.winner == 0 and not alone.correct
    assert alone.regret == pytest.approx(table.best_value - table.value(0))
    assert alone.distinguishable is None


def test_confirm_counts_candidates_the_table_cannot_confirm_on_every_seed():
    from rspose_tune.replay._confirm import confirm

    table = _seeded_table([{0: 0.6, 1: 0.6}, {0: 0.7, 1: 0.7, 2: 0.7, 3: 0.7}])
    out = confirm(table, _trace_of(table, [0, 1], search_seed=0), top=2, seeds=2)
    assert out.seeds == (1, 2) and out.by_seed == {1: {1: 0.7, 2: 0.7}, 0: {1: 0.6}} and out.short == 1
    assert out.epochs == 3 * MAX_EPOCHS and out.winner == 1 and out.correct


def test_racing_drops_a_candidate_once_paired_seeds_show_it_worse_and_saves_its_epochs():
    from scipy import stats

    from rspose_tune.replay._confirm import confirm

    # 3 candidates on confirm seeds 1..4: setting 1 leads; setting 0 is worse by a steady margin
    # (paired differences 0.10, 0.11, ...: distinguishable after 3 seeds), setting 2 by noise only.
    table = _seeded_table([{0: 0.90, 1: 0.50, 2: 0.51, 3: 0.49, 4: 0.50},
                           {0: 0.80, 1: 0.60, 2: 0.62, 3: 0.60, 4: 0.61},
                           {0: 0.70, 1: 0.63, 2: 0.55, 3: 0.60, 4: 0.50}])
    trace = _trace_of(table, [0, 1, 2], search_seed=0)
    full = confirm(table, trace, top=3, seeds=4)
    raced = confirm(table, trace, top=3, seeds=4, race_after=3)
    # independent check of the racing decision after seed 3 (scipy's paired t-test, 95 %)
    d0 = np.array([0.60 - 0.50, 0.62 - 0.51, 0.60 - 0.49])
    d2 = np.array([0.60 - 0.63, 0.62 - 0.55, 0.60 - 0.60])
    assert stats.ttest_rel(d0, np.zeros(3)).confidence_interval(0.95).low > 0
    low2, high2 = stats.ttest_rel(d2, np.zeros(3)).confidence_interval(0.95)
    assert low2 < 0 < high2
    assert raced.dropped == 1 and sorted(raced.by_seed[0]) == [1, 2, 3] and sorted(raced.by_seed[2]) == [1, 2, 3, 4]
    assert raced.epochs == full.epochs - MAX_EPOCHS and full.dropped == 0
    assert raced.winner == full.winner == 1
    # from seed 2 on: the steady margin (0.10, 0.11) already separates them with 1 degree of freedom
    assert stats.ttest_rel(d0[:2], np.zeros(2)).confidence_interval(0.95).low > 0
    early = confirm(table, trace, top=3, seeds=4, race_after=2)
    assert early.dropped == 1 and sorted(early.by_seed[0]) == [1, 2] and early.epochs == full.epochs - 2 * MAX_EPOCHS
    with pytest.raises(ValueError, match="race_after"):
        confirm(table, trace, top=3, seeds=4, race_after=1)


def test_confirm_from_a_rung_takes_a_trial_asha_stopped_there():
    """Issue 26: ``rank_epochs`` ranks the candidates at an ASHA rung among every trial that reached
    it, so the table's best setting stopped at that rung (a full-budget trial filled the rung first)
    can still be confirmed; the full-budget ranking cannot see it."""
    from rspose_tune.replay._confirm import confirm

    table = _seeded_table([{0: 0.60, 1: 0.60, 2: 0.60}, {0: 0.70, 1: 0.71, 2: 0.72}, {0: 0.50, 1: 0.50, 2: 0.50}])
    trace = _trace_of(table, [0, 1, 2], search_seed=0)
    trace.trials[1].last_epoch = 2  # the best setting, stopped at the rung at epoch 2
    full = confirm(table, trace, top=1, seeds=2)
    assert full.candidates == (0,) and not full.correct
    rung = confirm(table, trace, top=1, seeds=2, rank_epochs=2)
    assert rung.candidates == (1,) and rung.correct and rung.seeds == (1, 2)
    assert rung.by_seed == {1: {1: pytest.approx(0.71), 2: pytest.approx(0.72)}}  # at the full budget, not the rung
    both = confirm(table, trace, top=3, seeds=2, rank_epochs=2)
    assert both.candidates == (1, 0, 2)  # ranked by the metric at epoch 2: 0.70 * 0.75/0.9375, ...


# ------------------------------------------------------------------------------------- seed by seed
def test_paired_comparison_counts_discordant_seeds_and_is_mcnemars_exact_test():
    from math import comb

    from rspose_tune.replay._summary import ConfirmSummary, paired_comparison

    def summary(name, seeds):
        nan3 = (float("nan"),) * 3
        return ConfirmSummary(name, 10, len(seeds), 0, nan3, nan3, 0.0, 0, 0, 0, 0, correct_seeds=tuple(seeds))

    a, b = summary("A", [0, 1, 2, 3, 4, 5, 6]), summary("B", [0, 1, 7])
    c = paired_comparison(a, b, range(10))
    assert (c.both, c.first_only, c.second_only, c.neither) == (2, 5, 1, 2)
    # two-sided exact binomial test of 5 in 6 at 1/2, computed by hand: P(X <= 1) + P(X >= 5)
    assert c.p_value == pytest.approx(2 * (comb(6, 0) + comb(6, 1)) / 2 ** 6)
    assert paired_comparison(a, a, range(10)).p_value == 1.0  # no discordant seed
    with pytest.raises(ValueError, match="every seed"):
        paired_comparison(a, b, range(5))


def test_summarize_confirm_records_the_seeds_that_named_the_best():
    from rspose_tune.replay._confirm import confirm
    from rspose_tune.replay._summary import summarize_confirm

    table = _seeded_table([{0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.7, 1: 0.7, 2: 0.7}])
    right, wrong = _trace_of(table, [0, 1], search_seed=0), _trace_of(table, [0], search_seed=0)
    right.seed, wrong.seed = 7, 8
    traces = [right, wrong]
    outcomes = [confirm(table, t, 2, 3) for t in traces]
    assert summarize_confirm(table, traces, outcomes).correct_seeds == (7,)
