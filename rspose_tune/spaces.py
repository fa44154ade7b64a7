"""Search spaces as validated data: ``search_spaces/<preset>.yaml`` parsed into typed presets.

A preset names everything one search needs besides the searcher's own settings: the MMPose base
config, the dataset and its files, the metric to optimise, the range of each RSPose loss
hyperparameter, the paper's known-good settings, the ASHA budget, per-trial resources and the
pretrained weights. :func:`load_preset` validates a file completely with one pydantic v2 model,
:class:`PresetFile` (its JSON schema is ``docs/preset.schema.json``), and raises one
:class:`SearchSpaceError` naming the file, the key path (``params.delta_rank.low``) and the broken
rule; nothing is checked later at MMPose build time that could have been checked here.

Shipped presets (``list_presets()``): ``vit-b``, ``vit-h``, ``res50-simcc``,
``hrnet-w48-simcc``, ``hrnet-w32-crowdpose``, ``hrnet-w32-mpii`` and the CPU ``demo``.
A user adds a preset by adding a YAML file: to the ``search_spaces`` package folder, to a folder
passed as ``search_dir``, or anywhere, passing its path instead of a name.

YAML schema (all keys required unless marked optional; unknown keys are errors)::

    description: str                       # optional, free text
    base_config: mmpose::<path> | <path>   # mmpose::... = inside the installed mmpose's
                                           # .mim/configs; else relative to this YAML's folder
    dataset: coco | crowdpose | mpii | coco-format
    metric: coco/AP                        # coco, coco-format: coco/...; crowdpose:
                                           # crowdpose/...; mpii: PCK or PCK@0.1
    mode: max | min
    params:                                # the RSPose loss hyperparameters (PARAM_NAMES), each
      delta_rank: {low: 0.1, high: 1.0, log: false}    # a range (log optional, default false;
      coeff_rank: {fixed: 1.0}                         #   log needs low > 0), or a fixed value
      delta_sort: {low: 0.1, high: 3.0, log: true}
      coeff_sort: {low: 0.1, high: 4.0, log: true, allow_off: true}
      delta_inst: {low: 0.25, high: 5.0, log: true}
      coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}
      pos_thr: {fixed: 0.0}                # optional (it has a default); or {low, high, log}
    known_good:                            # optional list: settings the searcher tries first
      - {delta_rank: 0.4, coeff_rank: 1.0, delta_sort: 1.5, coeff_sort: 2.0,
         delta_inst: 3.0, coeff_inst: 0.25}            # pos_thr omitted: its default (0)
    budget: {max_epochs: 210, grace_epochs: 10, reduction_factor: 3, val_interval: 10}
    resources: {gpus: 1, cpus: 4}          # per trial (optional workers: N ranks share them)
    data:
      root: data/coco                      # relative: to the working directory at load time
      train_ann: annotations/person_keypoints_train2017.json   # these: relative to root
      val_ann: annotations/person_keypoints_val2017.json
      train_img: train2017/
      val_img: val2017/
      bbox_file: person_detection_results/COCO_val2017_detections_AP_H_56_person.json
                                           # optional; null = validate with ground-truth boxes
      headbox_file: annotations/mpii_gt_val.mat   # optional; required for dataset mpii (PCKh)
      generated: demo                      # optional; the data is made by a generator (see below)
    weights: checkpoints/x.pth | null      # pretrained backbone; relative: to the working dir
    cost:                                  # optional: what one trial-epoch costs (--dry-run)
      epoch_gpu_hours: 0.99                # GPU-hours per epoch of one trial, all its GPUs
                                           #   together; null = unknown
      source: "paper: 4.33 days x 2 GPUs / 210 epochs"   # where the number comes from
    confirm:                               # optional: default confirm stage (--confirm-top ...)
      top: 2                               # best full-budget settings re-run (0 = no confirm)
      seeds: 2                             # further training seeds each (>= 2 when top > 0)
      baseline: true                       # also train the base config's stock loss

Rules for ``params`` (:data:`LOSS_PARAMS` is the one definition of the names, their kinds and
defaults): values are >= 0; a coefficient of 0 switches its component off, and the component's
delta is then meaningless and written ``{fixed: null}``. ``allow_off: true`` (only on
``coeff_*``) lets the searcher also switch the component off. Rank and sort must not both be able
to be off (the heatmap would get no loss). ``pos_thr`` (the positives of Spatial Rank and Spatial
Sort are the labels above it, see :mod:`rspose_tune.mmpose_adapter.losses`) lies in [0, 1). A
parameter with a default (``pos_thr``: 0, every non-zero label, the paper's support) may be left
out of ``params`` (then it is fixed at its default) and out of ``known_good`` entries (then the
entry has the default, which must lie in the space). Every ``known_good`` entry names all the
other values and must lie inside the space; ``null`` (or 0) for a coefficient means off, and then
its delta is null.

Overrides (highest first): keyword arguments of :func:`load_preset` (the CLI's ``--data-root``
and ``--weights``), then the environment, then the YAML:

- ``RSPOSE_TUNE_DATA_ROOT``: replaces ``data.root`` (the file names stay relative to it);
- ``RSPOSE_TUNE_WEIGHTS``: replaces ``weights``; ``none`` means no pretrained weights.

Paths are made absolute when the preset is loaded (``~`` is expanded), so they survive the
working-directory changes of Ray trials. :meth:`Preset.validate_paths` checks that the data files
and weights exist and raises :class:`MissingDataError` listing every missing one. Nothing is ever
downloaded.

Generated data: the ``demo`` preset has ``data.generated: demo`` and its root defaults to
``~/.cache/rspose_tune/demo_data``. A caller that finds ``preset.data.generated == "demo"`` calls
``rspose_tune.demo_data.generate_demo_dataset(preset.data.root)`` (idempotent) before
:meth:`Preset.validate_paths`, instead of failing.

Bring your own data: any COCO-format keypoint dataset (one annotation JSON per split, in COCO's
``person_keypoints`` format, and an image folder per split) works by pointing a preset at it.
Copy e.g. ``vit-b.yaml`` to ``my-data.yaml``, set ``dataset: coco-format``, ``metric: coco/AP``,
``data.root`` and the four file names (``bbox_file: null`` validates with ground-truth boxes),
then run with ``--backbone path/to/my-data.yaml`` (or put the file in a ``search_dir``). With
the stock COCO base configs the annotations must use COCO's 17 keypoints in COCO order; for other
keypoint sets, write a base config whose dataset ``metainfo`` and head ``out_channels`` match.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Optional, Union

import yaml
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

from rspose_tune.errors import RSPoseTuneError

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
    "budget_problem",
    "component_names",
    "is_off",
    "COMPONENT_LABELS",
    "fill_defaults",
    "list_presets",
    "load_preset",
    "loss_param",
    "parse_preset",
    "validate_space",
]

ENV_DATA_ROOT = "RSPOSE_TUNE_DATA_ROOT"
ENV_WEIGHTS = "RSPOSE_TUNE_WEIGHTS"



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

_NONE_WORDS = ("none", "null")


class SearchSpaceError(RSPoseTuneError, ValueError):
    """A search-space file (or a preset name) is invalid; the message names file, key and rule."""


class MissingDataError(RSPoseTuneError, FileNotFoundError):
    """Files a preset needs (dataset, weights) are missing; raised before any trial starts."""


# --------------------------------------------------------------------------------------------
# Typed presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """The search range of one loss hyperparameter: a range or a fixed value.

    Attributes:
        name: One of :data:`PARAM_NAMES`.
        low, high: Range bounds (inclusive); None when fixed.
        log: Sample on a log scale (then ``low > 0``).
        fixed: The fixed value when ``low``/``high`` are None; None for a switched-off delta.
        allow_off: (``coeff_*`` only) the searcher may also switch the component off (0).
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    fixed: float | None = None
    allow_off: bool = False

    @property
    def is_fixed(self) -> bool:
        return self.low is None

    @property
    def is_coefficient(self) -> bool:
        return loss_param(self.name).kind == "coeff"

    @property
    def can_be_off(self) -> bool:
        """(Coefficients) whether a sampled setting may switch this component off."""
        if not self.is_coefficient:
            return False
        if self.is_fixed:
            return self.fixed == 0
        return self.allow_off or self.low == 0

    def contains(self, value: float | None) -> bool:
        """Whether ``value`` (None = off/meaningless) is a point of this space."""
        if self.is_fixed:
            return value == self.fixed
        if value is None:
            return self.can_be_off
        if value == 0 and self.is_coefficient:
            return self.can_be_off  # allow_off, or a range from 0
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        """Short human-readable form for reports, e.g. ``'[0.05, 3] log, or off'``."""
        if self.is_fixed:
            if self.fixed is None or (self.is_coefficient and self.fixed == 0):
                return "off"
            return f"fixed {self.fixed:g}"
        text = f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")
        return text + (", or off" if self.allow_off else "")


@dataclass(frozen=True)
class Budget:
    """ASHA budget in epochs (the scheduler's time attribute)."""

    max_epochs: int
    grace_epochs: int
    reduction_factor: int
    val_interval: int


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: its GPUs and CPUs in all, and how many ranks share them.

    ``workers`` is None when the preset does not name it: then a trial with more than one GPU
    trains on one rank per GPU, else on one rank (:func:`rspose_tune._resources.plan_ranks`).
    """

    gpus: float
    cpus: float
    workers: int | None = None


@dataclass(frozen=True)
class Cost:
    """What one epoch of one trial costs, in GPU-hours of all its GPUs together (None: unknown),
    and where that number comes from. Used by ``--dry-run`` to price a search."""

    epoch_gpu_hours: float | None = None
    source: str = "unknown (the preset declares no cost)"


@dataclass(frozen=True)
class Confirm:
    """Default confirm stage: the ``top`` best full-budget settings re-run on ``seeds`` further
    training seeds (``top`` 0: none); ``baseline``: also train the base config's stock loss."""

    top: int = 0
    seeds: int = 0
    baseline: bool = False


@dataclass(frozen=True)
class DataSpec:
    """Where a preset's dataset lives. ``root`` is absolute; the file names are relative to it."""

    root: Path
    train_ann: str
    val_ann: str
    train_img: str
    val_img: str
    bbox_file: str | None = None
    headbox_file: str | None = None
    generated: str | None = None

    def paths(self) -> dict[str, Path]:
        """Every file and folder the dataset needs, keyed by its ``data.<key>`` name."""
        out = {"data.root": self.root}
        for key in ("train_ann", "val_ann", "train_img", "val_img", "bbox_file", "headbox_file"):
            rel = getattr(self, key)
            if rel is not None:
                out[f"data.{key}"] = self.root / rel
        return out


@dataclass(frozen=True)
class Preset:
    """One validated search space (see the module docstring for the YAML schema).

    ``params`` maps each of :data:`PARAM_NAMES` (in that order) to its :class:`ParamSpec`;
    ``known_good`` holds full settings with ``None`` for a switched-off component's delta and
    ``0.0`` for its coefficient. ``source`` is the YAML file (``base_config`` paths are relative
    to its folder).
    """

    name: str
    source: Path
    base_config: str
    dataset: str
    metric: str
    mode: str
    params: Mapping[str, ParamSpec]
    known_good: tuple[Mapping[str, float | None], ...]
    budget: Budget
    resources: Resources
    data: DataSpec
    weights: Path | None
    description: str = ""
    cost: Cost = Cost()
    confirm: Confirm = Confirm()

    def validate_paths(self, *, data: bool = True) -> None:
        """Raise :class:`MissingDataError` listing every missing data file, folder or weights
        (``data=False``: the weights only, for data that a start is about to generate).

        Nothing is downloaded. For generated data (``data.generated``) the message says how to
        generate it.
        """
        missing = []
        for key, path in (self.data.paths() if data else {}).items():
            want_dir = key in ("data.root", "data.train_img", "data.val_img")
            ok = path.is_dir() if want_dir else path.is_file()
            if not ok:
                missing.append(f"  {key}: {'folder' if want_dir else 'file'} {str(path)!r}")
        if self.weights is not None and not self.weights.is_file():
            missing.append(f"  weights: file {str(self.weights)!r}")
        if not missing:
            return
        if self.data.generated == "demo":
            fix = (
                "This preset's data is generated: call "
                f"rspose_tune.demo_data.generate_demo_dataset({str(self.data.root)!r}) first."
            )
        else:
            fix = (
                f"Point the preset at your data with --data-root PATH (or {ENV_DATA_ROOT}) and at "
                f"the pretrained weights with --weights PATH (or {ENV_WEIGHTS}; 'none' for no "
                f"weights), or edit {str(self.source)!r}. rspose_tune never downloads data or "
                "weights."
            )
        raise MissingDataError(
            f"preset {self.name!r} ({self.source}) needs paths that do not exist:\n"
            + "\n".join(missing)
            + "\n"
            + fix
        )


# --------------------------------------------------------------------------------------------
# Finding and loading presets
# --------------------------------------------------------------------------------------------


def _folder_presets(folder: Any) -> dict[str, Any]:
    out = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml") and entry.is_file() and not entry.name.startswith("."):
            out[entry.name[: -len(".yaml")]] = entry
    return out


def _preset_files(search_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The built-in presets (the ``search_spaces`` package) plus those of ``search_dir``, by name; a
    name in both maps to ``(built-in, user file)`` (refused when loaded by that name)."""
    out: dict[str, Any] = _folder_presets(resources.files("search_spaces"))
    if search_dir is not None:
        folder = Path(search_dir)
        if not folder.is_dir():
            raise SearchSpaceError(f"search_dir {str(folder)!r} is not a folder")
        for name, entry in _folder_presets(folder).items():
            out[name] = (out[name], entry) if name in out else entry
    return dict(sorted(out.items()))


def list_presets(search_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the built-in presets (the installed ``search_spaces`` package) and of those in
    ``search_dir`` (the search's ``--search-dir``: a folder added to them)."""
    return list(_preset_files(search_dir))


def load_preset(
    name_or_path: str | os.PathLike[str],
    *,
    search_dir: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
) -> Preset:
    """Load and validate a preset by name (``'vit-b'``) or by the path of a YAML file.

    Args:
        name_or_path: A preset name from :func:`list_presets`, or a path ending in ``.yaml``/
            ``.yml`` or containing a path separator.
        search_dir: A folder of ``<name>.yaml`` files added to the built-in ``search_spaces``
            package (``--search-dir``); a name in both is refused (pass the file's path instead).
        data_root: Replaces ``data.root`` (the CLI's ``--data-root``); beats the environment.
        weights: Replaces ``weights`` (``--weights``); ``'none'`` means no pretrained weights.
        env: Environment for ``RSPOSE_TUNE_DATA_ROOT`` and ``RSPOSE_TUNE_WEIGHTS``.

    Raises:
        SearchSpaceError: unknown preset, unreadable or invalid file.
    """
    text = os.fspath(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SearchSpaceError(f"search-space file {str(path)!r} does not exist")
        name = path.stem
        raw = path.read_text()
        source = path.absolute()
    else:
        files = _preset_files(search_dir)
        if text not in files:
            close = difflib.get_close_matches(text, list(files), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SearchSpaceError(f"`--backbone` must be one of {list(files)}, got {text!r}{hint}")
        entry = files[text]
        if isinstance(entry, tuple):  # a user preset named like a built-in one: neither silently wins
            built_in, user = (Path(os.fspath(e)).absolute() for e in entry)
            raise SearchSpaceError(f"`--backbone` {text!r} names both the built-in preset {str(built_in)!r} and "
                                   f"{str(user)!r} of --search-dir: rename the file in --search-dir, or pass its "
                                   f"path (--backbone {str(user)!r})")  # fmt: skip
        name = text
        raw = entry.read_text()
        source = Path(os.fspath(entry)).absolute()
    try:
        data = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{source}: not valid YAML: {exc}") from exc
    overrides = _overrides(data_root, weights, env)
    return parse_preset(data, name=name, source=source, **overrides)


def _overrides(data_root: Any, weights: Any, env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if data_root is not None and os.fspath(data_root) != "":
        out["data_root"] = os.fspath(data_root)
    elif env.get(ENV_DATA_ROOT):
        out["data_root"] = env[ENV_DATA_ROOT]
    if weights is not None:
        out["weights"] = os.fspath(weights)
    elif env.get(ENV_WEIGHTS):
        out["weights"] = env[ENV_WEIGHTS]
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# --------------------------------------------------------------------------------------------
# Validation: one pydantic v2 model of the YAML (PresetFile); its errors become one
# SearchSpaceError naming the file, the key path (``params.delta_rank.low``) and the rule.
# --------------------------------------------------------------------------------------------


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
                                 f"got low={self.low:g}, high={self.high:g}")  # fmt: skip
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
                     else f"`{param.name}` belongs to no component and is never off")  # fmt: skip
            raise _rule("param", f"only applies to coefficients (a component is off when its coeff_* is 0); {where}",
                        "allow_off")  # fmt: skip
        if param.kind == "delta" and spec.low == 0:
            raise _rule("param", f"must be > 0 for a delta (the margin of a ranking loss), got {spec.low:g}", "low")
        return spec


def _threshold_rule(param: LossParam, value: float | None, at: str) -> None:
    if param.kind == "threshold" and value is not None and value >= 1:
        raise _rule("param", f"must be < 1 (labels peak at 1, so nothing would be a positive), got {value:g}", at)


#: ``params``: one entry per loss hyperparameter; those with a default may be left out.
ParamsModel = create_model(
    "ParamsModel", __base__=_ParamsBase,
    **{p.name: (_ParamModel, ...) if p.default is None else (Optional[_ParamModel], None) for p in LOSS_PARAMS},
)  # type: ignore[call-overload]  # fmt: skip

#: One ``known_good`` entry: every loss hyperparameter (null/0 coefficient = off; null delta of it).
KnownGoodModel = create_model(
    "KnownGoodModel", __base__=_Section,
    **{p.name: (Optional[_NonNegative], ...) if p.default is None else (Optional[_NonNegative], None)
       for p in LOSS_PARAMS},
)  # type: ignore[call-overload]  # fmt: skip


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
                                   f"got {self.seeds}", "seeds")  # fmt: skip
        return self


class PresetFile(_Section):
    """The YAML schema of a preset (``search_spaces/<name>.yaml``; module docstring).

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
                                      f"(`{coeff}` is fixed at 0)", f"params.{delta}")  # fmt: skip
        if not always_off and d_spec.is_fixed and d_spec.fixed is None:
            raise _rule("components", f"is {{fixed: null}} but `{coeff}` can be non-zero; give the delta a value "
                                      "or a range", f"params.{delta}")  # fmt: skip
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
                                      f"{specs[p.name].describe()!r}", f"{key}.{p.name}")  # fmt: skip


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
}  # fmt: skip


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


def _resolve(path: str, key: str, source: Path) -> Path:
    if not isinstance(path, str) or not path:
        raise SearchSpaceError(f"{source}: `{key}` must be a non-empty path string, got {_show(path)}")
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else Path.cwd() / resolved


def parse_preset(
    data: Any,
    *,
    name: str,
    source: str | os.PathLike[str],
    data_root: str | None = None,
    weights: str | None = None,
) -> Preset:
    """Validate the parsed YAML ``data`` of one preset (:class:`PresetFile`) and build the :class:`Preset`.

    ``data_root``/``weights`` are already-chosen overrides (see :func:`load_preset`).
    """
    source = Path(source)
    try:
        model = PresetFile.model_validate(data)
    except ValidationError as exc:
        raise SearchSpaceError(_error_message(source, exc.errors(include_url=False)[0])) from None
    if data_root is not None:
        root = _resolve(data_root, f"data.root (override {data_root!r})", source)
    else:
        root = _resolve(model.data.root, "data.root", source)
    raw_weights, weights_key = model.weights, "weights"
    if weights is not None:
        raw_weights = None if weights.strip().lower() in (*_NONE_WORDS, "") else weights
        weights_key = f"weights (override {weights!r})"
    d = model.data
    return Preset(
        name=name,
        source=source,
        base_config=model.base_config,
        dataset=model.dataset,
        metric=model.metric,
        mode=model.mode,
        params=MappingProxyType(model.param_specs()),
        known_good=tuple(_known_good_setting(e) for e in model.known_good),
        budget=Budget(**model.budget.model_dump()),
        resources=Resources(**model.resources.model_dump()),
        data=DataSpec(root=root, train_ann=d.train_ann, val_ann=d.val_ann, train_img=d.train_img, val_img=d.val_img,
                      bbox_file=d.bbox_file, headbox_file=d.headbox_file, generated=d.generated),
        weights=None if raw_weights is None else _resolve(raw_weights, weights_key, source),
        description=model.description.strip(),
        cost=Cost() if model.cost is None else Cost(**model.cost.model_dump()),
        confirm=Confirm() if model.confirm is None else Confirm(**model.confirm.model_dump()),
    )  # fmt: skip


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
                                f"validation result, got {grace_epochs}")  # fmt: skip
    return None
