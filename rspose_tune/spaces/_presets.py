"""The typed presets: frozen dataclasses (:class:`Preset`, :class:`ParamSpec`, ...) that a validated
preset file (:mod:`rspose_tune.spaces._models`) becomes and everything else reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rspose_tune.errors import RSPoseTuneError
from rspose_tune.spaces._params import loss_param

__all__ = ["ENV_DATA_ROOT", "ENV_WEIGHTS", "Budget", "Confirm", "Cost", "DataSpec", "MissingDataError", "ParamSpec",
           "Preset", "Resources", "SearchSpaceError"]

ENV_DATA_ROOT = "RSPOSE_TUNE_DATA_ROOT"
ENV_WEIGHTS = "RSPOSE_TUNE_WEIGHTS"


class SearchSpaceError(RSPoseTuneError, ValueError):
    """A search-space file (or a preset name) is invalid; the message names file, key and rule."""


class MissingDataError(RSPoseTuneError, FileNotFoundError):
    """Files a preset needs (dataset, weights) are missing; raised before any trial starts."""


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


def _wrong_kind(path: Path) -> str:
    """`` (a folder)`` / `` (not a folder)`` for a path that exists but is of the wrong kind, else ''."""
    if not path.exists():
        return ""
    return " (a folder)" if path.is_dir() else " (not a folder)"


@dataclass(frozen=True)
class Preset:
    """One validated search space (the YAML schema: :class:`rspose_tune.spaces.PresetFile`).

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
                missing.append(f"  {key}: {'folder' if want_dir else 'file'} {str(path)!r}{_wrong_kind(path)}")
        data_missing = len(missing)
        if self.weights is not None and not self.weights.is_file():
            missing.append(f"  weights: file {str(self.weights)!r}{_wrong_kind(self.weights)}")
        if not missing:
            return
        if self.data.generated == "demo":  # only the data is generated: missing weights get their own fix
            fixes = []
            if data_missing:
                fixes.append("This preset's data is generated: call "
                             f"rspose_tune.demo_data.generate_demo_dataset({str(self.data.root)!r}) first.")
            if len(missing) > data_missing:
                fixes.append(f"Point --weights (or {ENV_WEIGHTS}) at an existing checkpoint file, or pass "
                             "--weights none for no weights; rspose_tune never downloads weights.")
            fix = " ".join(fixes)
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
