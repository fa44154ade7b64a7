"""The loss hyperparameters' vocabulary: :data:`LOSS_PARAMS` (the one definition of the names, their
kinds, components, defaults and value rules), :data:`PARAM_NAMES`, :data:`COMPONENTS`, and
:class:`LossSetting`, one setting as a frozen value. Imports nothing of the project but
:mod:`rspose_tune.errors`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from rspose_tune.errors import RSPoseTuneError

__all__ = ["COMPONENTS", "COMPONENT_LABELS", "LOSS_PARAMS", "PARAM_DEFAULTS", "PARAM_NAMES", "LossParam",
           "LossSetting", "LossSettingError", "component_names", "fill_defaults", "is_off", "loss_param",
           "switch_name"]


class LossSettingError(RSPoseTuneError, ValueError):
    """A loss setting breaks a value rule (:meth:`LossParam.problem`); the message names the parameter."""


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

    def problem(self, value: Any) -> str | None:
        """The rule ``value`` breaks, else None: a finite number >= 0, and a threshold (``pos_thr``)
        < 1. The one check of these rules outside the pure-torch losses; callers add where and ``got``."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return "must be a number"
        if not math.isfinite(value) or value < 0:
            return "must be finite and >= 0"
        if self.kind == "threshold" and value >= 1:
            return "must be < 1 (labels peak at 1, so nothing would be a positive)"
        return None


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


#: The parameters that have a default, and it: what a setting, file, run spec, replay table or preset
#: written without one of them (or with None) reads (``pos_thr``: 0, every non-zero label).
PARAM_DEFAULTS = MappingProxyType({p.name: p.default for p in LOSS_PARAMS if p.default is not None})


def fill_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every parameter of :data:`PARAM_DEFAULTS` that is missing (or None) set to
    its default. Other keys are kept; :class:`LossSetting` reads a whole setting."""
    out = dict(values)
    for name, default in PARAM_DEFAULTS.items():
        if out.get(name) is None:
            out[name] = default
    return out


def switch_name(component: str) -> str:
    """The Optuna parameter that switches ``component`` on or off (``rank_on``) when it may be off."""
    return f"{component}_on"


@dataclass(frozen=True, repr=False)
class LossSetting(Mapping):
    """One setting of the loss hyperparameters: a frozen mapping of :data:`PARAM_NAMES`, in order.

    Whatever it is built from (:meth:`from_dict`, :meth:`from_row`, :meth:`from_trial`), it reads
    the same: a coefficient of None or 0 (NaN in a row) switches its component off, stored as
    coefficient 0.0 and delta None; a parameter with a default (``pos_thr``) that is absent or None
    is its default; every other value is a float keeping :meth:`LossParam.problem`'s rules. An on
    component's delta is None only where the source did not give it.

    Raises:
        LossSettingError: ``\`pos_thr\` must be < 1 (labels peak at 1, ...), got 1.5``.
    """

    vector: tuple[Any, ...]  # the values in PARAM_NAMES order; read them by name

    def __post_init__(self) -> None:
        if len(self.vector) != len(PARAM_NAMES):
            raise LossSettingError(f"a loss setting has {len(PARAM_NAMES)} values {list(PARAM_NAMES)}, "
                                   f"got {len(self.vector)}: {self.vector!r}")
        values = dict(zip(PARAM_NAMES, self.vector))
        for p in LOSS_PARAMS:
            value = values[p.name]
            if value is not None:
                problem = p.problem(value)
                if problem:
                    raise LossSettingError(f"`{p.name}` {problem}, got {value!r}")
                values[p.name] = float(value)
        for component in COMPONENTS:
            delta, coeff = component_names(component)
            if is_off(values[coeff]):
                values[coeff], values[delta] = 0.0, None
        values = fill_defaults(values)
        object.__setattr__(self, "vector", tuple(values[n] for n in PARAM_NAMES))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LossSetting:
        """From a mapping of parameter names: a dict, a trial's config, a run spec's known-good entry
        or warm-start ``params`` (written before ``pos_thr`` existed: its default). Only the names of
        :data:`PARAM_NAMES` are read (a config's ``stage``, ``seed`` are not); NaN is refused."""
        return cls(tuple(values.get(name) for name in PARAM_NAMES))

    @classmethod
    def from_row(cls, row: Any) -> LossSetting:
        """From a Parquet row (a pandas ``Series`` or a record dict): a null (NaN, None, ``pd.NA``) or
        missing column is None, so an off component and a file without ``pos_thr`` read as above."""
        get = row.get
        return cls(tuple(None if _is_null(get(name)) else get(name) for name in PARAM_NAMES))

    @classmethod
    def from_trial(cls, params: Mapping[str, Any], space: Mapping[str, Any]) -> LossSetting:
        """From an Optuna trial's parameters (``FrozenTrial.params``: the sampled values and each
        switch :func:`switch_name`) and the space they were sampled from (a ``ParamSpec`` per name:
        its fixed values are not among them). What the searcher's sampling gives the trial."""
        def value(name: str) -> Any:
            spec = space[name]
            return spec.fixed if spec.is_fixed else params.get(name)

        values: dict[str, Any] = {}
        for component in COMPONENTS:
            delta, coeff = component_names(component)
            on = params.get(switch_name(component), True)
            values[coeff], values[delta] = (value(coeff), value(delta)) if on else (0.0, None)
        for p in LOSS_PARAMS:
            if p.component is None:
                values[p.name] = value(p.name)
        return cls.from_dict(values)

    def __getitem__(self, name: str) -> float | None:
        try:
            return self.vector[_INDEX[name]]
        except KeyError:
            raise KeyError(f"{name!r} is not a loss hyperparameter; valid: {list(PARAM_NAMES)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(PARAM_NAMES)

    def __len__(self) -> int:
        return len(PARAM_NAMES)

    def __repr__(self) -> str:
        return f"LossSetting({', '.join(f'{n}={v!r}' for n, v in self.items())})"

    def is_on(self, component: str) -> bool:
        """Whether ``component`` (``rank``, ``sort``, ``inst``) is on (its coefficient is not 0)."""
        return self[component_names(component)[1]] != 0

    def as_row(self) -> dict[str, float | None]:
        """As a Parquet row stores it: an off component's coefficient is null too."""
        off = {n for c in COMPONENTS if not self.is_on(c) for n in component_names(c)}
        return {n: None if n in off else v for n, v in self.items()}


_INDEX = MappingProxyType({name: i for i, name in enumerate(PARAM_NAMES)})


def _is_null(value: Any) -> bool:
    """A Parquet null as pandas reads it: None, NaN (a float column) or ``pd.NA`` (a nullable one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    try:
        return bool(value != value)  # NaN of another float type; pd.NA raises
    except TypeError:
        return True

