"""Storage I/O for local paths and URIs alike: one face over :mod:`pyarrow.fs`.

A location is a local path or any URI that :meth:`pyarrow.fs.FileSystem.from_uri` opens
(``file://``, ``s3://bucket/prefix`` ...). :func:`resolve_storage` turns ``file://`` URIs and
relative paths into absolute local paths and keeps other URIs; :func:`filesystem` gives the
``(FileSystem, path on it)`` pair for either. Local writes go through a temporary file and a rename;
an object store's upload is all-or-nothing. Only this module and the Parquet reader/writer
(:mod:`rspose_tune.results`, which hands the pair to pyarrow) open files on storage.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from rspose_tune.errors import RSPoseTuneError

__all__ = [
    "StorageError",
    "copy_file",
    "exists",
    "filesystem",
    "is_local",
    "is_uri",
    "join",
    "read_text",
    "resolve_storage",
    "unwritable",
    "write_text",
]

_CHUNK = 1 << 20


class StorageError(RSPoseTuneError, ValueError):
    """A location that :mod:`pyarrow.fs` cannot open; the message names the flag and the location."""


def is_uri(path: str | os.PathLike[str]) -> bool:
    return "://" in os.fspath(path)


def resolve_storage(storage: str | os.PathLike[str], what: str = "--storage") -> str:
    """An absolute local path (relative paths: to the working directory; ``file://`` URIs: their
    path), or the URI itself for other filesystems (``s3://bucket/prefix``; opened when first used).
    :class:`StorageError` naming ``what`` for a ``file://`` URI that pyarrow cannot open."""
    text = os.fspath(storage)
    if text.startswith("file://"):
        try:
            _, path = pafs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError
            raise StorageError(f"{what} {text!r}: not a URI that pyarrow.fs can open ({exc})") from exc
        return str(Path(path).absolute())
    if is_uri(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().absolute())


def filesystem(
    path: str | os.PathLike[str], fs: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` for a local path or a URI; ``fs`` given: ``(fs, path)`` as is."""
    text = os.fspath(path)
    if fs is not None:
        return fs, text
    if is_uri(text):
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for local paths and URIs alike (a URI's query string stays at the end)."""
    head, sep, query = base.partition("?")
    out = head.rstrip("/") + "".join(f"/{p.strip('/')}" for p in parts)
    return out + sep + query


def exists(path: str) -> bool:
    fs, where = filesystem(path)
    return fs.get_file_info(where).type != pafs.FileType.NotFound


def read_text(path: str) -> str:
    """The UTF-8 text of the file at ``path`` (:class:`FileNotFoundError` when there is none)."""
    fs, where = filesystem(path)
    with fs.open_input_stream(where) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Write ``text``: locally through a hidden temporary file and a rename (atomic), on object stores
    in one PUT."""
    fs, where = filesystem(path)
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    if is_local(fs):
        head, _, name = where.rpartition("/")
        tmp = f"{head}/.{name}.{uuid.uuid4().hex}.tmp"  # hidden: readers of a folder skip it
        try:
            Path(tmp).write_text(text)
            os.replace(tmp, where)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return
    with fs.open_output_stream(where) as f:
        f.write(text.encode("utf-8"))


def copy_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy one file between any two locations (download, upload or local copy; a local target's
    folder is created); :class:`FileNotFoundError` when ``source`` is not a file."""
    src_fs, src = filesystem(source)
    dst_fs, dst = filesystem(target)
    if src_fs.get_file_info(src).type != pafs.FileType.File:
        raise FileNotFoundError(f"{os.fspath(source)!r} is not a file")
    if is_local(dst_fs):
        dst_fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs, chunk_size=_CHUNK)


def unwritable(path: str | os.PathLike[str], *, folder: bool = True) -> str | None:
    """Why the local ``path`` cannot be written, checked without creating anything (None: it can).

    ``folder``: a folder to use or create, else a file to create or replace. The reason names the
    path in the way: ``"<path> is a file, not a folder"``, ``"<path> is a folder, not a file"``,
    ``"<parent> is a file"`` (nothing can be created under it) or ``"<parent> is not writable"``
    (the nearest existing folder: ``path`` itself when it exists).
    """
    path = Path(path).expanduser().absolute()
    if folder and path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    if not folder and path.is_dir():
        return f"{path} is a folder, not a file"
    nearest = next(p for p in (path if folder else path.parent, *path.parents) if p.exists())  # "/" exists
    if not nearest.is_dir():
        return f"{nearest} is a file"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"{nearest} is not writable"
    return None
