"""The ASHA budget rule (:func:`budget_problem`): the one check of a preset's ``budget`` and of the
search's ``--max-epochs``/``--grace-epochs``/``--reduction-factor``."""

from __future__ import annotations

__all__ = ["budget_problem"]


def budget_problem(max_epochs: int, grace_epochs: int, reduction_factor: int, val_interval: int) -> tuple[str, str] | None:
    """The first rule an ASHA budget breaks, as ``(field, rule)``, else None: the one check of a
    preset's ``budget`` and of the search's ``--max-epochs``/``--grace-epochs``/``--reduction-factor``
    (integers >= 1 are checked by the caller)."""
    if reduction_factor < 2:
        return "reduction_factor", f"must be >= 2, got {reduction_factor}"
    if grace_epochs > max_epochs:
        return "grace_epochs", f"must be <= max_epochs ({max_epochs}), got {grace_epochs}"
    if val_interval > max_epochs:
        return "val_interval", f"must be <= max_epochs ({max_epochs}), got {val_interval}"
    if grace_epochs % val_interval:
        return "grace_epochs", (f"must be a multiple of val_interval ({val_interval}) so the first ASHA rung has a "
                                f"validation result, got {grace_epochs}")
    return None
