"""The run spec: ``<storage>/<run>/run_spec.yaml``, the one home of a run's identity.

``python -m rspose_tune.search`` writes it once, when a run starts, and never rewrites it. It
holds everything that defines the run: the resolved preset (in the preset YAML schema of
:mod:`rspose_tune.spaces`, with absolute data and weights paths, so it reads the same from any
working directory), the number of trials, the budget, the seed, the resources per trial, the
trainable (``MODULE:NAME``: :data:`DEFAULT_TRAINABLE` unless ``--trainable`` named another), the
scheduler and sampler settings (TPE options included), the stages after the search (confirm:
how many settings on which seeds; the stock-loss baseline), the warm-start settings taken from
earlier runs (resolved when the run started), the package versions, the git revision, the command line and
the working directory it was started from. ``--resume``, ``python -m rspose_tune.report`` and
``python -m rspose_tune.export`` read it; nothing of the run's identity is taken from the flags or
the environment again.

Storage is a local folder or any URI :mod:`pyarrow.fs` accepts (``file://``, ``s3://`` ...); its
I/O is :mod:`rspose_tune._storage` (``resolve_storage``, ``filesystem``, ``join``, ``exists``,
``is_uri``: re-exported here).

A run that ended normally (every trial finished) gets ``<run>/finished.json``
(:func:`mark_finished`); :func:`latest_unfinished` finds the newest run of a preset without it.

Errors in a spec file (hand edits, a newer format) raise :class:`RunSpecError` naming the file and key.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import datetime as dt
import json
import os
import pkgutil
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Union

import pyarrow.fs as pafs
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from rspose_tune._layout import FINISHED_FILE, JOURNAL_FILE, SPEC_FILE  # the run folder's file names
from rspose_tune._storage import exists, filesystem, is_uri, join, read_text, resolve_storage, write_text
from rspose_tune.spaces import PARAM_NAMES, Preset, SearchSpaceError, parse_preset

__all__ = [
    "DEFAULT_TRAINABLE",
    "FINISHED_FILE",
    "JOURNAL_FILE",
    "SPEC_FILE",
    "SPEC_VERSION",
    "RunSpec",
    "RunSpecError",
    "default_run_name",
    "exists",
    "filesystem",
    "is_finished",
    "is_uri",
    "join",
    "latest_unfinished",
    "list_runs",
    "mark_finished",
    "preset_to_yaml",
    "read_spec",
    "resolve_storage",
    "resolve_trainable",
    "trial_dir_name",
    "write_spec",
]

SPEC_VERSION = 1
_FORMAT = "rspose_tune.run_spec"
#: The Ray Tune function trainable every trial of a run calls, as ``MODULE:NAME``, unless the search's
#: ``--trainable`` names another (the contract it must keep: docs/real_backbone.md). Run specs written
#: before the field existed read as this.
DEFAULT_TRAINABLE = "trainables.mmpose_trainable:train_rspose"
_TRAINABLE_FORM = re.compile(r"(?!\d)\w+(\.(?!\d)\w+)*:(?!\d)\w+(\.(?!\d)\w+)*")


def trial_dir_name(trial) -> str:
    """A Ray Tune trial's name and folder in every experiment of a run: ``trial_<id>``
    (``TuneConfig(trial_name_creator=..., trial_dirname_creator=...)``)."""
    return f"trial_{trial.trial_id}"


class RunSpecError(RSPoseTuneError, ValueError):
    """A run spec is missing, unreadable or invalid; the message names the file and the key."""


def resolve_trainable(text: str, where: str = "--trainable", *, load: bool = True):
    """The callable ``text`` (``MODULE:NAME``) names, imported with :func:`pkgutil.resolve_name`.

    :class:`RunSpecError` naming ``where`` and the rule when ``text`` is not ``MODULE:NAME``, the
    module cannot be imported, it has no ``NAME``, or that is not callable. ``load=False`` (``--dry-run``,
    which imports and writes nothing): only the form and that the module is found; returns None.
    """
    rule = f"must be MODULE:NAME, a callable NAME of an importable MODULE (default {DEFAULT_TRAINABLE})"
    if not isinstance(text, str) or not _TRAINABLE_FORM.fullmatch(text):
        raise RunSpecError(f"{where} {text!r} {rule}")
    module, name = text.split(":")
    if not load:
        import importlib.util

        why = f"ModuleNotFoundError: No module named {module!r}"
        try:
            found = importlib.util.find_spec(module)  # imports the parent packages only
        except ImportError as exc:
            found, why = None, f"{type(exc).__name__}: {exc}"
        if found is None:
            raise RunSpecError(f"{where} {text!r} {rule}: importing {module} failed ({why})")
        return None
    try:
        found = pkgutil.resolve_name(text)
    except ImportError as exc:  # ModuleNotFoundError too: the module, or one it imports
        raise RunSpecError(f"{where} {text!r} {rule}: importing {module} failed ({type(exc).__name__}: {exc})") from None
    except AttributeError:
        raise RunSpecError(f"{where} {text!r} {rule}: module {module} has no {name!r}") from None
    if not callable(found):
        raise RunSpecError(f"{where} {text!r} {rule}: {name} is a {type(found).__name__}, not callable")
    return found


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------


def preset_to_yaml(preset: Preset) -> dict[str, Any]:
    """``preset`` in the preset YAML schema (absolute paths), readable by :func:`parse_preset`."""
    params = {}
    for name in PARAM_NAMES:
        spec = preset.params[name]
        if spec.is_fixed:
            params[name] = {"fixed": spec.fixed}
        else:
            params[name] = {"low": spec.low, "high": spec.high, "log": spec.log, "allow_off": spec.allow_off}
    data = preset.data
    data_out: dict[str, Any] = {"root": str(data.root), "train_ann": data.train_ann, "val_ann": data.val_ann,
                                "train_img": data.train_img, "val_img": data.val_img}
    for key in ("bbox_file", "headbox_file", "generated"):
        if getattr(data, key) is not None:
            data_out[key] = getattr(data, key)
    return {
        "description": preset.description,
        "base_config": preset.base_config,
        "dataset": preset.dataset,
        "metric": preset.metric,
        "mode": preset.mode,
        "params": params,
        "known_good": [{n: k[n] for n in PARAM_NAMES} for k in preset.known_good],
        "budget": {"max_epochs": preset.budget.max_epochs, "grace_epochs": preset.budget.grace_epochs,
                   "reduction_factor": preset.budget.reduction_factor,
                   "val_interval": preset.budget.val_interval},
        "resources": {"gpus": preset.resources.gpus, "cpus": preset.resources.cpus,
                      **({} if getattr(preset.resources, "workers", None) is None
                         else {"workers": preset.resources.workers})},
        "data": data_out,
        "weights": None if preset.weights is None else str(preset.weights),
        "cost": {"epoch_gpu_hours": preset.cost.epoch_gpu_hours, "source": preset.cost.source},
        "confirm": {"top": preset.confirm.top, "seeds": preset.confirm.seeds, "baseline": preset.confirm.baseline},
    }


@dataclass(frozen=True)
class RunSpec:
    """What defines a run (see the module docstring). ``preset`` is as loaded, overrides applied;
    ``max_epochs``/``grace_epochs``/``reduction_factor`` are the budget actually used."""

    run: str
    storage: str
    preset: Preset
    num_trials: int
    seed: int
    max_epochs: int
    grace_epochs: int
    reduction_factor: int
    gpus_per_trial: float
    cpus_per_trial: float
    workers_per_trial: int
    dataloader_workers: int | None  # per rank; None: the base config's
    scheduler: str
    sampler: str
    n_startup_trials: int
    trainable: str = DEFAULT_TRAINABLE  # MODULE:NAME of the function every trial calls
    # Stages after the search (see rspose_tune.search): the confirm_top best full-budget settings
    # re-run on each of confirm_seeds; baseline: the stock loss on baseline_seeds.
    confirm_top: int = 0
    confirm_seeds: tuple[int, ...] = ()
    baseline: bool = False
    baseline_seeds: tuple[int, ...] = ()
    # Settings enqueued after the preset's known-good ones: {"params": {...}, "source": str}.
    warm_start: tuple[Mapping[str, Any], ...] = ()
    tpe_options: Mapping[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    command: tuple[str, ...] = ()
    cwd: str = ""
    host: str = ""
    versions: Mapping[str, Any] = field(default_factory=dict)
    git_revision: str = "unknown"

    @property
    def run_dir(self) -> str:
        return join(self.storage, self.run)

    def to_dict(self) -> dict[str, Any]:
        scheduler: dict[str, Any] = {"type": self.scheduler}
        if self.scheduler == "asha":
            scheduler.update(time_attr="epoch", max_t=self.max_epochs, grace_period=self.grace_epochs,
                             reduction_factor=self.reduction_factor)
        return {
            "format": _FORMAT,
            "version": SPEC_VERSION,
            "run": self.run,
            "created_utc": self.created_utc,
            "storage": self.storage,
            "num_trials": self.num_trials,
            "seed": self.seed,
            "trainable": self.trainable,
            "budget": {"max_epochs": self.max_epochs, "grace_epochs": self.grace_epochs,
                       "reduction_factor": self.reduction_factor},
            "resources": {"gpus_per_trial": self.gpus_per_trial, "cpus_per_trial": self.cpus_per_trial,
                          "workers_per_trial": self.workers_per_trial,
                          "dataloader_workers": self.dataloader_workers},
            "scheduler": scheduler,
            "sampler": {"type": self.sampler, "n_startup_trials": self.n_startup_trials, "seed": self.seed,
                        "tpe_options": dict(self.tpe_options)},
            "stages": {"confirm": {"top": self.confirm_top, "seeds": list(self.confirm_seeds)},
                       "baseline": {"enabled": self.baseline, "seeds": list(self.baseline_seeds)}},
            "warm_start": [{"source": w["source"], "params": dict(w["params"])} for w in self.warm_start],
            "preset": {"name": self.preset.name, "source": str(self.preset.source), **preset_to_yaml(self.preset)},
            "command": list(self.command),
            "cwd": self.cwd,
            "host": self.host,
            "versions": dict(self.versions),
            "git_revision": self.git_revision,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunSpec:
        """Validate a parsed ``run_spec.yaml`` (:class:`_SpecFile`, pydantic) and build the spec;
        :class:`RunSpecError` names ``where`` and the key path of the first broken rule."""
        if not isinstance(data, Mapping):
            raise RunSpecError(f"{where}: must be a mapping, got {type(data).__name__}")
        if data.get("format") != _FORMAT:
            raise RunSpecError(f"{where}: `format` is {data.get('format')!r}, expected {_FORMAT!r}")
        if data.get("version") != SPEC_VERSION:
            raise RunSpecError(f"{where}: `version` is {data.get('version')!r}, but this rspose_tune reads "
                               f"version {SPEC_VERSION}")
        try:
            f = _SpecFile.model_validate(data)
        except ValidationError as exc:
            raise RunSpecError(f"{where}: {_first_problem(exc)}") from None
        preset_raw = dict(f.preset)
        name, source = preset_raw.pop("name", None), preset_raw.pop("source", None)
        if not isinstance(name, str) or not isinstance(source, str):
            raise RunSpecError(f"{where}: `preset.name` and `preset.source` must be strings")
        try:
            preset = parse_preset(preset_raw, name=name, source=source)
        except SearchSpaceError as exc:
            raise RunSpecError(f"{where}: `preset` is invalid: {exc}") from exc
        stages = f.stages or _Stages()
        confirm, baseline = stages.confirm or _Confirm(), stages.baseline or _Baseline()
        return cls(
            run=f.run, storage=f.storage, preset=preset, num_trials=f.num_trials, seed=f.seed,
            max_epochs=f.budget.max_epochs, grace_epochs=f.budget.grace_epochs,
            reduction_factor=f.budget.reduction_factor, gpus_per_trial=float(f.resources.gpus_per_trial),
            cpus_per_trial=float(f.resources.cpus_per_trial), workers_per_trial=f.resources.workers_per_trial,
            dataloader_workers=f.resources.dataloader_workers, scheduler=f.scheduler.type, sampler=f.sampler.type,
            n_startup_trials=f.sampler.n_startup_trials, trainable=f.trainable or DEFAULT_TRAINABLE, confirm_top=confirm.top, confirm_seeds=tuple(confirm.seeds),
            baseline=baseline.enabled, baseline_seeds=tuple(baseline.seeds),
            warm_start=tuple({"source": w.source, "params": dict(w.params)} for w in f.warm_start or ()),
            tpe_options=dict(f.sampler.tpe_options or {}), created_utc=str(f.created_utc or ""),
            command=tuple(str(a) for a in f.command or ()), cwd=str(f.cwd or ""), host=str(f.host or ""),
            versions=dict(f.versions or {}), git_revision=str(f.git_revision or "unknown"),
        )


# The file format of run_spec.yaml (what RunSpec.to_dict writes), validated by pydantic: strict
# types (YAML's 3 is not "3"), keys written by later versions ignored, optional sections default.
class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_Number = Union[StrictInt, StrictFloat]


class _Budget(_Model):
    max_epochs: StrictInt
    grace_epochs: StrictInt
    reduction_factor: StrictInt


class _Resources(_Model):
    gpus_per_trial: _Number
    cpus_per_trial: _Number
    workers_per_trial: StrictInt
    dataloader_workers: Optional[StrictInt]


class _Scheduler(_Model):
    type: StrictStr


class _Sampler(_Model):
    type: StrictStr
    n_startup_trials: StrictInt
    tpe_options: Optional[dict[str, Any]] = None


class _Confirm(_Model):
    top: Annotated[StrictInt, Field(ge=0)] = 0
    seeds: list[StrictInt] = []


class _Baseline(_Model):
    enabled: StrictBool = False
    seeds: list[StrictInt] = []


class _Stages(_Model):
    confirm: Optional[_Confirm] = None
    baseline: Optional[_Baseline] = None


class _WarmStart(_Model):
    source: StrictStr
    params: dict[str, Any]


class _SpecFile(_Model):
    run: StrictStr
    storage: StrictStr
    preset: dict[str, Any]  # validated by spaces.parse_preset
    num_trials: StrictInt
    seed: StrictInt
    trainable: Optional[StrictStr] = None  # absent in specs written before --trainable: DEFAULT_TRAINABLE
    budget: _Budget
    resources: _Resources
    scheduler: _Scheduler
    sampler: _Sampler
    stages: Optional[_Stages] = None  # absent in specs written before stages existed
    warm_start: Optional[list[_WarmStart]] = None
    created_utc: Any = ""
    command: Optional[list[Any]] = None
    cwd: Any = ""
    host: Any = ""
    versions: Optional[dict[str, Any]] = None
    git_revision: Any = "unknown"


def _first_problem(exc: ValidationError) -> str:
    """pydantic's first error as ``key `a.b` is missing`` or ```a.b` is X: <rule>``."""
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"key `{path}` is missing"
    return f"`{path}` is {error['input']!r}, but {error['msg'][0].lower()}{error['msg'][1:]}"


def utc_now() -> dt.datetime:
    return dt.datetime.now(tz=dt.timezone.utc)


def default_run_name(backbone: str, now: dt.datetime | None = None) -> str:
    """``<backbone>-<UTC timestamp>``, e.g. ``demo-20261125-101530``."""
    now = now or utc_now()
    return f"{backbone}-{now.astimezone(dt.timezone.utc):%Y%m%d-%H%M%S}"


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``created_utc``, ``command``, ``cwd``, ``host``, ``versions`` and ``git_revision`` of now."""
    from rspose_tune.results import git_revision, package_versions

    command = [sys.executable, "-m", "rspose_tune.search", *(sys.argv[1:] if argv is None else argv)]
    return {
        "created_utc": utc_now().isoformat(timespec="seconds"),
        "command": tuple(command),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "versions": package_versions(),
        "git_revision": git_revision(),
    }


def write_spec(spec: RunSpec) -> str:
    """Write ``spec`` to ``<run dir>/run_spec.yaml`` once; an existing spec is never overwritten."""
    path = join(spec.run_dir, SPEC_FILE)
    if exists(path):
        raise RunSpecError(f"{path} already exists: a run spec is written once, when the run starts")
    header = ("# rspose_tune run spec: written once when the run started; --resume, report and export\n"
              "# read it. Do not edit: flags that conflict with it are refused on --resume.\n")
    write_text(path, header + yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True, width=100))
    return path


def read_spec(run_dir: str) -> RunSpec:
    """The spec of the run at ``run_dir`` (local path or URI)."""
    path = join(run_dir, SPEC_FILE)
    try:
        text = read_text(path)
    except FileNotFoundError as exc:
        raise RunSpecError(f"{path} does not exist: not a run started by this rspose_tune") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunSpecError(f"{path}: not valid YAML: {exc}") from exc
    return RunSpec.from_dict(data, path)


def spec_exists(run_dir: str) -> bool:
    return exists(join(run_dir, SPEC_FILE))


def mark_finished(run_dir: str, summary: Mapping[str, Any]) -> None:
    """Record that the search of this run ended with every trial finished."""
    write_text(join(run_dir, FINISHED_FILE), json.dumps({"finished_utc": utc_now().isoformat(timespec="seconds"),
                                                         **summary}, indent=1) + "\n")


def is_finished(run_dir: str) -> bool:
    return exists(join(run_dir, FINISHED_FILE))


def list_runs(storage: str) -> list[str]:
    """Names of the folders under ``storage`` that hold a run spec (sorted)."""
    fs, root = filesystem(storage)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                   and not i.base_name.startswith((".", "_")))
    return [n for n in names if spec_exists(join(storage, n))]


def latest_unfinished(storage: str, preset_name: str) -> RunSpec | None:
    """The most recently started run of ``preset_name`` under ``storage`` without ``finished.json``."""
    found = []
    for name in list_runs(storage):
        run_dir = join(storage, name)
        if is_finished(run_dir):
            continue
        spec = read_spec(run_dir)
        if spec.preset.name == preset_name:
            found.append((spec.created_utc, spec.run, spec))
    return max(found, key=lambda t: (t[0], t[1]))[2] if found else None
