"""Search spaces as validated data: ``search_spaces/<preset>.yaml`` parsed into typed presets.

A preset names everything one search needs besides the searcher's own settings (base config,
dataset, metric, the range of each loss hyperparameter, known-good settings, budget, resources,
weights). :func:`load_preset` validates a file completely with one pydantic v2 model,
:class:`PresetFile`: the YAML schema's one home (``docs/preset.schema.json`` is its JSON schema;
docs/real_backbone.md, "Presets", says how to write one). Modules, bottom up:

- ``_params``: the loss hyperparameters' vocabulary (:data:`LOSS_PARAMS`, :data:`PARAM_NAMES`,
  :data:`COMPONENTS`) and :class:`LossSetting`; imports nothing of the project but ``errors``;
- ``_budget``: the ASHA budget rule (:func:`budget_problem`);
- ``_presets``: the frozen dataclasses everything reads (:class:`Preset`, :class:`ParamSpec`, ...);
- ``_models``: the file's pydantic models, their rules and messages (:func:`validate_space`);
- ``_loading``: finding, reading and overriding presets (:func:`load_preset`).
"""

from __future__ import annotations

from rspose_tune.spaces._budget import budget_problem
from rspose_tune.spaces._loading import _UniqueKeyLoader, list_presets, load_preset, parse_preset
from rspose_tune.spaces._models import DATASETS, PresetFile, preset_json_schema, validate_space
from rspose_tune.spaces._params import (
    COMPONENT_LABELS,
    COMPONENTS,
    LOSS_PARAMS,
    PARAM_DEFAULTS,
    PARAM_NAMES,
    LossParam,
    LossSetting,
    LossSettingError,
    component_names,
    fill_defaults,
    is_off,
    loss_param,
    switch_name,
)
from rspose_tune.spaces._presets import (
    ENV_DATA_ROOT,
    ENV_WEIGHTS,
    Budget,
    Confirm,
    Cost,
    DataSpec,
    MissingDataError,
    ParamSpec,
    Preset,
    Resources,
    SearchSpaceError,
)

__all__ = [
    "DATASETS",
    "ENV_DATA_ROOT",
    "ENV_WEIGHTS",
    "COMPONENTS",
    "LOSS_PARAMS",
    "PARAM_NAMES",
    "Budget",
    "Confirm",
    "Cost",
    "DataSpec",
    "MissingDataError",
    "ParamSpec",
    "Preset",
    "Resources",
    "SearchSpaceError",
    "LossParam",
    "LossSetting",
    "LossSettingError",
    "PARAM_DEFAULTS",
    "budget_problem",
    "component_names",
    "is_off",
    "COMPONENT_LABELS",
    "fill_defaults",
    "list_presets",
    "load_preset",
    "loss_param",
    "parse_preset",
    "switch_name",
    "validate_space",
]

# Pickles (a run's ``tuner.pkl``, a searcher's state) name these classes ``rspose_tune.spaces.<Class>``,
# as when this package was one module: new ones keep that name, so a later move inside the package
# cannot break them (old ones load through the re-exports above either way).
for _cls in (LossParam, LossSetting, LossSettingError, ParamSpec, Budget, Resources, Cost, Confirm, DataSpec, Preset, SearchSpaceError,
             MissingDataError):
    _cls.__module__ = __name__
del _cls
