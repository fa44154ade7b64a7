"""Small numeric helpers shared by the results, searcher and report modules."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` if it is a finite number (not a bool), else None (NaN, inf, text, None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
