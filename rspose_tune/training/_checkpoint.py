"""Trial checkpoints: mmengine's format, loadable with ``torch.load(weights_only=True)``.

mmengine 0.10.7 saves its message hub into every checkpoint: ``HistoryBuffer`` objects (which
pickle their statistics *functions* through ``getattr``) and numpy arrays/dtypes (the dataset
meta). Under torch >= 2.6, ``torch.load`` defaults to ``weights_only=True`` and refuses them, so
``Runner.resume`` breaks. Rather than ``weights_only=False`` (arbitrary code execution on load),
a trial checkpoint

- drops the logging history (``message_hub.log_scalars``: smoothing windows for log lines, not
  training state) before saving, so no function reference is pickled; and
- is loaded under an explicit allowlist of numpy reconstruction globals (:data:`SAFE_GLOBALS`);
- carries a manifest with the trial id and the SHA-256 of the file, checked before loading, so a
  trial only ever unpickles a file it wrote itself.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FILE",
    "MANIFEST_FILE",
    "CheckpointMismatchError",
    "SAFE_GLOBALS",
    "fetch_checkpoint",
    "RESULT_FILE",
    "newest_checkpoint",
    "oldest_checkpoint_path",
    "read_checkpoint_result",
    "restore_checkpoint",
    "safe_checkpoint_loading",
    "strip_unsafe_state",
    "verify_checkpoint_dir",
    "write_manifest",
]

CHECKPOINT_FILE = "checkpoint.pth"
MANIFEST_FILE = "rspose_checkpoint.json"
MANIFEST_VERSION = 1
#: The result reported with a checkpoint (JSON), written beside it by the trainable: a trial resumed
#: at its last epoch reports it again (Ray's restored state may hold an older one).
RESULT_FILE = "rspose_result.json"


def _numpy_safe_globals() -> list:
    from numpy._core.multiarray import _reconstruct, scalar

    dtype_classes = [getattr(np.dtypes, name) for name in np.dtypes.__all__ if name.endswith("DType")]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


#: Globals a trial checkpoint may contain beyond torch's defaults: numpy arrays, scalars, dtypes.
SAFE_GLOBALS = _numpy_safe_globals()


class CheckpointMismatchError(RSPoseTuneError, RuntimeError):
    """A checkpoint directory was not written by this trial (or was modified since)."""


@contextlib.contextmanager
def safe_checkpoint_loading() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` accept :data:`SAFE_GLOBALS`, and nothing else."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def strip_unsafe_state(checkpoint: dict) -> None:
    """Remove state that cannot be loaded with ``weights_only=True`` (in place)."""
    hub = checkpoint.get("message_hub")
    if isinstance(hub, dict):
        hub["log_scalars"] = {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, *, trial_id: str, epoch: int) -> None:
    """Record who wrote ``directory/checkpoint.pth`` and its hash."""
    manifest = {
        "version": MANIFEST_VERSION,
        "trial_id": trial_id,
        "epoch": int(epoch),
        "sha256": _sha256(directory / CHECKPOINT_FILE),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def verify_checkpoint_dir(directory: Path, *, trial_id: str) -> dict:
    """Check a checkpoint directory's manifest before anything in it is unpickled.

    Returns:
        The manifest (``trial_id``, ``epoch``, ``sha256``).

    Raises:
        CheckpointMismatchError: no manifest, another trial's checkpoint, or a changed file.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file() or not (directory / CHECKPOINT_FILE).is_file():
        raise CheckpointMismatchError(
            f"{str(directory)!r} is not an rspose_tune trial checkpoint "
            f"(needs {MANIFEST_FILE} and {CHECKPOINT_FILE}); refusing to load it"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("version") != MANIFEST_VERSION:
        raise CheckpointMismatchError(
            f"{str(manifest_path)!r}: manifest version {manifest.get('version')!r}, expected {MANIFEST_VERSION}"
        )
    if manifest.get("trial_id") != trial_id:
        raise CheckpointMismatchError(
            f"{str(directory)!r} was written by trial {manifest.get('trial_id')!r}, not {trial_id!r}; "
            "refusing to load another run's checkpoint"
        )
    actual = _sha256(directory / CHECKPOINT_FILE)
    if actual != manifest.get("sha256"):
        raise CheckpointMismatchError(
            f"{str(directory / CHECKPOINT_FILE)!r} changed since it was written "
            f"(sha256 {actual[:12]}..., manifest {str(manifest.get('sha256'))[:12]}...)"
        )
    return manifest


def restore_checkpoint(checkpoint, dest_dir: Path, *, trial_id: str) -> Path:
    """Fetch a trial's checkpoint (a ``ray.tune.Checkpoint``, on any storage) into ``dest_dir``.

    The manifest is verified before the file is copied, so nothing from another trial is loaded.
    Returns the path of the local checkpoint file.
    """
    with checkpoint.as_directory() as ckpt_dir:
        return _copy_verified(Path(ckpt_dir), Path(dest_dir), trial_id)


def _copy_verified(ckpt_dir: Path, dest_dir: Path, trial_id: str) -> Path:
    import shutil

    verify_checkpoint_dir(ckpt_dir, trial_id=trial_id)
    dest = dest_dir / CHECKPOINT_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ckpt_dir / CHECKPOINT_FILE, dest)
    if (ckpt_dir / RESULT_FILE).is_file():
        shutil.copyfile(ckpt_dir / RESULT_FILE, dest_dir / RESULT_FILE)
    return dest


def read_checkpoint_result(local_checkpoint: Path) -> dict | None:
    """The result reported with a checkpoint fetched by :func:`fetch_checkpoint` (its
    :data:`RESULT_FILE`, copied beside ``local_checkpoint``), or None (a checkpoint without one)."""
    path = Path(local_checkpoint).parent / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def fetch_checkpoint(checkpoint, dest_dir: Path, *, trial_id: str) -> tuple[Path, int | None]:
    """:func:`restore_checkpoint` plus the epoch the checkpoint was taken after (its manifest's),
    from one download of the checkpoint."""
    with checkpoint.as_directory() as ckpt_dir:
        manifest = Path(ckpt_dir) / MANIFEST_FILE
        epoch = int(json.loads(manifest.read_text())["epoch"]) if manifest.is_file() else None
        return _copy_verified(Path(ckpt_dir), Path(dest_dir), trial_id), epoch


def _manifest_on_storage(fs, directory: str) -> dict | None:
    """The manifest of a checkpoint folder on a pyarrow filesystem, or None (missing, unreadable)."""
    import pyarrow.fs as pafs

    path = f"{directory.rstrip('/')}/{MANIFEST_FILE}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        try:
            return json.loads(f.read().decode())
        except ValueError:
            return None


def newest_checkpoint(given, fs, trial_fs_path: str, *, trial_id: str, dest_dir: Path, recorded=None):
    """The trial's newest complete checkpoint: ``given`` (what Tune passed) or a newer one in the
    trial's storage folder, fetched into ``dest_dir``.

    Why the folder is read at all: the driver snapshots its experiment state (which names each
    trial's latest checkpoint) at most every 10 s and after every ``num_to_keep`` checkpoints, so a
    driver killed in between is restored with an older checkpoint (or none), and the trial would
    train again epochs whose results are already in the Parquet table. Each checkpoint reported
    is on storage before its result reaches the driver, so the folder always holds the newest.
    A folder cut short by a kill during its upload fails its manifest's hash and is skipped.
    With ``recorded`` (``epoch -> bool``: did the driver write that epoch's result row?), a folder
    is taken only for an epoch the driver recorded: a checkpoint persisted just before the kill,
    whose result never arrived, is trained again rather than leave its epoch out of the table.

    Returns:
        ``(checkpoint or None, local checkpoint file or None, epoch or None)``.
    """
    from ray.tune import Checkpoint

    candidates = []  # (epoch, is Tune's, Checkpoint)
    if given is not None:
        manifest = _manifest_on_storage(given.filesystem, given.path) or {}
        candidates.append((int(manifest.get("epoch", -1)), True, given))
    for epoch, path in _stored_checkpoints(fs, trial_fs_path, trial_id):
        if given is not None and path.rstrip("/") == str(given.path).rstrip("/"):
            continue
        if recorded is None or recorded(epoch):
            candidates.append((epoch, False, Checkpoint(path, filesystem=fs)))
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)  # newest first; Tune's wins a tie
    for _, from_tune, checkpoint in candidates:
        try:
            local, epoch = fetch_checkpoint(checkpoint, dest_dir, trial_id=trial_id)
        except CheckpointMismatchError:
            if from_tune:  # what Tune recorded must verify: never fall back silently
                raise
            continue  # a folder whose upload was cut short: the next older one
        return checkpoint, local, epoch
    return None, None, None


def _stored_checkpoints(fs, trial_fs_path: str, trial_id: str) -> list[tuple[int, str]]:
    """``(epoch, folder)`` of every ``checkpoint_*`` folder in the trial's storage folder whose
    manifest names ``trial_id`` and an epoch (the file's hash is checked only when fetched)."""
    import pyarrow.fs as pafs

    found = []
    selector = pafs.FileSelector(trial_fs_path.rstrip("/"), allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        manifest = _manifest_on_storage(fs, info.path)
        if manifest and manifest.get("trial_id") == trial_id and "epoch" in manifest:
            found.append((int(manifest["epoch"]), info.path))
    return sorted(found)


def oldest_checkpoint_path(fs, trial_fs_path: str, *, trial_id: str) -> str | None:
    """The trial's oldest checkpoint folder in its storage folder (None: there is none).

    For a restored trial whose recorded checkpoint is gone (rotated away after Ray's last
    experiment snapshot, :func:`rspose_tune._ray_compat.repoint_missing_checkpoint`): the oldest,
    not the newest, because what Tune passes is taken without asking ``recorded``, while
    :func:`newest_checkpoint` then moves on to the newest one whose epoch has a row.
    """
    stored = _stored_checkpoints(fs, trial_fs_path, trial_id)
    return stored[0][1] if stored else None
