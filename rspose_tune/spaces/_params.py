"""The loss hyperparameters' vocabulary: :data:`LOSS_PARAMS` (the one definition of the names, their
kinds, components and defaults), :data:`PARAM_NAMES`, :data:`COMPONENTS` and the helpers every module
reads them through. Imports nothing of the project but :mod:`rspose_tune.errors`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["COMPONENTS", "COMPONENT_LABELS", "LOSS_PARAMS", "PARAM_NAMES", "LossParam", "component_names",
           "fill_defaults", "is_off", "loss_param"]  # fmt: skip

@dataclass(frozen=True)
class LossParam:
    """One RSPose loss hyperparameter: the one definition every module reads.

    Attributes:
        name: Its name in presets, configs, Parquet columns, run specs and reports.
        kind: ``delta`` (a step smoothing, > 0 when searched), ``coeff`` (a component's
            coefficient, 0 = off) or ``threshold`` (in [0, 1): ``pos_thr``).
        component: ``rank``, ``sort`` or ``inst`` for a delta or coefficient (the two are off
            together); None for a parameter that belongs to no component.
        target: Where the MMPose config takes it: ``loss`` (a keyword of ``RSPoseLoss``,
            ``model.head.loss``) or ``head`` (of the RSPose head).
        default: The value of files, run specs, replay tables and presets written without it;
            None: it must always be given.
        label: Its name in the report's table.
    """

    name: str
    kind: str
    component: str | None
    target: str
    default: float | None = None
    label: str = ""


#: The RSPose loss hyperparameters: the six of Table E.8 (in its order), then the positive
#: threshold of Spatial Rank and Spatial Sort (default 0: every non-zero label, the paper's).
LOSS_PARAMS = (
    LossParam("delta_rank", "delta", "rank", "loss"),
    LossParam("coeff_rank", "coeff", "rank", "loss"),
    LossParam("delta_sort", "delta", "sort", "loss"),
    LossParam("coeff_sort", "coeff", "sort", "loss"),
    LossParam("delta_inst", "delta", "inst", "head"),
    LossParam("coeff_inst", "coeff", "inst", "head"),
    LossParam("pos_thr", "threshold", None, "loss", default=0.0, label="Pos. thr"),
)
#: Their names: the preset's searched loss hyperparameters, one Parquet column each.
PARAM_NAMES = tuple(p.name for p in LOSS_PARAMS)
#: The loss components; component ``c`` has ``delta_<c>`` and ``coeff_<c>``.
COMPONENTS = tuple(dict.fromkeys(p.component for p in LOSS_PARAMS if p.component))
_BY_NAME = MappingProxyType({p.name: p for p in LOSS_PARAMS})


def loss_param(name: str) -> LossParam:
    """The :class:`LossParam` called ``name`` (KeyError naming the valid names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a loss hyperparameter; valid: {list(PARAM_NAMES)}") from None


def component_names(component: str) -> tuple[str, str]:
    """``(delta, coeff)`` names of a component (``rank``, ``sort``, ``inst``)."""
    delta = next(p.name for p in LOSS_PARAMS if p.component == component and p.kind == "delta")
    coeff = next(p.name for p in LOSS_PARAMS if p.component == component and p.kind == "coeff")
    return delta, coeff


def is_off(coeff: Any) -> bool:
    """Whether a coefficient switches its component off: 0, None, or NaN (a Parquet null read
    into a float column). The one definition of "off"; everything else calls it."""
    return coeff is None or (isinstance(coeff, float) and math.isnan(coeff)) or coeff == 0


#: The report's name of each component (Table E.8's column heads), in :data:`COMPONENTS` order.
COMPONENT_LABELS = MappingProxyType({"rank": "S. Rank", "sort": "S. Sort", "inst": "Ins. Sort"})


def fill_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every parameter that has a default and is missing (or None) set to it.

    How settings written before a parameter existed (Parquet rows, run specs, replay tables,
    known-good entries) read: ``pos_thr`` absent means the default, 0. Other keys are kept.
    """
    out = dict(values)
    for p in LOSS_PARAMS:
        if p.default is not None and out.get(p.name) is None:
            out[p.name] = p.default
    return out

