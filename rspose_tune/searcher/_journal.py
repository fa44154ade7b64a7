"""Where the Optuna journal lives: a local file, or a URI whose local working copy is uploaded at
every snapshot (Optuna's ``JournalFileBackend`` needs a POSIX file; see docs/trust.md#resume)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from rspose_tune._layout import JOURNAL_FILE


def journal_location(path: str | os.PathLike[str] | None) -> str | None:
    """An absolute local path; a URI on a non-local filesystem as is (``file://``: its path)."""
    if path is None:
        return None
    text = os.fspath(path)
    if "://" in text:
        fs, where = pafs.FileSystem.from_uri(text)
        return where if isinstance(fs, pafs.LocalFileSystem) else text
    return str(Path(text).expanduser().absolute())


def local_journal(path: str, local: str | None) -> str:
    """The journal file Optuna writes: ``path`` itself, or ``local``, the working copy of a URI's
    journal (a fresh temporary folder, first filled from the URI when it exists, if None)."""
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return path
    if local is None:
        fs, remote = pafs.FileSystem.from_uri(path)
        local = os.path.join(tempfile.mkdtemp(prefix="rspose_journal_"), JOURNAL_FILE)
        if fs.get_file_info(remote).type == pafs.FileType.File:
            with fs.open_input_stream(remote) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    return local


def upload_journal(local: str | None, path: str | None) -> None:
    """Upload the working copy ``local`` of the journal at the URI ``path`` (no-op without one)."""
    if local is None or not os.path.isfile(local):
        return
    fs, remote = pafs.FileSystem.from_uri(path)
    with open(local, "rb") as src, fs.open_output_stream(remote) as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
