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
    "restore_checkpoint",
    "safe_checkpoint_loading",
    "strip_unsafe_state",
    "verify_checkpoint_dir",
    "write_manifest",
]

CHECKPOINT_FILE = "checkpoint.pth"
MANIFEST_FILE = "rspose_checkpoint.json"
MANIFEST_VERSION = 1


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
    return dest


def fetch_checkpoint(checkpoint, dest_dir: Path, *, trial_id: str) -> tuple[Path, int | None]:
    """:func:`restore_checkpoint` plus the epoch the checkpoint was taken after (its manifest's),
    from one download of the checkpoint."""
    with checkpoint.as_directory() as ckpt_dir:
        manifest = Path(ckpt_dir) / MANIFEST_FILE
        epoch = int(json.loads(manifest.read_text())["epoch"]) if manifest.is_file() else None
        return _copy_verified(Path(ckpt_dir), Path(dest_dir), trial_id), epoch
