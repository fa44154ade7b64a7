"""The search space as Optuna sees it: define-by-run sampling of one config (on/off switches, fixed
values) and the Optuna parameters that reproduce a known-good or warm-start setting."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from rspose_tune.spaces import (
    COMPONENTS,
    LOSS_PARAMS,
    PARAM_NAMES,
    LossSetting,
    ParamSpec,
    component_names,
    switch_name,
)


def spec_json(spec: ParamSpec) -> dict[str, Any]:
    """A spec as the saved searcher state writes it (all five keys; ``low`` None: fixed)."""
    return {"low": spec.low, "high": spec.high, "log": spec.log, "fixed": spec.fixed, "allow_off": spec.allow_off}


def _known_good_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, but must be a finite number.")
    return float(value)


def _component_mode(coeff: ParamSpec) -> str:
    """'off' (always), 'switch' (sampled on/off) or 'on' (always) for a component's coefficient."""
    if coeff.is_fixed and coeff.fixed == 0:
        return "off"
    if coeff.allow_off:
        return "switch"
    return "on"


def sample(trial: optuna.Trial, dims: Mapping[str, ParamSpec]) -> dict[str, float | None]:
    """Define-by-run sampling of one config (every key; off: coeff 0.0, delta None).

    Components first (in :data:`COMPONENTS` order), then the parameters of no component, so a
    space whose extra parameters are fixed asks Optuna exactly what it asked before they existed.
    """
    for c in COMPONENTS:
        delta, coeff = (dims[n] for n in component_names(c))
        mode = _component_mode(coeff)
        on = mode == "on" or (mode == "switch" and trial.suggest_categorical(switch_name(c), (True, False)))
        if on and _suggest(trial, coeff) != 0.0:  # coeff 0 (a range from 0): off
            _suggest(trial, delta)
    for p in LOSS_PARAMS:
        if p.component is None:
            _suggest(trial, dims[p.name])
    return dict(LossSetting.from_trial(trial.params, dims))


def _suggest(trial: optuna.Trial, dim: ParamSpec) -> float | None:
    if dim.is_fixed:
        return dim.fixed
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)  # type: ignore[arg-type]


def known_good_params(entry: Mapping[str, Any], i: int, dims: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Optuna parameters (switches and sampled values) that reproduce a known-good setting.

    ``None`` or 0 for a coefficient switches the component off (its delta is then ignored);
    a missing key is left to the sampler; fixed parameters must match their fixed value.
    """
    where = f"`known_good[{i}]`"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping of {list(PARAM_NAMES)}, got {entry!r}.")
    unknown = [k for k in entry if k not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"{where} has unknown parameters {unknown}; valid names are {list(PARAM_NAMES)}.")
    params: dict[str, Any] = {}

    def take(dim: ParamSpec) -> None:
        """The entry's value of ``dim``, checked against it; kept when the searcher samples ``dim``."""
        value = _known_good_value(entry[dim.name], f"{where}[{dim.name!r}]")
        if not dim.contains(value):
            rule = f"fixed at {dim.fixed!r}" if dim.is_fixed else f"in [{dim.low}, {dim.high}]"
            raise ValueError(f"{where}[{dim.name!r}] is {value!r}, but must be {rule}.")
        if not dim.is_fixed:
            params[dim.name] = value

    for p in LOSS_PARAMS:
        if p.component is None and p.name in entry:
            take(dims[p.name])
    for c in COMPONENTS:
        delta, coeff = (dims[n] for n in component_names(c))
        mode = _component_mode(coeff)
        if coeff.name in entry and entry[coeff.name] in (None, 0):
            if mode == "on" and not coeff.is_fixed and coeff.low == 0:
                params[coeff.name] = 0.0  # a range starting at 0 contains "off"
            elif mode == "on":
                raise ValueError(
                    f"{where} switches the {c} component off ({coeff.name}={entry[coeff.name]!r}), but "
                    f"the space does not allow it: give `{coeff.name}` allow_off, a fixed 0 or low 0."
                )
            elif mode == "switch":
                params[switch_name(c)] = False
            continue
        present = [d for d in (delta, coeff) if d.name in entry]
        if not present:
            continue
        if mode == "off":
            raise ValueError(
                f"{where} sets the {c} component on ({', '.join(f'{d.name}={entry[d.name]!r}' for d in present)}), "
                f"but the space fixes `{coeff.name}` at 0 (always off)."
            )
        if mode == "switch":
            params[switch_name(c)] = True
        for dim in present:
            take(dim)
    return params


def warm_entry(entry: Any, i: int) -> dict[str, Any]:
    where = f"`warm_start[{i}]`"
    if not isinstance(entry, Mapping) or set(entry) != {"params", "source"}:
        raise ValueError(f"{where} must be a mapping with keys 'params' and 'source', got {entry!r}.")
    if not isinstance(entry["source"], str) or not isinstance(entry["params"], Mapping):
        raise ValueError(f"{where}: 'source' must be a str and 'params' a mapping, got {entry!r}.")
    return {"params": dict(entry["params"]), "source": entry["source"]}

