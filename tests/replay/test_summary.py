"""rspose_tune.replay._summary: the checkpoints, and the quartiles over search seeds."""

from __future__ import annotations

import numpy as np
import pytest

from rspose_tune.replay import POLICIES, ReplaySettings, checkpoints, incumbent_at, replay, summarize
from tests.replay.conftest import MAX_EPOCHS


def test_checkpoints():
    assert checkpoints(10, 400) == [10, 20, 50, 100, 200, 400]
    assert checkpoints(10, 100) == [10, 20, 50, 100]
    assert checkpoints(10, 5) == [5]
    assert checkpoints(10, 0) == [0]


def test_summary_quartiles_over_seeds(known_table):
    settings = ReplaySettings(budget_epochs=10 * MAX_EPOCHS, workers=2, grace_epochs=1, reduction_factor=2)
    traces = [replay(known_table, POLICIES["full-random"], s, settings) for s in range(5)]
    summary = summarize(known_table, traces, settings.budget_epochs, target=0.01)
    finals = sorted(incumbent_at(t, settings.budget_epochs)[0] for t in traces)
    assert summary.rows[-1]["best"][0] == pytest.approx(finals[2])
    assert summary.rows[-1]["best"][1] == pytest.approx(np.percentile(finals, 25))
    assert summary.trials >= 10 and summary.stopped_share == 0
    assert 0 <= summary.exact_share < 0.1  # random proposals are (almost) never a recorded setting


def test_repeated_epochs_count_only_what_an_earlier_trial_of_the_same_curve_saw():
    """Issue 26: a trial answered by a curve the search already replayed learns nothing new up to
    the epoch the earlier trials reached; beyond it, it does."""
    from rspose_tune.replay._simulator import Trace, TrialRecord
    from rspose_tune.replay._summary import repeated_epochs

    def record(n, setting, last, start):
        return TrialRecord(f"t{n}", {}, setting, f"s{setting}-seed0", 0.0, False, True, start_s=start, last_epoch=last)

    trace = Trace(policy=POLICIES["asha-tpe"], seed=0, search_seed=0)
    trace.trials = [record(0, 1, 2, 0.0), record(1, 2, 10, 1.0), record(2, 1, 6, 2.0), record(3, 1, 10, 3.0),
                    record(4, 1, 2, 4.0)]
    # trial 2: epochs 1-2 seen (trial 0), 3-6 new; trial 3: 1-6 seen, 7-10 new; trial 4: 1-2 seen
    assert repeated_epochs(trace) == 2 + 6 + 2
    trace.trials[2].curve = "s1-seed1"  # another curve of the same setting: new information
    assert repeated_epochs(trace) == 0 + 2 + 2
