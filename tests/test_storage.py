"""rspose_tune._storage: locations resolve, join, read, write, copy and check writability the same way for
local paths and URIs (S3 against moto's server: ``s3_env``)."""

from __future__ import annotations

import os

import pytest

from rspose_tune import _storage as storage
from tests.conftest import BUCKET


def test_storage_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve_storage("results") == str(tmp_path / "results")
    assert storage.resolve_storage(f"file://{tmp_path}/x") == str(tmp_path / "x")
    assert storage.resolve_storage("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert storage.join("s3://b/p", "run", "trials") == "s3://b/p/run/trials"
    assert storage.join("s3://b/p?region=x", "run") == "s3://b/p/run?region=x"
    with pytest.raises(storage.StorageError, match="--storage 'file://relative'"):
        storage.resolve_storage("file://relative")
    with pytest.raises(storage.StorageError, match="`journal_path` 'file://relative'"):
        storage.resolve_storage("file://relative", "`journal_path`")


def test_runspec_re_exports_the_storage_helpers():
    from rspose_tune import runspec

    for name in ("exists", "filesystem", "is_uri", "join", "resolve_storage"):
        assert getattr(runspec, name) is getattr(storage, name)


def test_write_read_copy_locally_leave_no_temporary_file(tmp_path):
    target = str(tmp_path / "a" / "b" / "f.txt")
    assert not storage.exists(target)
    storage.write_text(target, "one\n")
    storage.write_text(target, "two\n")  # replaced
    assert storage.read_text(target) == "two\n" and os.listdir(tmp_path / "a" / "b") == ["f.txt"]
    storage.copy_file(target, tmp_path / "c" / "g.txt")
    assert (tmp_path / "c" / "g.txt").read_text() == "two\n"
    with pytest.raises(FileNotFoundError, match="is not a file"):
        storage.copy_file(tmp_path / "missing", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        storage.read_text(str(tmp_path / "missing"))


@pytest.mark.slow
def test_write_read_copy_on_s3(s3_env, tmp_path, monkeypatch):
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{BUCKET}/storage-test/f.txt"
    storage.write_text(uri, "hello\n")
    assert storage.exists(uri) and storage.read_text(uri) == "hello\n"
    storage.copy_file(uri, tmp_path / "down.txt")  # download
    assert (tmp_path / "down.txt").read_text() == "hello\n"
    (tmp_path / "down.txt").write_text("again\n")
    storage.copy_file(tmp_path / "down.txt", uri)  # upload replaces
    assert storage.read_text(uri) == "again\n"
    with pytest.raises(FileNotFoundError):
        storage.copy_file(f"s3://{BUCKET}/storage-test/missing", tmp_path / "x")


def test_unwritable_names_the_path_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    assert storage.unwritable(tmp_path / "new" / "sub") is None
    assert storage.unwritable(tmp_path / "new.txt", folder=False) is None
    assert storage.unwritable(tmp_path / "file") == f"{tmp_path}/file is a file, not a folder"
    assert storage.unwritable(tmp_path, folder=False) == f"{tmp_path} is a folder, not a file"
    assert storage.unwritable(tmp_path / "file" / "sub") == f"{tmp_path}/file is a file"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: every folder is writable")
        assert storage.unwritable(locked / "sub") == f"{locked} is not writable"
        assert storage.unwritable(locked) == f"{locked} is not writable"
    finally:
        locked.chmod(0o700)
