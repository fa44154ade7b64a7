"""rspose_tune._resources: how a trial's resources split into ranks, and the feasibility rule (pure)."""

from __future__ import annotations

import pytest

from rspose_tune._resources import ResourceError, bundles_that_fit, check_feasible, plan_ranks, rank_bundle


# ---------------------------------------------------------------------------------------------
# How resources split into ranks (pure)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gpus", "cpus", "workers", "expected"),
    [(0, 1, None, 1), (1, 4, None, 1), (0.5, 2, None, 1), (2, 8, None, 2), (0, 2, 2, 2), (4, 16, 4, 4)],
)
def test_plan_ranks_defaults_to_one_rank_per_gpu(gpus, cpus, workers, expected):
    assert plan_ranks(gpus, cpus, workers) == expected


@pytest.mark.parametrize(
    ("gpus", "cpus", "workers", "message"),
    [
        (1, 4, 2, "--gpus-per-trial must equal --workers-per-trial (2)"),
        (4, 4, 2, "--gpus-per-trial must equal --workers-per-trial (2)"),
        (2, 4, 1, "pass --workers-per-trial 2"),
        (1.5, 4, None, "--gpus-per-trial above 1 must be a whole number, got 1.5"),
        (0, 0, 1, "--cpus-per-trial must be > 0"),
    ],
)
def test_plan_ranks_refuses_what_cannot_train(gpus, cpus, workers, message):
    with pytest.raises(ResourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_ranks(gpus, cpus, workers)


def test_rank_bundle_shares_the_trial_resources():
    assert rank_bundle(2, 8, 2) == {"CPU": 4, "GPU": 1}
    assert rank_bundle(2, 2, 0) == {"CPU": 1}


def test_feasibility_counts_bundles_across_nodes():
    bundle = {"CPU": 4, "GPU": 1}
    assert bundles_that_fit(bundle, {"CPU": 16, "GPU": 1}) == 1
    assert bundles_that_fit(bundle, {"CPU": 6, "GPU": 8}) == 1
    assert bundles_that_fit({"CPU": 0.5}, {"CPU": 2}) == 4
    check_feasible(bundle, 2, [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}])  # one rank per node
    with pytest.raises(ResourceError) as exc:
        check_feasible(bundle, 2, [{"CPU": 16, "GPU": 1}])
    message = str(exc.value)
    assert "2 rank(s) of {CPU: 4, GPU: 1}" in message and "--gpus-per-trial" in message
    assert "largest node has {CPU: 16, GPU: 1}" in message and "can hold only 1" in message
