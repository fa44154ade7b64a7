"""Finding and loading presets: the built-in ``search_spaces`` package and a ``search_dir``, YAML
without duplicate keys, the ``--data-root``/``--weights`` overrides and the environment."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from rspose_tune.spaces._models import PresetFile, _error_message, _known_good_setting, _show
from rspose_tune.spaces._presets import (
    ENV_DATA_ROOT,
    ENV_WEIGHTS,
    Budget,
    Confirm,
    Cost,
    DataSpec,
    Preset,
    Resources,
    SearchSpaceError,
)

__all__ = ["list_presets", "load_preset", "parse_preset"]

_NONE_WORDS = ("none", "null")


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
                                   f"path (--backbone {str(user)!r})")
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
    )
