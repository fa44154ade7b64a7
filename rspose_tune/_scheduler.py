"""The trial scheduler of a search (:func:`build_scheduler`): Ray's ASHA on ``epoch``, or FIFO.

Ray is imported when a scheduler is built, not at import.
"""

from __future__ import annotations

__all__ = ["build_scheduler"]


def build_scheduler(kind: str, *, mode: str, max_epochs: int, grace_epochs: int, reduction_factor: int):
    """The trial scheduler of a search: Ray's ASHA on ``epoch`` (``kind="asha"``) or FIFO, every
    trial to the full budget (``kind="fifo"``). The live search and the offline replay both use it,
    so the replay's stop decisions are the live search's."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if kind == "fifo":
        return FIFOScheduler()
    if kind != "asha":
        raise ValueError(f"`kind` is {kind!r}, but must be 'asha' or 'fifo'.")
    return ASHAScheduler(metric="metric", mode=mode, time_attr="epoch", max_t=max_epochs,
                         grace_period=grace_epochs, reduction_factor=reduction_factor)
