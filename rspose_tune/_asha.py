"""The ASHA rungs of a budget, as Ray Tune's ``ASHAScheduler`` places them (no Ray import).

The search's scheduler is Ray's ``ASHAScheduler(time_attr="epoch", max_t, grace_period,
reduction_factor)`` with one bracket (:func:`rspose_tune._scheduler.build_scheduler`). Ray puts
that bracket's milestones at ``grace × rf^k`` for ``k < int(log(max_t / grace) / log(rf) + 1)``
(``ray/tune/schedulers/async_hyperband.py``, ``_Bracket``); a milestone at or above ``max_t``
never stops a trial. :func:`asha_rungs` is that formula, the one place the report, the
``--dry-run`` cost model and the plots read it from; ``tests/test_asha.py`` checks it against
the milestones of Ray's own scheduler.
"""

from __future__ import annotations

import math

__all__ = ["asha_rungs"]


def asha_rungs(max_epochs: int | None, grace_epochs: int | None, reduction_factor: float | None) -> list[int]:
    """The epochs where ASHA may stop a trial, ascending, below ``max_epochs`` (empty when the
    budget is unknown or has no rung)."""
    if not max_epochs or not grace_epochs or not reduction_factor or reduction_factor <= 1:
        return []
    levels = int(math.log(max_epochs / grace_epochs) / math.log(reduction_factor) + 1)
    rungs = [grace_epochs * reduction_factor**k for k in range(max(levels, 0))]
    return [int(r) if float(r).is_integer() else r for r in rungs if r < max_epochs]
