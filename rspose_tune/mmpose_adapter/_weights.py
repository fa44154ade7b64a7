"""The pretrained-weights preflight: is the ``--weights`` file a checkpoint of the preset's backbone?

MMPose trains with ``init_cfg=dict(type="Pretrained", checkpoint=..., prefix=...)`` on the backbone,
and mmengine's load only *warns* about missing, unexpected and mis-shaped keys: a wrong file (another
backbone's checkpoint, a whole pose model where a classifier was expected, a file of the wrong
family) trains from scratch, silently, for days. :func:`check_weights` runs before Ray starts, in a
start and in ``--dry-run`` (``search._plan.check_flags``), and raises :class:`WeightsError` (one line)
when the file would not initialise the backbone.

**The rule** (:func:`match_tensors`). The backbone's tensors are its state dict without BatchNorm's
``num_batches_tracked`` counters (their absence is harmless: BatchNorm fills them in). The checkpoint
is read as mmengine's ``PretrainedInit`` reads it: its ``state_dict`` entry if it has one, else the
whole mapping; with the config's ``prefix`` (rtmpose-m: ``backbone.``) only the keys under it, the
prefix removed; without one, a leading ``module.`` removed (``load_checkpoint``'s ``revise_keys``).
A backbone tensor *matches* when the checkpoint has it under its name with its shape (ViT's
``pos_embed`` with any number of positions: mmpretrain's ``VisionTransformer`` resizes it on load).
Fewer than half of the backbone's tensors matching is an error; a partial match (some tensors
missing or mis-shaped: those start from their random initialisation) is a note. Keys the backbone
does not have (a classifier's head, an MAE decoder) are ignored, as mmengine ignores them.

**Reading a checkpoint without torch.** A dry run must stay well under a second or two, and
``import torch`` alone takes longer than that (2.2 s of CPU measured on the 2-core machine), so
:func:`read_checkpoint_tensors` reads a ``torch.save`` file (zip or legacy format) with a restricted
unpickler that builds nothing: tensors become their shapes, every other allowed global an inert
placeholder. Allowed are the globals of the trial's own load, ``torch.load(weights_only=True)``
under ``rspose_tune.training._checkpoint.SAFE_GLOBALS``: the non-torch ones of torch's allowlist
(``_codecs``/``collections``/``builtins``) and SAFE_GLOBALS' numpy ones (a test keeps both lists
equal to torch's and the project's), and any ``torch.`` name (a superset of torch's list: a torch
global that torch refuses would still fail, loudly, when the trial loads the file). Any other
global (a pickled function, an mmengine ``HistoryBuffer``) refuses the file, as the trial would.
Only the pickle is read, never the tensor data (a 2.5 GB ViT-H file costs what a small one does).

**The backbone's tensors without building it.** Building a backbone needs ``setup_mmpose()``
(about 6 s of CPU), so the presets' backbones are recorded once in ``backbone_tensors.json``
beside this module (:func:`record_table`; a test keeps it equal to the registry-built backbones).
An entry is used only while the preset's base config and every ``_base_`` file it inherits are
byte-identical to the recorded ones and mmpose, mmpretrain, mmdet, mmcv and mmengine have the
recorded versions; otherwise (a user's preset, an edited config, another mmpose) the backbone is
built on the ``meta`` device through the registry (:func:`build_backbone_tensors`: no memory, but
the MMPose import's seconds).
"""

from __future__ import annotations

import ast
import collections
import hashlib
import importlib.metadata
import json
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rspose_tune.errors import RSPoseTuneError
from rspose_tune.spaces import ENV_WEIGHTS, Preset

__all__ = ["TABLE_FILE", "WeightsError", "WeightsMatch", "build_backbone_tensors", "check_weights",
           "expected_tensors", "match_tensors", "read_checkpoint_tensors", "record_table"]

#: The recorded backbone tensors of the repository's presets (see the module docstring).
TABLE_FILE = Path(__file__).with_name("backbone_tensors.json")
#: The packages whose versions decide a backbone's tensor names and shapes.
TABLE_PACKAGES = ("mmpose", "mmpretrain", "mmdet", "mmcv", "mmengine")
#: Tensors the backbone resizes on load (any shape with the same number of dimensions and the same last one).
RESIZED_ON_LOAD = {"VisionTransformer": frozenset({"pos_embed"})}
#: How many names a message shows.
SHOW = 3


class WeightsError(RSPoseTuneError, ValueError):
    """The pretrained weights file would not initialise the preset's backbone (or is no checkpoint)."""


class _NotCheckpoint(Exception):
    """Internal: the file cannot be read as a ``torch.save`` checkpoint (the message says why)."""


# --- reading a checkpoint's tensor names and shapes, without torch ---------------------------------

@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]


class _Inert:
    """Whatever a non-tensor global of the allowlist builds: takes any arguments and state, does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __call__(self, *args, **kwargs) -> _Inert:
        return _Inert()


def _rebuild_tensor(storage, offset, size, *args, **kwargs) -> _Tensor:
    return _Tensor(tuple(int(s) for s in size))


def _rebuild_meta(dtype, size, *args, **kwargs) -> _Tensor:
    return _Tensor(tuple(int(s) for s in size))


def _rebuild_parameter(data, *args, **kwargs):
    return data


def _rebuild_from_type(func, new_type, args, state):
    return func(*args)


#: torch's rebuild functions that give a tensor, read as its shape.
_TORCH_REBUILD = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor,
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
}
#: The non-torch globals ``torch.load(weights_only=True)`` accepts by default, then the numpy ones of
#: ``rspose_tune.training._checkpoint.SAFE_GLOBALS`` (the trial loads under both; a test checks this list).
_OTHER_ALLOWED = {"collections.OrderedDict": collections.OrderedDict, "collections.Counter": collections.Counter,
                  "builtins.set": set, "builtins.complex": complex, "builtins.bytearray": bytearray}
_NUMPY_ALLOWED = re.compile(r"numpy\.(_core\.multiarray\.(_reconstruct|scalar)|ndarray|dtype|dtypes\.\w+DType)")


class _ShapeUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's object tree with tensors as :class:`_Tensor` shapes; builds nothing else."""

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in _TORCH_REBUILD:
            return _TORCH_REBUILD[full]
        if full in _OTHER_ALLOWED:
            return _OTHER_ALLOWED[full]
        if full == "_codecs.encode":
            return lambda text, encoding="latin1": text.encode(encoding) if isinstance(text, str) else text
        if module == "torch" or module.startswith("torch.") or _NUMPY_ALLOWED.fullmatch(full):
            return _Inert  # dtypes, storage classes, Size-like and layout markers, numpy metadata
        raise _NotCheckpoint(f"its pickle holds the global `{full}`, which the trial's "
                             "torch.load(weights_only=True) refuses")

    def persistent_load(self, pid):
        return _Inert()  # a storage: its data is never read


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _unpickle(fh) -> object:
    try:
        return _ShapeUnpickler(fh).load()
    except _NotCheckpoint:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise _NotCheckpoint(f"its pickle is unreadable ({type(exc).__name__}: {exc})") from None


def _load_object(path: Path) -> object:
    """The object ``torch.save`` stored in ``path``, tensors as :class:`_Tensor`."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not pickles:
                    raise _NotCheckpoint("it is a zip archive without a data.pkl (not a torch.save file)")
                with archive.open(min(pickles, key=len)) as fh:
                    return _unpickle(fh)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise _NotCheckpoint(f"its zip archive is damaged ({exc})") from None
    with open(path, "rb") as fh:
        head = fh.read(16)
        if head.startswith(b"PK\x03\x04"):
            raise _NotCheckpoint("it starts as a zip archive but has no readable directory (a download cut short?)")
        fh.seek(0)
        try:
            magic = pickle.Unpickler(fh).load() if head[:1] == b"\x80" else None
        except Exception:  # noqa: BLE001 - any pickle error here just means "not the legacy format"
            magic = None
        if magic != _LEGACY_MAGIC:
            raise _NotCheckpoint(f"it is neither a zip nor a legacy torch.save file (it starts with {head[:12]!r})")
        for _ in range(2):  # protocol version, system info
            _unpickle(fh)
        return _unpickle(fh)


def _state_tensors(path: Path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the checkpoint's state dict (its ``state_dict`` entry, else the whole mapping)."""
    obj = _load_object(path)
    if not isinstance(obj, Mapping):
        raise _NotCheckpoint(f"it holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    state = obj["state_dict"] if "state_dict" in obj else obj
    if not isinstance(state, Mapping):
        raise _NotCheckpoint(f"its `state_dict` is a {type(state).__name__}, not a mapping of names to tensors")
    tensors = {str(k): v.shape for k, v in state.items() if isinstance(v, _Tensor)}
    if not tensors:
        keys = ", ".join(repr(k) for k in list(obj)[:SHOW])
        raise _NotCheckpoint(f"it holds no tensors (top-level keys: {keys or 'none'})")
    return tensors


def _dotted(prefix: str) -> str:
    """``prefix`` with its trailing ``.`` (``backbone`` -> ``backbone.``), as mmengine matches it."""
    return prefix if prefix.endswith(".") else prefix + "."


def _as_loaded(tensors: Mapping[str, tuple[int, ...]], prefix: str | None) -> dict[str, tuple[int, ...]]:
    """The keys mmengine loads into the backbone: under ``prefix`` (removed), else without ``module.``."""
    if prefix:
        prefix = _dotted(prefix)
        return {k[len(prefix):]: s for k, s in tensors.items() if k.startswith(prefix)}
    return {re.sub(r"^module\.", "", k): s for k, s in tensors.items()}


def read_checkpoint_tensors(path: str | os.PathLike, prefix: str | None = None) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the state dict that mmengine's ``PretrainedInit`` would load from ``path``.

    As mmengine reads it: the ``state_dict`` entry if there is one, else the whole mapping; with
    ``prefix`` only its keys (prefix removed; ``prefix`` gets a trailing ``.``), else a leading
    ``module.`` removed. Non-tensor values are left out.

    Raises:
        _NotCheckpoint: the file is no ``torch.save`` file, holds a global the trial's load refuses,
            or holds no mapping of tensors; its message says which.
    """
    return _as_loaded(_state_tensors(Path(path)), prefix)


# --- the rule ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsMatch:
    """How a checkpoint's tensors (after the prefix) meet the backbone's (:func:`match_tensors`)."""

    total: int  # the backbone's tensors
    matched: tuple[str, ...]
    missing: tuple[str, ...]  # backbone tensors the checkpoint lacks
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (name, checkpoint's, backbone's)
    unexpected: tuple[str, ...]  # checkpoint tensors the backbone does not have

    @property
    def ok(self) -> bool:
        """At least half of the backbone's tensors match (the error rule)."""
        return 2 * len(self.matched) >= self.total

    @property
    def complete(self) -> bool:
        return len(self.matched) == self.total


def match_tensors(checkpoint: Mapping[str, tuple[int, ...]], backbone: Mapping[str, tuple[int, ...]],
                  resized: frozenset[str] = frozenset()) -> WeightsMatch:
    """Compare a checkpoint's ``{name: shape}`` (already read as mmengine would) with the backbone's.

    ``resized``: backbone tensors that match with any shape of the same rank and last dimension.
    """
    matched, missing, wrong = [], [], []
    for name, shape in backbone.items():
        got = checkpoint.get(name)
        if got is None:
            missing.append(name)
        elif tuple(got) == tuple(shape) or (name in resized and len(got) == len(shape) and got[-1] == shape[-1]):
            matched.append(name)
        else:
            wrong.append((name, tuple(got), tuple(shape)))
    unexpected = tuple(k for k in checkpoint if k not in backbone)
    return WeightsMatch(len(backbone), tuple(matched), tuple(missing), tuple(wrong), unexpected)


def _show(names, n: int = SHOW) -> str:
    names = list(names)
    text = ", ".join(repr(x) for x in names[:n])
    return text + (f" and {len(names) - n} more" if len(names) > n else "")


def _key_starts(names) -> str:
    """The most common first components of ``names``: ``'model.', 'head.'``."""
    counts = collections.Counter(k.split(".", 1)[0] + ("." if "." in k else "") for k in names)
    return ", ".join(repr(k) for k, _ in counts.most_common(SHOW))


def describe(match: WeightsMatch, prefix: str | None, raw_keys) -> str:
    """What was wrong or partial, in one clause: the count, then a few names."""
    under = f" under the prefix {prefix!r}" if prefix else ""
    text = f"holds {len(match.matched)} of the backbone's {match.total} tensors with the right name and shape{under}"
    parts = []
    if match.wrong_shape:
        name, got, want = match.wrong_shape[0]
        parts.append(f"{len(match.wrong_shape)} with another shape, e.g. {name!r}: {list(got)} here, {list(want)} in "
                     "the backbone")
    if prefix and not raw_keys_under(raw_keys, prefix):
        parts.append(f"no key starts with {prefix!r}; its keys start with {_key_starts(raw_keys)}")
    elif not match.ok and match.unexpected:
        parts.append(f"its keys{under} start with {_key_starts(match.unexpected)}, e.g. {_show(match.unexpected, 2)}")
    if match.missing and (match.ok or not parts):
        parts.append(f"{len(match.missing)} missing, e.g. {_show(match.missing)}")
    return text + (" (" + "; ".join(parts) + ")" if parts else "")


def raw_keys_under(raw_keys, prefix: str) -> bool:
    return any(k.startswith(_dotted(prefix)) for k in raw_keys)


# --- the backbone's tensors ------------------------------------------------------------------------

def config_files(ref: str, folder: Path) -> list[list[str]] | None:
    """``[reference, sha256]`` of the base config ``ref`` and of every ``_base_`` file it inherits, in
    the order found (references as written; read with ``ast``, nothing imported); None when one
    cannot be found or parsed."""
    from .configs import ConfigBuildError, resolve_config_ref

    out: list[list[str]] = []
    todo = [(ref, folder)]
    while todo:
        current, where = todo.pop(0)
        try:
            path = resolve_config_ref(current, where)
        except (ConfigBuildError, ModuleNotFoundError):
            return None
        data = path.read_bytes()
        out.append([current, hashlib.sha256(data).hexdigest()])
        try:
            tree = ast.parse(data)
        except SyntaxError:
            return None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
                try:
                    bases = ast.literal_eval(node.value)
                except ValueError:
                    return None
                todo.extend((base, path.parent) for base in ([bases] if isinstance(bases, str) else bases))
    return out


def _versions() -> dict[str, str | None]:
    out = {}
    for name in TABLE_PACKAGES:
        version = None
        for dist in (name, f"{name}-lite", f"{name}-full"):
            try:
                version = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        out[name] = version
    return out


def _table_entry(preset: Preset, table: Mapping | None = None) -> dict | None:
    """The recorded backbone of ``preset`` when the record still holds (same files, same versions)."""
    if table is None:
        try:
            table = json.loads(TABLE_FILE.read_text())
        except (OSError, ValueError):
            return None
    entry = table.get("presets", {}).get(preset.name)
    if entry is None or table.get("versions") != _versions() or entry.get("base_config") != preset.base_config:
        return None
    if config_files(preset.base_config, Path(preset.source).parent) != entry.get("files"):
        return None
    return table["backbones"][entry["backbone"]]


def build_backbone_tensors(preset: Preset) -> dict:
    """The preset's backbone as a trial builds it (``build_config``), on the ``meta`` device:
    ``{"type", "prefix", "tensors": {name: shape}}``. Needs ``setup_mmpose()`` (called here).

    RTMPose's CSPNeXt lives in mmdet's scope, whose import needs compiled mmcv ops: without them it is
    built from mmpose's own ``CSPNeXt``, the same code (mmpose copied it; the parameter names and
    shapes are mmdet's)."""
    import torch

    from . import setup_mmpose
    from .configs import build_config, load_base_config

    setup_mmpose()
    from mmpose.registry import MODELS

    backbone = dict(build_config(preset, None).model.backbone)
    backbone.pop("init_cfg", None)
    # the prefix the trial's init_cfg keeps (configs._set_pretrained), whatever the preset's weights
    prefix = (load_base_config(preset.base_config, Path(preset.source).parent).model.backbone.get("init_cfg")
              or {}).get("prefix")
    with torch.device("meta"):
        try:
            module = MODELS.build(backbone)
        except ModuleNotFoundError:
            if backbone.get("_scope_") != "mmdet":
                raise
            backbone.pop("_scope_")
            module = MODELS.build(backbone)  # mmpose's copy of mmdet's CSPNeXt (see above)
    tensors = {k: list(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    return {"type": type(module).__name__, "prefix": prefix, "tensors": tensors}


def expected_tensors(preset: Preset) -> dict:
    """The backbone of ``preset`` (``{"type", "prefix", "tensors"}``): recorded, else built."""
    return _table_entry(preset) or build_backbone_tensors(preset)


def record_table(presets) -> dict:
    """The table :data:`TABLE_FILE` holds for ``presets`` (those naming weights): backbones built
    through the registry, keyed by a digest of their tensors, and each preset's config files."""
    table: dict = {"versions": _versions(), "presets": {}, "backbones": {}}
    for preset in presets:
        backbone = build_backbone_tensors(preset)
        digest = hashlib.sha256(json.dumps(backbone, sort_keys=True).encode()).hexdigest()[:12]
        key = f"{backbone['type']}-{digest}"
        table["backbones"][key] = backbone
        table["presets"][preset.name] = {"base_config": preset.base_config, "backbone": key,
                                         "files": config_files(preset.base_config, Path(preset.source).parent)}
    return table


def format_table(table: Mapping) -> str:
    """:data:`TABLE_FILE`'s text: indented JSON with each shape on its tensor's line."""
    text = json.dumps(table, indent=1, sort_keys=True)
    return re.sub(r"\[[\d,\s]*\]", lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"


# --- the check --------------------------------------------------------------------------------------

def _where(path: Path, given: str | None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if given is not None:
        return f"--weights {str(path)!r}"
    if env.get(ENV_WEIGHTS, "").strip():
        return f"{ENV_WEIGHTS} {str(path)!r}"
    return f"weights {str(path)!r} (the preset's `weights`)"


def check_weights(preset: Preset, given: str | None = None, *, expected: Mapping | None = None,
                  origin: str | None = None) -> str | None:
    """Check that ``preset.weights`` would initialise the preset's backbone (the module docstring's rule).

    Args:
        preset: the preset; nothing is checked when it names no weights or the file does not exist
            (``Preset.validate_paths`` reports that).
        given: the ``--weights`` flag's value, if given (the message names where the path came from).
        expected: the backbone (``{"type", "prefix", "tensors"}``); default :func:`expected_tensors`.
        origin: where the path came from when no flag gave it, for the message (``--resume``: the
            run spec; default: the environment or the preset).

    Returns:
        A note for a partial match (some backbone tensors missing or mis-shaped), else None.

    Raises:
        WeightsError: the file is no checkpoint the trial can load, or fewer than half of the
            backbone's tensors match.
    """
    path = preset.weights
    if path is None or not Path(path).is_file():
        return None
    where = _where(Path(path), given) if origin is None or given is not None else f"weights {str(path)!r} ({origin})"
    backbone = expected_tensors(preset) if expected is None else expected
    btype, prefix = backbone["type"], backbone.get("prefix")
    fix = f"pass the {btype} weights that {preset.source} names, or --weights none to train from scratch"
    try:
        raw = _state_tensors(Path(path))
    except _NotCheckpoint as exc:
        raise WeightsError(f"{where}: preset {preset.name!r} cannot load it as a PyTorch checkpoint: {exc}; "
                           f"{fix}") from None
    except OSError as exc:
        raise WeightsError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    shapes = {k: tuple(v) for k, v in backbone["tensors"].items()}
    match = match_tensors(_as_loaded(raw, prefix), shapes, RESIZED_ON_LOAD.get(btype, frozenset()))
    text = describe(match, prefix, raw)
    if not match.ok:
        raise WeightsError(f"{where} is not a {btype} checkpoint for preset {preset.name!r}: it {text}; with fewer "
                           f"than half, training would start from scratch (mmengine only warns); {fix}")
    if not match.complete:
        return f"note: {where}: it {text}; the others start from their random initialisation"
    return None
