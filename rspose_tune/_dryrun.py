"""``python -m rspose_tune.search --dry-run``: what a search would cost, without running anything.

Pure helpers (:func:`asha_levels`, :func:`search_epochs`) plus :func:`format_plan`. Nothing here
starts Ray, reads the dataset or writes a file.

The ASHA model (Ray's asynchronous successive halving, ``time_attr`` epochs): rungs at
``grace × rf^k`` below ``max_epochs`` (:func:`rspose_tune._asha.asha_rungs`). Every trial reaches the first rung; of the trials that
reach a rung, ideally ``1/rf`` are promoted to the next one, so about ``n / rf^k`` trials reach
rung ``k`` and ``n / rf^K`` the full budget (at least one: the first trial to reach a rung is
always promoted, there is nothing to compare it with yet). **Expected epochs** =
``Σ_k n_k × (r_k − r_{k−1})`` over the levels (rungs, then the full budget). **Worst case**: every
trial promoted (each new trial better than all before it), ``n × max_epochs``. Asynchronous
promotion lets early trials through more easily, so real searches land between the two
(the demo's 8-trial benchmark: 32 epochs against 30 expected, 80 worst case).
"""

from __future__ import annotations

from dataclasses import dataclass

from rspose_tune._asha import asha_rungs

__all__ = ["DryRunPlan", "asha_levels", "format_plan", "search_epochs"]


def asha_levels(num_trials: int, max_epochs: int, grace: int, reduction_factor: int,
                scheduler: str = "asha") -> list[tuple[int, float]]:
    """``[(epoch, expected trials reaching it), ...]``: each ASHA rung, then ``max_epochs``.

    ``scheduler="fifo"``: one level, every trial runs ``max_epochs``.
    """
    if num_trials < 1 or max_epochs < 1:
        raise ValueError(f"`num_trials` ({num_trials}) and `max_epochs` ({max_epochs}) must be >= 1.")
    if scheduler == "fifo":
        return [(max_epochs, float(num_trials))]
    if reduction_factor < 2 or grace < 1:
        raise ValueError(f"`reduction_factor` is {reduction_factor} and `grace` {grace}, but must be >= 2 and >= 1.")
    rungs = asha_rungs(max_epochs, grace, reduction_factor)  # where Ray's ASHAScheduler puts them
    return [(epoch, min(float(num_trials), max(1.0, num_trials / reduction_factor**k)))
            for k, epoch in enumerate([*rungs, max_epochs])]


def search_epochs(levels: list[tuple[int, float]], num_trials: int, max_epochs: int) -> tuple[float, int]:
    """(expected, worst-case) trial-epochs of the search for :func:`asha_levels` ``levels``."""
    expected, previous = 0.0, 0
    for epoch, n in levels:
        expected += n * (epoch - previous)
        previous = epoch
    return expected, num_trials * max_epochs


@dataclass(frozen=True)
class DryRunPlan:
    preset: str
    source: str
    num_trials: int
    max_epochs: int
    grace: int
    reduction_factor: int
    scheduler: str
    sampler: str
    gpus: float
    cpus: float
    workers: int
    confirm_top: int
    confirm_seeds: tuple[int, ...]
    baseline_seeds: tuple[int, ...]
    epoch_gpu_hours: float | None
    cost_source: str
    warm_start: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()  # (name, ParamSpec.describe()) per loss hyperparameter
    known_good: tuple[dict, ...] = ()  # the settings tried first


def _hours(epochs: float, per_epoch: float | None) -> str:
    return "? GPU-h" if per_epoch is None else f"{epochs * per_epoch:,.1f} GPU-h"


def format_plan(plan: DryRunPlan) -> str:
    """The text ``--dry-run`` prints."""
    p = plan
    levels = asha_levels(p.num_trials, p.max_epochs, p.grace, p.reduction_factor, p.scheduler)
    expected, worst = search_epochs(levels, p.num_trials, p.max_epochs)
    confirm = p.confirm_top * len(p.confirm_seeds) * p.max_epochs
    baseline = len(p.baseline_seeds) * p.max_epochs
    per = p.epoch_gpu_hours
    lines = [
        f"dry run: preset {p.preset!r} ({p.source}); nothing was started, read or written.",
        f"search: {p.num_trials} trials, {p.sampler} sampler, {p.scheduler} scheduler, budget {p.max_epochs} epochs"
        + (f", ASHA grace {p.grace}, reduction factor {p.reduction_factor}" if p.scheduler == "asha" else ""),
        f"per trial: {p.gpus:g} GPU + {p.cpus:g} CPU on {p.workers} rank(s)",
        "ASHA levels (epoch: expected trials reaching it, ideal 1/rf promotion):" if p.scheduler == "asha"
        else "every trial runs the full budget (fifo):",
    ]
    space = ["loss hyperparameters: " + "; ".join(f"{name} {text}" for name, text in p.params)] if p.params else []
    for i, setting in enumerate(p.known_good):
        shown = ", ".join(f"{k}={'off' if v is None else f'{v:g}'}" for k, v in setting.items())
        space.append(f"known-good {i} (tried first): {shown}")
    lines[3:3] = space
    for i, (epoch, n) in enumerate(levels):
        kind = "full budget" if i == len(levels) - 1 else f"rung {i}"
        lines.append(f"  {kind:>11} at epoch {epoch:>4}: ~{n:.1f} trial(s)")
    lines.append(f"search epochs: expected ~{expected:,.0f}, worst case {worst:,} (every trial to the full budget)")
    if p.confirm_top:
        lines.append(f"confirm stage: top {p.confirm_top} setting(s) x seeds {list(p.confirm_seeds)} x {p.max_epochs} "
                     f"epochs = {confirm:,} epochs (never pruned)")
    else:
        lines.append("confirm stage: off")
    if p.baseline_seeds:
        lines.append(f"baseline (stock loss): seeds {list(p.baseline_seeds)} x {p.max_epochs} epochs = {baseline:,} epochs")
    else:
        lines.append("baseline: off")
    for source in p.warm_start:
        lines.append(f"warm start: {source}")
    if per is None:
        lines.append(f"GPU-hours: unknown: {p.cost_source}")
    else:
        lines.append(f"GPU-hours at {per:g} GPU-h per trial-epoch ({p.cost_source}):")
        lines.append(f"  search expected {_hours(expected, per)}, worst case {_hours(worst, per)}; confirm "
                     f"{_hours(confirm, per)}; baseline {_hours(baseline, per)}")
        lines.append(f"  total expected {_hours(expected + confirm + baseline, per)}, worst case "
                     f"{_hours(worst + confirm + baseline, per)}")
    lines.extend(f"note: {n}" for n in p.notes)
    return "\n".join(lines) + "\n"
