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


def test_s3_filesystems_keep_their_retry_strategy_when_pickled(monkeypatch):
    """pyarrow 26 pickles an S3FileSystem without its retry_strategy; Ray sends the run's filesystem
    to every trial's process by pickling it, so the retries must survive that."""
    import pickle

    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    plain = pafs.S3FileSystem(endpoint_override="http://127.0.0.1:1", retry_strategy=pafs.AwsDefaultS3RetryStrategy(9))
    assert "retry_strategy" not in plain.__reduce__()[1][0]  # the pyarrow behaviour this works around
    fs, where = storage.filesystem("s3://bucket/prefix")
    assert isinstance(fs, storage.RetryingS3FileSystem) and where == "bucket/prefix"
    again = pickle.loads(pickle.dumps(fs))
    assert isinstance(again, storage.RetryingS3FileSystem)
    assert again._options["retry_strategy"].max_attempts == storage.S3_RETRY_ATTEMPTS
    assert again._options["endpoint_override"] == "http://127.0.0.1:1"
    assert storage.ray_storage("s3://bucket/prefix")[0] == "bucket/prefix"
    assert storage.ray_storage("/local/path") == ("/local/path", None)


def test_retrying_tries_again_with_a_logged_wait_then_raises(caplog, monkeypatch):
    calls = []
    monkeypatch.setattr(storage.time, "sleep", lambda s: calls.append(("sleep", s)))

    def flaky():
        calls.append("try")
        if calls.count("try") < 3:
            raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation")
        return "done"

    with caplog.at_level("WARNING", logger="rspose_tune._storage"):
        assert storage.retrying("writing x", flaky, delays_s=(1.0, 2.0, 4.0)) == "done"
    assert calls == ["try", ("sleep", 1.0), "try", ("sleep", 2.0), "try"]
    assert "storage: writing x failed (OSError: AWS Error NETWORK_CONNECTION" in caplog.text
    assert "try 2 of 4 in 1 s" in caplog.text

    def down():
        raise OSError("away")

    with pytest.raises(OSError, match="away"):
        storage.retrying("writing y", down, delays_s=(1.0,))
    with pytest.raises(FileNotFoundError):  # not the storage being away: no retry
        storage.retrying("reading z", lambda: (_ for _ in ()).throw(FileNotFoundError("z")), delays_s=(1.0,))
