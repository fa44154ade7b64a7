"""rspose_tune.training._checkpoint: the manifest that ties a checkpoint to its trial, picking the newest complete
checkpoint, and weights-only loading."""

from __future__ import annotations

import pytest


def test_checkpoint_from_another_trial_is_refused(tmp_path):
    from rspose_tune.training._checkpoint import CHECKPOINT_FILE, CheckpointMismatchError, verify_checkpoint_dir, write_manifest

    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a real checkpoint")
    write_manifest(tmp_path, trial_id="abc", epoch=1)
    assert verify_checkpoint_dir(tmp_path, trial_id="abc")["epoch"] == 1
    with pytest.raises(CheckpointMismatchError, match="written by trial 'abc', not 'xyz'"):
        verify_checkpoint_dir(tmp_path, trial_id="xyz")
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"tampered")
    with pytest.raises(CheckpointMismatchError, match="changed since it was written"):
        verify_checkpoint_dir(tmp_path, trial_id="abc")


def test_the_newest_complete_checkpoint_in_the_trial_folder_wins_over_an_older_one_from_tune(tmp_path):
    """A driver killed between a trial's checkpoint and its next experiment-state snapshot is
    restored with an older checkpoint (or none): the trial's storage folder has the newest."""
    import pyarrow.fs as pafs
    from ray import tune

    from rspose_tune.training._checkpoint import (CHECKPOINT_FILE, CheckpointMismatchError, newest_checkpoint,
                                        write_manifest)

    trial = tmp_path / "trial_t1"

    def put(name, trial_id, epoch, data):
        folder = trial / name
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_FILE).write_bytes(data)
        write_manifest(folder, trial_id=trial_id, epoch=epoch)
        return folder

    old = put("checkpoint_000000", "t1", 1, b"epoch 1")
    put("checkpoint_000001", "t1", 2, b"epoch 2")
    put("checkpoint_000002", "t1", 3, b"epoch 3")
    (trial / "checkpoint_000002" / CHECKPOINT_FILE).write_bytes(b"epo")  # its upload cut short
    put("checkpoint_000003", "other", 9, b"another trial's")
    fs = pafs.LocalFileSystem()

    def pick(given):
        dest = tmp_path / f"dest{len(list(tmp_path.glob('dest*')))}"
        checkpoint, local, epoch = newest_checkpoint(given, fs, str(trial), trial_id="t1", dest_dir=dest)
        return checkpoint, (local.read_bytes() if local else None), epoch

    checkpoint, data, epoch = pick(tune.Checkpoint.from_directory(str(old)))
    assert (epoch, data) == (2, b"epoch 2") and checkpoint.path.endswith("checkpoint_000001")
    assert pick(None)[1:] == (b"epoch 2", 2)  # Tune passed none at all
    # Epoch 2's result never reached the driver (no row): epoch 1's checkpoint, and epoch 2 again.
    checkpoint, local, epoch = newest_checkpoint(None, fs, str(trial), trial_id="t1", dest_dir=tmp_path / "r",
                                                 recorded=lambda e: e <= 1)
    assert (epoch, local.read_bytes()) == (1, b"epoch 1")
    (trial / "checkpoint_000001" / CHECKPOINT_FILE).write_bytes(b"tampered")
    with pytest.raises(CheckpointMismatchError, match="changed since"):  # Tune's own must verify
        pick(tune.Checkpoint.from_directory(str(trial / "checkpoint_000001")))
    assert pick(None)[1:] == (b"epoch 1", 1)
    assert newest_checkpoint(None, fs, str(tmp_path / "none"), trial_id="t1", dest_dir=tmp_path / "d") == (
        None, None, None)


def test_trial_checkpoint_loads_with_weights_only(tmp_path):
    """The saved format needs only the numpy allowlist, never weights_only=False."""
    import numpy as np
    import torch

    from rspose_tune.training._checkpoint import safe_checkpoint_loading, strip_unsafe_state

    from mmengine.logging import HistoryBuffer

    ckpt = {
        "meta": {"epoch": 1, "dataset_meta": {"sigmas": np.array([0.026, 0.025], dtype=np.float32)}},
        "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"iter": np.int64(3)}, "resumed_keys": {}},
    }
    path = tmp_path / "c.pth"
    torch.save(ckpt, path)
    with pytest.raises(Exception, match="getattr|HistoryBuffer"):
        with safe_checkpoint_loading():
            torch.load(path, weights_only=True)
    strip_unsafe_state(ckpt)
    torch.save(ckpt, path)
    with safe_checkpoint_loading():
        loaded = torch.load(path, weights_only=True)
    assert loaded["meta"]["dataset_meta"]["sigmas"].tolist() == pytest.approx([0.026, 0.025])
    assert loaded["message_hub"]["log_scalars"] == {}
