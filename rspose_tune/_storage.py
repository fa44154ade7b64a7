"""Storage I/O for local paths and URIs alike: one face over :mod:`pyarrow.fs`.

A location is a local path or any URI that :meth:`pyarrow.fs.FileSystem.from_uri` opens
(``file://``, ``s3://bucket/prefix`` ...). :func:`resolve_storage` turns ``file://`` URIs and
relative paths into absolute local paths and keeps other URIs; :func:`filesystem` gives the
``(FileSystem, path on it)`` pair for either. Local writes go through a temporary file and a rename;
an object store's upload is all-or-nothing. Only this module and the Parquet reader/writer
(:mod:`rspose_tune.results`, which hands the pair to pyarrow) open files on storage.

An object store that is away for a while (a 30 s outage, ``bench soak``) is ridden out twice over:
every S3 request is retried by the AWS SDK (:data:`S3_RETRY_ATTEMPTS`, exponential back-off,
pyarrow's ``retry_strategy``), also in the Ray processes that upload checkpoints and artifacts
(:class:`RetryingS3FileSystem`: pyarrow 26 drops ``retry_strategy`` when it pickles an
``S3FileSystem``), and the writes this package makes itself (rows, journal, run files) are tried
again as a whole with a logged, bounded back-off (:func:`retrying`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.fs as pafs

from rspose_tune.errors import RSPoseTuneError

__all__ = [
    "S3_RETRY_ATTEMPTS",
    "RetryingS3FileSystem",
    "StorageError",
    "WRITE_RETRY_DELAYS_S",
    "copy_file",
    "exists",
    "filesystem",
    "is_local",
    "is_uri",
    "join",
    "read_text",
    "ray_storage",
    "resolve_storage",
    "retrying",
    "unwritable",
    "write_text",
]

_CHUNK = 1 << 20

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Retries of one S3 request by the AWS SDK (``AwsDefaultS3RetryStrategy``: doubling waits from
#: about 50 ms, no retry quota; measured: one request against a stopped
#: server gives up after 58.6 s, tools/s3_outage_timing.py).
S3_RETRY_ATTEMPTS = 10
#: Waits before each further try of a whole write (:func:`retrying`) once the SDK's retries failed.
WRITE_RETRY_DELAYS_S = (5.0, 15.0, 30.0)


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


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's ``S3FileSystem`` whose ``retry_strategy`` survives pickling (pyarrow 26's
    ``__reduce__`` leaves it out, so the copy Ray sends to a trial's process would retry 3 times)."""

    def __init__(self, **options: Any):
        options.setdefault("retry_strategy", pafs.AwsDefaultS3RetryStrategy(max_attempts=S3_RETRY_ATTEMPTS))
        super().__init__(**options)
        self._options = options

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_s3, (self._options,)


def _rebuild_s3(options: dict[str, Any]) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(**options)


def _with_retries(fs: pafs.FileSystem) -> pafs.FileSystem:
    """An ``S3FileSystem`` (from ``from_uri``) as a :class:`RetryingS3FileSystem`, same options."""
    if isinstance(fs, pafs.S3FileSystem) and not isinstance(fs, RetryingS3FileSystem):
        _, (options,) = fs.__reduce__()
        return RetryingS3FileSystem(**options)
    return fs


def filesystem(
    path: str | os.PathLike[str], fs: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` for a local path or a URI (S3: a :class:`RetryingS3FileSystem`);
    ``fs`` given: ``(fs, path)`` as is."""
    text = os.fspath(path)
    if fs is not None:
        return fs, text
    if is_uri(text):
        opened, where = pafs.FileSystem.from_uri(text)
        return _with_retries(opened), where
    return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())


def ray_storage(location: str) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig``/``Tuner.restore``: a local path
    and None, or an object store's path and its filesystem (S3: :class:`RetryingS3FileSystem`,
    which Ray pickles to every trial's process)."""
    if not is_uri(location):
        return location, None
    fs, where = filesystem(location)
    return where, fs


def retrying(what: str, write: Callable[[], _T], delays_s: tuple[float, ...] = WRITE_RETRY_DELAYS_S) -> _T:
    """``write()``, tried again after each of ``delays_s`` when it raises ``OSError`` (the storage
    away), each time with a warning naming ``what``; the last error is raised."""
    for attempt, delay in enumerate((*delays_s, None), start=1):
        try:
            return write()
        except OSError as exc:
            if delay is None or isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            logger.warning("storage: %s failed (%s: %s); try %d of %d in %.0f s", what, type(exc).__name__,
                           str(exc).splitlines()[0][:300], attempt + 1, len(delays_s) + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


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
    in one PUT (:func:`retrying`)."""
    fs, where = filesystem(path)
    if not is_local(fs):
        retrying(f"writing {path}", lambda: _put(fs, where, text.encode("utf-8")))
        return
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    head, _, name = where.rpartition("/")
    tmp = f"{head}/.{name}.{uuid.uuid4().hex}.tmp"  # hidden: readers of a folder skip it
    try:
        Path(tmp).write_text(text)
        os.replace(tmp, where)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _put(fs: pafs.FileSystem, where: str, data: bytes) -> None:
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(where) as f:
        f.write(data)


def copy_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy one file between any two locations (download, upload or local copy; a local target's
    folder is created); :class:`FileNotFoundError` when ``source`` is not a file."""
    src_fs, src = filesystem(source)
    dst_fs, dst = filesystem(target)
    if src_fs.get_file_info(src).type != pafs.FileType.File:
        raise FileNotFoundError(f"{os.fspath(source)!r} is not a file")
    if is_local(dst_fs):
        dst_fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    retrying(f"copying {os.fspath(source)} to {os.fspath(target)}", lambda: pafs.copy_files(
        src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs, chunk_size=_CHUNK))


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
