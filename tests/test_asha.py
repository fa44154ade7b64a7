"""rspose_tune._asha: the ASHA rungs the report, --dry-run and plots use are where Ray's ASHAScheduler puts them."""

from __future__ import annotations

import itertools

import pytest
from ray.tune.schedulers import ASHAScheduler

from rspose_tune import report as rep
from rspose_tune._asha import asha_rungs
from rspose_tune._ray_compat import asha_milestones


def test_rungs_equal_rays_milestones_below_the_budget():
    for max_t, grace, rf in itertools.product((1, 2, 3, 9, 10, 26, 27, 81, 210, 243, 300), (1, 2, 3, 5, 10), (2, 3, 4)):
        if grace > max_t:
            continue
        ray = ASHAScheduler(time_attr="epoch", metric="metric", mode="max", max_t=max_t, grace_period=grace,
                            reduction_factor=rf)
        assert asha_rungs(max_t, grace, rf) == [m for m in asha_milestones(ray) if m < max_t], (max_t, grace, rf)


def test_unknown_budget_has_no_rungs():
    assert asha_rungs(None, 1, 3) == asha_rungs(9, None, 3) == asha_rungs(9, 1, None) == []


@pytest.mark.parametrize(
    "budget, expected",
    [((210, 10, 3), [10, 30, 90]), ((9, 1, 3), [1, 3]), ((10, 2, 3), [2, 6]), ((10, 10, 3), []),
     ((None, 10, 3), []), ((210, None, 3), [])],
)
def test_asha_rungs(budget, expected):
    assert rep.asha_rungs(*budget) == expected
