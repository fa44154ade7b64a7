"""Where the Optuna journal lives: a local file, or a URI whose local working copy is uploaded at
every snapshot (Optuna's ``JournalFileBackend`` needs a POSIX file; see docs/trust.md#resume)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rspose_tune._layout import JOURNAL_FILE
from rspose_tune._storage import copy_file, is_uri, resolve_storage


def journal_location(path: str | os.PathLike[str] | None) -> str | None:
    """An absolute local path; a URI on a non-local filesystem as is (``file://``: its path)."""
    return None if path is None else resolve_storage(path, "`journal_path`")


def local_journal(path: str, local: str | None) -> str:
    """The journal file Optuna writes: ``path`` itself, or ``local``, the working copy of a URI's
    journal (a fresh temporary folder, first filled from the URI when it exists, if None)."""
    if not is_uri(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return path
    if local is None:
        local = os.path.join(tempfile.mkdtemp(prefix="rspose_journal_"), JOURNAL_FILE)
        try:
            copy_file(path, local)
        except FileNotFoundError:
            pass  # a new study
    return local


def upload_journal(local: str | None, path: str | None) -> None:
    """Upload the working copy ``local`` of the journal at the URI ``path`` (no-op without one)."""
    if local is not None and os.path.isfile(local):
        copy_file(local, path)  # type: ignore[arg-type]
