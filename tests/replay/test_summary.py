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
