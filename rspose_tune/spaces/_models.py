"""The preset file's schema: one pydantic v2 model, :class:`PresetFile` (its JSON schema is
``docs/preset.schema.json``), its rules and their messages; :func:`validate_space` checks a search space
alone with the same rules. A pydantic error becomes one :class:`SearchSpaceError` naming the file, the
key path (``params.delta_rank.low``) and the broken rule."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rspose_tune.spaces._budget import budget_problem
from rspose_tune.spaces._params import COMPONENTS, LOSS_PARAMS, PARAM_NAMES, LossParam, component_names, loss_param
from rspose_tune.spaces._presets import ParamSpec, SearchSpaceError

__all__ = ["DATASETS", "BudgetModel", "ConfirmModel", "CostModel", "DataModel", "FixedModel", "KnownGoodModel",
           "ParamsModel", "PresetFile", "RangeModel", "ResourcesModel", "preset_json_schema", "validate_space"]

_COMPONENTS = tuple((c, *component_names(c)) for c in COMPONENTS)

#: Supported ``dataset`` values and the metrics each one's evaluator reports.
DATASETS = ("coco", "crowdpose", "mpii", "coco-format")
_METRIC_RULES = {
    "coco": ("starts with 'coco/' (CocoMetric, e.g. 'coco/AP')", lambda m: m.startswith("coco/")),
    "coco-format": ("starts with 'coco/' (CocoMetric, e.g. 'coco/AP')", lambda m: m.startswith("coco/")),
    "crowdpose": (
        "starts with 'crowdpose/' (CocoMetric with prefix 'crowdpose', e.g. 'crowdpose/AP')",
        lambda m: m.startswith("crowdpose/"),
    ),
    "mpii": ("is 'PCK' or 'PCK@0.1' (MpiiPCKAccuracy)", lambda m: m in ("PCK", "PCK@0.1")),
}
_GENERATORS = ("demo",)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _rule(kind: str, message: str, at: str = "", **ctx: Any) -> PydanticCustomError:
    """A broken rule; ``at``: the key below the failing field/model the message is about."""
    # pydantic fills ``{name}`` from the context only for the context's own keys; ``at`` is never in a message
    return PydanticCustomError(kind, message, {"at": at, **ctx})


class _Section(BaseModel):
    """A YAML mapping: unknown keys and missing required keys are refused, in our words."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _rule("mapping", f"must be a mapping, got {_show(value)}")
        valid = list(cls.model_fields)
        unknown = [k for k in value if k not in cls.model_fields]
        if unknown:
            raise _rule("unknown_keys", f"has unknown key(s) {unknown}; valid keys: {valid}")
        missing = [k for k, f in cls.model_fields.items() if f.is_required() and k not in value]
        if missing:
            raise _rule("missing_keys", f"is missing required key(s) {missing}")
        return value


def _path_string(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise _rule("path", f"must be a non-empty path string, got {_show(value)}")
    return value


_NonNegative = Annotated[float, Field(ge=0)]
_Text = Annotated[str, Field(min_length=1)]
_Path = Annotated[str, BeforeValidator(_path_string)]


class RangeModel(_Section):
    """A searched range ``{low, high, log, allow_off}`` of one loss hyperparameter."""

    low: _NonNegative
    high: _NonNegative
    log: bool = False
    allow_off: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> RangeModel:
        if self.low >= self.high:  # the searcher's rule too: one value is {fixed: X}
            raise _rule("range", f"must have low < high (for a single value write {{fixed: {self.low:g}}}), "
                                 f"got low={self.low:g}, high={self.high:g}")
        if self.log and self.low <= 0:
            raise _rule("range", f"must be > 0 with log: true, got {self.low:g}", "low")
        return self


class FixedModel(_Section):
    """A fixed value ``{fixed}`` (null: an off component's delta)."""

    fixed: Optional[_NonNegative]
    allow_off: bool = False

    @model_validator(mode="after")
    def _not_off(self) -> FixedModel:
        if self.allow_off:
            raise _rule("fixed", "only applies to a range; a fixed coefficient of 0 is off", "allow_off")
        return self


def _param_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return "<fixed>" if "fixed" in value else "<range>"


_ParamModel = Annotated[
    Union[Annotated[FixedModel, Tag("<fixed>")], Annotated[RangeModel, Tag("<range>")]],
    Discriminator(_param_kind, custom_error_type="param_spec",
                  custom_error_message="must be a mapping {low, high, log} or {fixed}"),
]


class _ParamsBase(_Section):
    @field_validator("*", mode="after")
    @classmethod
    def _kind_rules(cls, spec: Any, info: ValidationInfo) -> Any:
        param = loss_param(info.field_name)
        if spec is None:
            return spec
        if isinstance(spec, FixedModel):
            if spec.fixed is None and param.kind != "delta":
                rule = "0 switches the component off" if param.kind == "coeff" else "null is only for an off delta"
                raise _rule("param", f"must be a number ({rule}), got None", "fixed")
            _threshold_rule(param, spec.fixed, "fixed")
            return spec
        _threshold_rule(param, spec.high, "high")
        if spec.allow_off and param.kind != "coeff":
            where = (f"put it on `params.{component_names(param.component)[1]}`" if param.component
                     else f"`{param.name}` belongs to no component and is never off")
            raise _rule("param", f"only applies to coefficients (a component is off when its coeff_* is 0); {where}",
                        "allow_off")
        if param.kind == "delta" and spec.low == 0:
            raise _rule("param", f"must be > 0 for a delta (the margin of a ranking loss), got {spec.low:g}", "low")
        return spec


def _threshold_rule(param: LossParam, value: float | None, at: str) -> None:
    """The parameter's own value rule (:meth:`LossParam.problem`: ``pos_thr`` < 1; the fields' types
    already hold a finite number >= 0)."""
    problem = None if value is None else param.problem(value)
    if problem:
        raise _rule("param", f"{problem}, got {value:g}", at)


#: ``params``: one entry per loss hyperparameter; those with a default may be left out.
ParamsModel = create_model(
    "ParamsModel", __base__=_ParamsBase,
    **{p.name: (_ParamModel, ...) if p.default is None else (Optional[_ParamModel], None) for p in LOSS_PARAMS},
)  # type: ignore[call-overload]

#: One ``known_good`` entry: every loss hyperparameter (null/0 coefficient = off; null delta of it).
KnownGoodModel = create_model(
    "KnownGoodModel", __base__=_Section,
    **{p.name: (Optional[_NonNegative], ...) if p.default is None else (Optional[_NonNegative], None)
       for p in LOSS_PARAMS},
)  # type: ignore[call-overload]


class BudgetModel(_Section):
    max_epochs: Annotated[int, Field(ge=1)]
    grace_epochs: Annotated[int, Field(ge=1)]
    reduction_factor: Annotated[int, Field(ge=2)]
    val_interval: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _asha(self) -> BudgetModel:
        problem = budget_problem(self.max_epochs, self.grace_epochs, self.reduction_factor, self.val_interval)
        if problem is not None:
            raise _rule("budget", problem[1], problem[0])
        return self


class ResourcesModel(_Section):
    gpus: _NonNegative
    cpus: Annotated[float, Field(gt=0)]
    workers: Optional[Annotated[int, Field(ge=1)]] = None


class DataModel(_Section):
    root: _Path
    train_ann: _Text
    val_ann: _Text
    train_img: _Text
    val_img: _Text
    bbox_file: Optional[_Text] = None
    headbox_file: Optional[_Text] = None
    generated: Optional[Literal[_GENERATORS]] = None

    @field_validator("train_ann", "val_ann")
    @classmethod
    def _json(cls, value: str) -> str:
        if not value.endswith(".json"):
            raise _rule("annotation", f"must be a COCO-format .json annotation file, got {value!r}")
        return value


class CostModel(_Section):
    epoch_gpu_hours: Optional[_NonNegative]
    source: _Text


class ConfirmModel(_Section):
    top: Annotated[int, Field(ge=0)]
    seeds: Annotated[int, Field(ge=0)]
    baseline: bool

    @model_validator(mode="after")
    def _seeds(self) -> ConfirmModel:
        if self.top > 0 and self.seeds < 2:
            raise _rule("confirm", f"must be >= 2 when confirm.top > 0 (a 95 % interval needs two seeds), "
                                   f"got {self.seeds}", "seeds")
        return self


class PresetFile(_Section):
    """The YAML schema of a preset (``search_spaces/<name>.yaml``): its one home; unknown keys are errors.

    ``docs/preset.schema.json`` is this model's JSON schema (:func:`preset_json_schema`).
    """

    description: str = ""
    base_config: _Text
    dataset: Literal[DATASETS]
    metric: _Text
    mode: Literal["max", "min"]
    params: ParamsModel  # type: ignore[valid-type]
    known_good: list[KnownGoodModel] = []  # type: ignore[valid-type]
    budget: BudgetModel
    resources: ResourcesModel
    data: DataModel
    weights: Optional[_Path]
    cost: Optional[CostModel] = None
    confirm: Optional[ConfirmModel] = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str, info: ValidationInfo) -> str:
        dataset = info.data.get("dataset")
        if dataset in _METRIC_RULES:
            rule, ok = _METRIC_RULES[dataset]
            if not ok(metric):
                raise _rule("metric", f"for dataset {dataset!r} must be a metric that {rule}, got {metric!r}")
        return metric

    @model_validator(mode="after")
    def _whole(self) -> PresetFile:
        headbox = self.data.headbox_file
        if self.dataset == "mpii" and headbox is None:
            raise _rule("data", "is required for dataset 'mpii' (mpii_gt_val.mat, for PCKh)", "data.headbox_file")
        if headbox is not None and self.dataset != "mpii":
            raise _rule("data", f"only applies to dataset 'mpii', not {self.dataset!r}", "data.headbox_file")
        specs = self.param_specs()
        _component_rules(specs)
        for i, entry in enumerate(self.known_good):
            _known_good_rules(entry, i, specs)
        return self

    def param_specs(self) -> dict[str, ParamSpec]:
        """``params`` as :class:`ParamSpec` s, in :data:`PARAM_NAMES` order (omitted: fixed at the default)."""
        return _param_specs(self.params)


def _param_specs(params: Any) -> dict[str, ParamSpec]:
    out = {}
    for p in LOSS_PARAMS:
        spec = getattr(params, p.name)
        if spec is None:
            out[p.name] = ParamSpec(name=p.name, fixed=p.default)
        elif isinstance(spec, FixedModel):
            out[p.name] = ParamSpec(name=p.name, fixed=spec.fixed)
        else:
            out[p.name] = ParamSpec(name=p.name, low=spec.low, high=spec.high, log=spec.log, allow_off=spec.allow_off)
    return out


class _SpaceModel(_Section):
    """A search space alone: ``params`` with the rules that tie its entries together."""

    params: ParamsModel  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _components(self) -> _SpaceModel:
        _component_rules(_param_specs(self.params))
        return self


#: A spec's keys as :class:`ParamSpec` (and a saved searcher state, a replay table's metadata) writes them.
_SPEC_KEYS = ("low", "high", "log", "fixed", "allow_off")
#: The value of each key that says nothing: a saved spec writes all five, a YAML spec only its form's.
_SPEC_UNSET = {"low": None, "high": None, "log": False, "allow_off": False}


def _spec_input(name: str, spec: Any) -> Any:
    """One spec as the preset's ``params.<name>`` entry: a range ``{low, high, log, allow_off}`` or
    ``{fixed}``. ``spec`` is such a mapping, a mapping of all five :data:`_SPEC_KEYS` (a saved
    space; a serialised :class:`ParamSpec` also has its ``name``) or an object with them as
    attributes (:class:`ParamSpec`); anything else is passed on for the model to refuse."""
    if isinstance(spec, Mapping):
        given = dict(spec)
        if given.get("name") == name:
            del given["name"]
    elif all(hasattr(spec, key) for key in ("low", "high", "fixed")):
        given = {key: getattr(spec, key) for key in _SPEC_KEYS if hasattr(spec, key)}
    else:
        return spec
    if "low" not in given and "high" not in given:
        return given  # a preset's form
    # all five keys: drop those the spec's form leaves unset (a range's fixed value, a fixed value's bounds)
    ranged = given.get("low") is not None or given.get("high") is not None
    unset = {**_SPEC_UNSET, **({"fixed": None} if ranged else {})}
    return {key: value for key, value in given.items() if not (key in unset and value is unset[key])}


def validate_space(space: Any, *, source: str = "search space") -> dict[str, ParamSpec]:
    """Validate a search space with the preset's rules (:class:`PresetFile`'s ``params``) and return
    its :class:`ParamSpec` s in :data:`PARAM_NAMES` order (one with a default left out: fixed at it).

    ``space`` maps each name to a spec: a preset's ``{low, high, log, allow_off}`` or ``{fixed}``,
    all five keys as a saved searcher state or a replay table's metadata writes them (``low``
    None: fixed), or a :class:`ParamSpec`. How :class:`rspose_tune.searcher.PruningAwareOptunaSearch`
    reads its space: presets and the searcher have one rule set.

    Raises:
        SearchSpaceError: ``<source>: `params.delta_rank.low` <the rule>``.
    """
    params = {name: _spec_input(name, spec) for name, spec in space.items()} if isinstance(space, Mapping) else space
    try:
        model = _SpaceModel.model_validate({"params": params})
    except ValidationError as exc:
        raise SearchSpaceError(_error_message(source, exc.errors(include_url=False)[0])) from None
    return _param_specs(model.params)


def _component_rules(specs: Mapping[str, ParamSpec]) -> None:
    for component, delta, coeff in _COMPONENTS:
        c_spec, d_spec = specs[coeff], specs[delta]
        always_off = c_spec.is_fixed and c_spec.fixed == 0
        if always_off and not (d_spec.is_fixed and d_spec.fixed is None):
            raise _rule("components", f"must be {{fixed: null}}: the {component} component is always off "
                                      f"(`{coeff}` is fixed at 0)", f"params.{delta}")
        if not always_off and d_spec.is_fixed and d_spec.fixed is None:
            raise _rule("components", f"is {{fixed: null}} but `{coeff}` can be non-zero; give the delta a value "
                                      "or a range", f"params.{delta}")
    if specs["coeff_rank"].can_be_off and specs["coeff_sort"].can_be_off:
        raise _rule("components", "and `params.coeff_rank` can both be off (fixed 0, allow_off or low 0): the heatmap "
                                  "would get no loss; keep at least one of them always on", "params.coeff_sort")


def _known_good_rules(entry: Any, i: int, specs: Mapping[str, ParamSpec]) -> None:
    key = f"known_good[{i}]"
    given = entry.model_fields_set
    setting: dict[str, float | None] = {}
    for _, delta, coeff in _COMPONENTS:
        c = 0.0 if getattr(entry, coeff) is None else getattr(entry, coeff)
        d = getattr(entry, delta)
        if c == 0 and d is not None:
            raise _rule("known_good", f"must be null because `{coeff}` is off (0/null), got {d!r}", f"{key}.{delta}")
        if c != 0 and d is None:
            raise _rule("known_good", f"must be a number because `{coeff}` is {c:g} (on), got None", f"{key}.{delta}")
        setting[delta], setting[coeff] = (None if c == 0 else d), c
    for p in LOSS_PARAMS:
        if p.component is None:
            value = getattr(entry, p.name)
            setting[p.name] = p.default if value is None else value
    for p in LOSS_PARAMS:
        if p.kind == "delta" and setting[component_names(p.component)[1]] == 0:
            continue  # an off component's delta is meaningless
        if not specs[p.name].contains(setting[p.name]):
            omitted = " (its default: the entry does not name it)" if p.name not in given else ""
            raise _rule("known_good", f"is {setting[p.name]!r}{omitted}, outside its search space "
                                      f"{specs[p.name].describe()!r}", f"{key}.{p.name}")


def _known_good_setting(entry: Any) -> MappingProxyType:
    setting: dict[str, float | None] = {}
    for _, delta, coeff in _COMPONENTS:
        c = 0.0 if getattr(entry, coeff) is None else float(getattr(entry, coeff))
        setting[delta], setting[coeff] = (None if c == 0 else float(getattr(entry, delta))), c
    for p in LOSS_PARAMS:
        if p.component is None:
            value = getattr(entry, p.name)
            setting[p.name] = p.default if value is None else float(value)
    return MappingProxyType({name: setting[name] for name in PARAM_NAMES})


_TYPE_RULES = {
    "float_type": "must be a number", "float_parsing": "must be a number", "int_type": "must be an integer",
    "int_from_float": "must be an integer", "bool_type": "must be true or false", "string_type": "must be a string",
    "list_type": "must be a list of settings", "dict_type": "must be a mapping", "model_type": "must be a mapping",
}


def _error_message(source: Path | str, error: Mapping[str, Any]) -> str:
    """One pydantic error as ``<file>: `<key path>` <rule>``."""
    ctx = error.get("ctx") or {}
    parts: list[str] = []
    for part in error["loc"]:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif not str(part).startswith("<"):  # a union tag, not a key
            parts.append(str(part))
    value, kind = error.get("input"), error["type"]
    if ctx.get("at"):
        parts.append(ctx["at"])
    key = ".".join(parts)
    if kind in _TYPE_RULES:
        rule = _TYPE_RULES[kind]
        if key.startswith(("base_config", "dataset", "metric", "mode", "data.", "cost.source")) and kind == "string_type":
            rule = "must be a non-empty string"
        hint = ""
        if isinstance(value, str) and _looks_numeric(value) and kind.startswith("float"):
            hint = f" (YAML reads {value} as a string; write it with a decimal point, e.g. 1.0e-3)"
        rule = f"{rule}, got {_show(value)}{hint}"
    elif kind == "string_too_short":
        rule = f"must be a non-empty string, got {_show(value)}"
    elif kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        rule = f"must be {'>=' if kind == 'greater_than_equal' else '>'} {bound:g}, got {value:g}"
    elif kind == "finite_number":
        rule = f"must be finite, got {value}"
    elif kind == "param_spec":
        rule = f"must be a mapping {{low, high, log}} or {{fixed}}, got {_show(value)}"
    elif kind == "literal_error":  # "'a', 'b' or 'c'" -> ['a', 'b', 'c']
        rule = f"must be one of [{ctx['expected'].replace(' or ', ', ')}], got {value!r}"
    elif kind == "missing":
        *parent, name = parts
        parts, rule = parent, f"is missing required key(s) [{name!r}]"
        key = ".".join(parts)
    else:
        rule = error["msg"]
    where = f"`{key}`" if key else "top level"
    return f"{source}: {where} {rule}"


def preset_json_schema() -> dict[str, Any]:
    """The JSON schema of a preset file (:class:`PresetFile`), published as ``docs/preset.schema.json``."""
    schema = PresetFile.model_json_schema()
    schema["title"] = "rspose_tune preset (search_spaces/<name>.yaml)"
    return schema

