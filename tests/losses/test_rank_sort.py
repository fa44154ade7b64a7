"""Tests for :mod:`rspose_tune.losses` (``spatial_rank_sort``, ``instance_sort``) against independent float64 references.

Two references, written without reusing anything from the package:

- :func:`brute_force` (tests/losses/conftest.py): the formulas of the contract, one group and one
  positive at a time, dense over the group's elements, with the error-driven gradients written out;
- :func:`ranksort_reference`: the loop of RankSortLoss (Oksuz et al. 2021,
  github.com/kemaloksuz/RankSortLoss, ``RankSort.forward``), ported to CPU, for one group."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rspose_tune.losses import instance_sort, spatial_rank_sort
from tests.losses.conftest import assert_matches, brute_force, make_groups, ours


def ranksort_reference(logits, targets, delta_rs=0.5, eps=1e-10):
    """RankSortLoss's ``RankSort.forward`` (one group, targets 0 = negative), ported to CPU.

    Returns (ranking loss, sorting loss, combined gradient), as that code does.
    """
    classification_grads = torch.zeros(logits.shape, dtype=torch.float64)
    fg_labels = targets > 0.0
    fg_logits = logits[fg_labels]
    fg_targets = targets[fg_labels]
    fg_num = len(fg_logits)
    threshold_logit = torch.min(fg_logits) - delta_rs
    relevant_bg_labels = (targets == 0) & (logits >= threshold_logit)
    relevant_bg_logits = logits[relevant_bg_labels]
    relevant_bg_grad = torch.zeros(len(relevant_bg_logits), dtype=torch.float64)
    sorting_error = torch.zeros(fg_num, dtype=torch.float64)
    ranking_error = torch.zeros(fg_num, dtype=torch.float64)
    fg_grad = torch.zeros(fg_num, dtype=torch.float64)
    order = torch.argsort(fg_logits)
    for ii in order:
        fg_relations = fg_logits - fg_logits[ii]
        bg_relations = relevant_bg_logits - fg_logits[ii]
        if delta_rs > 0:
            fg_relations = torch.clamp(fg_relations / (2 * delta_rs) + 0.5, min=0, max=1)
            bg_relations = torch.clamp(bg_relations / (2 * delta_rs) + 0.5, min=0, max=1)
        else:
            fg_relations = (fg_relations >= 0).double()
            bg_relations = (bg_relations >= 0).double()
        rank_pos = torch.sum(fg_relations)
        fp_num = torch.sum(bg_relations)
        rank = rank_pos + fp_num
        ranking_error[ii] = fp_num / rank
        current_sorting_error = torch.sum(fg_relations * (1 - fg_targets)) / rank_pos
        iou_relations = fg_targets >= fg_targets[ii]
        target_sorted_order = iou_relations * fg_relations
        rank_pos_target = torch.sum(target_sorted_order)
        target_sorting_error = torch.sum(target_sorted_order * (1 - fg_targets)) / rank_pos_target
        sorting_error[ii] = current_sorting_error - target_sorting_error
        if fp_num > eps:
            fg_grad[ii] -= ranking_error[ii]
            relevant_bg_grad += bg_relations * (ranking_error[ii] / fp_num)
        missorted_examples = (~iou_relations) * fg_relations
        sorting_pmf_denom = torch.sum(missorted_examples)
        if sorting_pmf_denom > eps:
            fg_grad[ii] -= sorting_error[ii]
            fg_grad += missorted_examples * (sorting_error[ii] / sorting_pmf_denom)
    classification_grads[fg_labels] = fg_grad / fg_num
    classification_grads[relevant_bg_labels] = relevant_bg_grad / fg_num
    return ranking_error.mean(), sorting_error.mean(), classification_grads


def heatmap_batch(n_inst=2, keypoints=4, seed=0, noise=0.1):
    """(G, 64*48) labels from MMPose's MSRAHeatmap codec and logits = labels + noise."""
    codecs = pytest.importorskip("mmpose.codecs")
    codec = codecs.MSRAHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n_inst):
        kpts = rng.uniform([0, 0], [192, 256], size=(1, keypoints, 2))
        maps.append(codec.encode(kpts, np.ones((1, keypoints)))["heatmaps"])
    labels = torch.from_numpy(np.concatenate(maps)).double().reshape(n_inst * keypoints, -1)
    gen = torch.Generator().manual_seed(seed)
    logits = labels + noise * torch.randn(labels.shape, generator=gen, dtype=torch.float64)
    return logits, labels


# --------------------------------------------------------------------------------------------
# Against the brute force
# --------------------------------------------------------------------------------------------
DELTAS = [(0.4, 1.5), (0.5, 0.5), (0.0, 1.5), (0.4, 0.0), (0.0, 0.0), (2.0, 0.25), (0.25, 0.25)]


@pytest.mark.parametrize("delta_rank,delta_sort", DELTAS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_random_groups_with_ties(delta_rank, delta_sort, seed):
    logits, labels = make_groups(seed=seed)
    kw = dict(delta_rank=delta_rank, delta_sort=delta_sort)
    for coeffs in [(1.0, 0.0), (0.0, 1.0), (0.7, 2.5)]:
        r, s, gr, gs = brute_force(logits, labels, **kw)
        want = (r, s, coeffs[0] * gr + coeffs[1] * gs)
        assert_matches(ours(logits, labels, coeffs=coeffs, **kw), want)


@pytest.mark.parametrize("delta_rank,delta_sort", DELTAS)
def test_matches_brute_force_special_groups(delta_rank, delta_sort):
    """Weights (some 0), a group without positives, an all-positive group, equal labels."""
    logits, labels = make_groups(g=7, m=25, seed=3)
    labels[1] = 0.0  # no positive
    labels[2] = torch.linspace(0.05, 1.0, 25, dtype=torch.float64)  # all positive, no negative
    labels[3] = (labels[3] > 0) * 0.5  # all positives share one label: sort error 0
    labels[4, :3] = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)  # tie in labels
    logits[4, :3] = 0.75  # ... and in scores
    labels[5] = 0.0
    labels[5, 7] = 0.9  # a single positive
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0, 1.0, 0.0], dtype=torch.float64)
    kw = dict(delta_rank=delta_rank, delta_sort=delta_sort)
    r, s, gr, gs = brute_force(logits, labels, weights, **kw)
    assert_matches(ours(logits, labels, weights, coeffs=(1.3, 0.6), **kw), (r, s, 1.3 * gr + 0.6 * gs))
    # the zero-weight group gets no gradient
    _, _, grad = ours(logits, labels, weights, **kw)
    assert torch.all(grad[6] == 0) and torch.all(grad[1] == 0)


@pytest.mark.parametrize("pos_thr", [0.0, 0.3, 0.6])
def test_matches_brute_force_pos_thr(pos_thr):
    logits, labels = make_groups(g=4, m=30, seed=5, frac_pos=0.8)
    r, s, gr, gs = brute_force(logits, labels, pos_thr=pos_thr)
    assert_matches(ours(logits, labels, pos_thr=pos_thr), (r, s, gr + gs))


def test_separate_gradients_per_output():
    logits, labels = make_groups(g=3, m=30, seed=9)
    _, _, gr, gs = brute_force(logits, labels)
    x = logits.clone().requires_grad_(True)
    rank, sort = spatial_rank_sort(x, labels)
    (g_rank,) = torch.autograd.grad(rank, x, retain_graph=True)
    (g_sort,) = torch.autograd.grad(sort, x)
    torch.testing.assert_close(g_rank, gr, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_sort, gs, atol=1e-12, rtol=0)
    assert g_rank.abs().sum() > 0 and g_sort.abs().sum() > 0


def test_realistic_heatmaps_match_brute_force():
    """Fast path vs brute force on MMPose MSRAHeatmap labels (M = 64*48, ~169 positives)."""
    logits, labels = heatmap_batch(n_inst=2, keypoints=4, seed=0)
    assert labels.shape == (8, 64 * 48)
    assert int((labels > 0).sum(1).max()) >= 100
    weights = torch.tensor([1, 1, 0, 1, 1, 0.5, 1, 1], dtype=torch.float64)
    r, s, gr, gs = brute_force(logits, labels, weights)
    assert_matches(ours(logits, labels, weights, coeffs=(1.0, 0.5)), (r, s, gr + 0.5 * gs), atol=1e-9)
    # float32 input: computed in float32 with float64 accumulations, close to the float64 truth
    r32, s32, g32 = ours(logits.float(), labels.float(), weights.float(), coeffs=(1.0, 0.5))
    assert r32.dtype == torch.float32 and g32.dtype == torch.float32
    assert_matches((r32, s32, g32), (r, s, gr + 0.5 * gs), atol=2e-5)


# --------------------------------------------------------------------------------------------
# Against RankSortLoss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delta", [0.5, 0.4, 0.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coupled_deltas_reproduce_ranksortloss(delta, seed):
    logits, labels = make_groups(g=3, m=60, seed=seed, ties=seed != 2)
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    rank, sort, grad = ours(logits, labels, weights, delta_rank=delta, delta_sort=delta)
    total = float(weights.sum())
    want_rank = want_sort = 0.0
    for g in range(3):
        r, s, gr = ranksort_reference(logits[g], labels[g], delta_rs=delta)
        want_rank += float(weights[g]) / total * float(r)
        want_sort += float(weights[g]) / total * float(s)
        torch.testing.assert_close(grad[g], float(weights[g]) / total * gr, atol=1e-12, rtol=0)
    assert float(rank) == pytest.approx(want_rank, abs=1e-12)
    assert float(sort) == pytest.approx(want_sort, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Instance Sort
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delta", [3.0, 0.5, 0.0])
def test_instance_sort_matches_brute_force(delta):
    gen = torch.Generator().manual_seed(4)
    scores = torch.round(torch.randn(9, 5, generator=gen, dtype=torch.float64) * 3) / 3
    ks = torch.round(torch.rand(9, 5, generator=gen, dtype=torch.float64) * 5) / 5  # ties, 0 and 1
    weights = (torch.rand(9, 5, generator=gen, dtype=torch.float64) > 0.25).double()
    weights[:, 3] = 0.0
    weights[0, 3] = 1.0  # a single valid instance: not averaged over
    weights[:, 4] *= 2.5  # magnitude only selects validity
    valid = (weights > 0).t()
    _, sort_t, _, g_t = brute_force(
        scores.t(), ks.t(), (valid.sum(1) >= 2).double(), delta_sort=delta, pos=valid
    )
    x = scores.clone().requires_grad_(True)
    loss = instance_sort(x, ks, weights, delta=delta)
    (grad,) = torch.autograd.grad(loss, x)
    loss = loss.detach()
    assert float(loss) == pytest.approx(sort_t, abs=1e-12)
    torch.testing.assert_close(grad, g_t.t(), atol=1e-12, rtol=0)
    assert float(loss) != 0.0


def test_instance_sort_none_weights_and_no_valid_column():
    scores, ks = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    x = scores.clone().requires_grad_(True)
    full = instance_sort(x, ks).detach()
    assert float(full) == pytest.approx(float(instance_sort(scores, ks, torch.ones(4, 3))))
    w = torch.zeros(4, 3)
    w[0] = 1.0  # one valid instance per column: nothing to sort
    loss = instance_sort(x, ks, w)
    (grad,) = torch.autograd.grad(loss, x)
    assert float(loss.detach()) == 0.0 and torch.all(grad == 0) and not torch.isnan(grad).any()


# --------------------------------------------------------------------------------------------
# Every hyperparameter matters
# --------------------------------------------------------------------------------------------
def _outputs(logits, labels, weights=None, **kw):
    rank, sort, grad = ours(logits, labels, weights, **kw)
    return torch.cat([rank.reshape(1), sort.reshape(1), grad.flatten()])


@pytest.mark.parametrize(
    "change",
    [dict(delta_rank=0.1), dict(delta_rank=0.0), dict(delta_sort=0.3), dict(delta_sort=0.0), dict(pos_thr=0.3)],
)
def test_each_hyperparameter_changes_the_output(change):
    logits, labels = make_groups(g=4, m=40, seed=2, ties=False)
    base = _outputs(logits, labels)
    assert not torch.allclose(base, _outputs(logits, labels, **change))


def test_weights_change_the_output():
    logits, labels = make_groups(g=4, m=40, seed=2, ties=False)
    base = _outputs(logits, labels)
    assert not torch.allclose(base, _outputs(logits, labels, torch.tensor([1.0, 3.0, 0.2, 1.0])))
    assert torch.allclose(base, _outputs(logits, labels, torch.full((4,), 2.5)))  # scale-free


def test_instance_sort_delta_and_weights_change_the_output():
    gen = torch.Generator().manual_seed(0)
    scores, ks = torch.randn(8, 3, generator=gen), torch.rand(8, 3, generator=gen)
    base = instance_sort(scores, ks)
    assert float(base) != pytest.approx(float(instance_sort(scores, ks, delta=0.5)))
    w = torch.ones(8, 3)
    w[:3] = 0
    assert float(base) != pytest.approx(float(instance_sort(scores, ks, w)))


# --------------------------------------------------------------------------------------------
# Validation and degenerate input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_logits_and_labels_raise(bad):
    logits, labels = make_groups(g=2, m=5)
    x = logits.clone()
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"`logits` contains 1 non-finite"):
        spatial_rank_sort(x, labels)
    y = labels.clone()
    y[0, 0] = bad
    with pytest.raises(ValueError, match=r"`labels` contains 1 non-finite"):
        spatial_rank_sort(logits, y)
    with pytest.raises(ValueError, match=r"`weights` contains 1 non-finite"):
        spatial_rank_sort(logits, labels, torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match=r"`scores` contains 1 non-finite"):
        instance_sort(x, labels)
    with pytest.raises(ValueError, match=r"`ks` contains 1 non-finite"):
        instance_sort(logits, y)


def test_shape_errors_print_both_shapes():
    logits, labels = make_groups(g=2, m=5)
    with pytest.raises(ValueError, match=r"`labels`.*\(2, 4\).*`?logits`? \(2, 5\)"):
        spatial_rank_sort(logits, labels[:, :4])
    with pytest.raises(ValueError, match=r"`weights` must have shape \(2,\).*\(2, 5\).*got \(3,\)"):
        spatial_rank_sort(logits, labels, torch.ones(3))
    with pytest.raises(ValueError, match=r"`logits` must be 2-D, got shape \(10,\)"):
        spatial_rank_sort(logits.flatten(), labels.flatten())
    with pytest.raises(ValueError, match=r"`ks`.*\(5, 2\).*scores.*\(2, 5\)"):
        instance_sort(logits, labels.t())
    with pytest.raises(ValueError, match=r"`weights` must have shape \(2, 5\).*got \(5, 2\)"):
        instance_sort(logits, labels, torch.ones(5, 2))
    with pytest.raises(ValueError, match=r"`scores` must be 2-D"):
        instance_sort(logits[None], labels[None])


@pytest.mark.parametrize("name", ["delta_rank", "delta_sort"])
@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf])
def test_bad_delta_raises(name, value):
    logits, labels = make_groups(g=2, m=5)
    with pytest.raises(ValueError, match=f"`{name}`"):
        spatial_rank_sort(logits, labels, **{name: value})


def test_bad_arguments_raise():
    logits, labels = make_groups(g=2, m=5)
    with pytest.raises(ValueError, match=r"The value of `delta` is -1.0, but must be"):
        instance_sort(logits, labels, delta=-1)
    with pytest.raises(ValueError, match=r"`weights` must be >= 0"):
        spatial_rank_sort(logits, labels, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"`weights` must be >= 0"):
        instance_sort(logits, labels, -torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"`pos_thr` must be a finite"):
        spatial_rank_sort(logits, labels, pos_thr=math.nan)
    with pytest.raises(TypeError, match=r"`delta_rank` must be a real number"):
        spatial_rank_sort(logits, labels, delta_rank="0.4")
    with pytest.raises(TypeError, match=r"`logits` must be a floating-point"):
        spatial_rank_sort(logits.long(), labels)
    with pytest.raises(TypeError, match=r"`labels` must be a torch.Tensor"):
        spatial_rank_sort(logits, labels.numpy())
    with pytest.raises(TypeError, match=r"`weights` must be a torch.Tensor or None"):
        spatial_rank_sort(logits, labels, [1.0, 1.0])


@pytest.mark.parametrize(
    "labels,weights",
    [
        (torch.zeros(3, 6), None),  # no positive anywhere
        (torch.ones(3, 6), torch.zeros(3)),  # all weights 0
        (torch.zeros(0, 6), None),  # no group
        (torch.zeros(3, 0), None),  # empty groups
    ],
)
def test_no_valid_group_gives_zero_loss_and_zero_grad(labels, weights):
    x = torch.randn(labels.shape, requires_grad=True)
    rank, sort = spatial_rank_sort(x, labels, weights)
    (grad,) = torch.autograd.grad(rank + sort, x)
    assert float(rank.detach()) == 0.0 and float(sort.detach()) == 0.0
    assert torch.all(grad == 0) and grad.shape == x.shape


def test_dtypes_and_no_grad():
    logits, labels = make_groups(g=3, m=20, seed=1)
    r64, s64 = spatial_rank_sort(logits, labels)
    assert r64.dtype == torch.float64 and not r64.requires_grad
    x = logits.half().requires_grad_(True)
    r16, s16 = spatial_rank_sort(x, labels.half())
    (r16 + s16).backward()
    assert r16.dtype == torch.float16 and x.grad.dtype == torch.float16
    with torch.no_grad():
        r, s = spatial_rank_sort(logits.clone().requires_grad_(True), labels)
    assert not r.requires_grad and float(r) == pytest.approx(float(r64))


@pytest.mark.parametrize("delta", [1e-30, 1e-300])
def test_delta_below_float_resolution_is_finite(delta):
    """q - d == q + d == q in floating point: approximate (documented), but never NaN."""
    logits, labels = make_groups(g=3, m=30, seed=4)
    rank, sort, grad = ours(logits, labels, delta_rank=delta, delta_sort=delta)
    assert 0.0 <= float(rank) <= 1.0 and math.isfinite(float(sort))
    assert torch.isfinite(grad).all()


def test_small_delta_matches_brute_force():
    logits, labels = make_groups(g=3, m=30, seed=4, ties=False)
    r, s, gr, gs = brute_force(logits, labels, delta_rank=1e-4, delta_sort=1e-4)
    assert_matches(ours(logits, labels, delta_rank=1e-4, delta_sort=1e-4), (r, s, gr + gs), atol=1e-8)
