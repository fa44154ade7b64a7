"""Tests for rspose_tune.demo_data (the procedural COCO-format dataset), and a real Runner learning on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rspose_tune.demo_data import (
    COCO_KEYPOINT_NAMES,
    TRAIN_ANN,
    TRAIN_IMG,
    VAL_ANN,
    VAL_IMG,
    DemoDataError,
    DemoDataParams,
    dataset_digest,
    generate_demo_dataset,
    is_complete,
)

SMALL = dict(n_train=12, n_val=5)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    """60 + 20 images: enough for every kind of annotation to appear."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_train=60, n_val=20, seed=3)


def test_layout(medium):
    for rel in (TRAIN_ANN, VAL_ANN, "manifest.json"):
        assert (medium / rel).is_file()
    assert len(list((medium / TRAIN_IMG).glob("*.jpg"))) == 60
    assert len(list((medium / VAL_IMG).glob("*.jpg"))) == 20
    assert is_complete(medium, DemoDataParams(n_train=60, n_val=20, seed=3))
    assert not is_complete(medium, DemoDataParams(n_train=60, n_val=20, seed=4))


def test_same_seed_same_bytes(tmp_path):
    a = generate_demo_dataset(tmp_path / "a", seed=7, **SMALL)
    b = generate_demo_dataset(tmp_path / "b", seed=7, **SMALL)
    assert file_bytes(a) == file_bytes(b)
    assert dataset_digest(a) == dataset_digest(b)


def test_different_seed_different_bytes(tmp_path):
    a = generate_demo_dataset(tmp_path / "a", seed=7, **SMALL)
    b = generate_demo_dataset(tmp_path / "b", seed=8, **SMALL)
    fa, fb = file_bytes(a), file_bytes(b)
    assert fa.keys() == fb.keys()
    assert fa[TRAIN_ANN] != fb[TRAIN_ANN]
    assert all(fa[k] != fb[k] for k in fa if k.endswith(".jpg"))
    assert dataset_digest(a) != dataset_digest(b)


def test_train_and_val_differ(medium):
    assert (medium / TRAIN_IMG / "000001.jpg").read_bytes() != (medium / VAL_IMG / "000001.jpg").read_bytes()


@pytest.mark.parametrize("ann", [TRAIN_ANN, VAL_ANN])
def test_loads_with_xtcocotools_and_pycocotools(medium, ann):
    from pycocotools.coco import COCO as PyCOCO
    from xtcocotools.coco import COCO as XtCOCO

    for cls in (XtCOCO, PyCOCO):
        coco = cls(str(medium / ann))
        assert coco.getCatIds() == [1]
        cat = coco.loadCats(1)[0]
        assert cat["name"] == "person" and tuple(cat["keypoints"]) == COCO_KEYPOINT_NAMES
        assert len(cat["skeleton"]) == 19
        assert len(coco.getImgIds()) == (60 if ann == TRAIN_ANN else 20)
        assert len(coco.getAnnIds()) >= len(coco.getImgIds())


@pytest.mark.parametrize("ann", [TRAIN_ANN, VAL_ANN])
def test_annotations_are_consistent(medium, ann):
    data = json.loads((medium / ann).read_text())
    images = {img["id"]: img for img in data["images"]}
    seen_v = set()
    per_image: dict[int, int] = {}
    for a in data["annotations"]:
        img = images[a["image_id"]]
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
        assert a["category_id"] == 1 and a["iscrowd"] == 0
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] and y + h <= img["height"]
        assert 0 < a["area"] <= w * h
        kpts = np.asarray(a["keypoints"], dtype=float).reshape(17, 3)
        v = kpts[:, 2]
        assert set(v) <= {0, 1, 2}
        seen_v |= set(v)
        assert a["num_keypoints"] == int((v > 0).sum()) > 0
        assert np.all(kpts[v == 0, :2] == 0)
        labelled = kpts[v > 0, :2]
        assert np.all(labelled[:, 0] >= x) and np.all(labelled[:, 0] <= x + w)
        assert np.all(labelled[:, 1] >= y) and np.all(labelled[:, 1] <= y + h)
        assert np.all(labelled[:, 0] < img["width"]) and np.all(labelled[:, 1] < img["height"])
    if ann == TRAIN_ANN:  # 60 images: occlusions, cut-off people and two-person images all occur
        assert seen_v == {0, 1, 2}
        assert max(per_image.values()) == 2
    assert set(per_image) == set(images)


def test_images_decode(medium):
    import cv2

    image = cv2.imread(str(medium / TRAIN_IMG / "000001.jpg"))
    assert image.shape == (128, 128, 3)
    assert image.std() > 10  # textured, not blank


def test_custom_image_size(tmp_path):
    import cv2

    root = generate_demo_dataset(tmp_path / "d", n_train=2, n_val=1, image_size=(96, 160))
    assert cv2.imread(str(root / TRAIN_IMG / "000001.jpg")).shape == (160, 96, 3)
    data = json.loads((root / TRAIN_ANN).read_text())
    assert {(i["width"], i["height"]) for i in data["images"]} == {(96, 160)}


def test_idempotent(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert generate_demo_dataset(tmp_path / "d", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    assert sorted(os.listdir(tmp_path)) == ["d"]  # no temporary folders left behind


def test_regenerates_on_new_parameters(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", **SMALL)
    old = dataset_digest(root)
    generate_demo_dataset(root, n_train=6, n_val=3)
    assert dataset_digest(root) != old
    assert len(list((root / TRAIN_IMG).glob("*.jpg"))) == 6
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_repairs_incomplete_dataset(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", **SMALL)
    digest = dataset_digest(root)
    (root / TRAIN_IMG / "000003.jpg").unlink()
    assert not is_complete(root)
    generate_demo_dataset(root, **SMALL)
    assert is_complete(root) and dataset_digest(root) == digest


def test_refuses_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(DemoDataError, match=r"is not empty and holds no demo-data manifest.json; refusing"):
        generate_demo_dataset(root, **SMALL)
    assert (root / "precious.txt").read_text() == "keep me"


def test_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "d").mkdir()
    assert is_complete(generate_demo_dataset(tmp_path / "d", **SMALL))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_train=0), r"`n_train` must be an integer >= 1, got 0"),
        (dict(n_val=2.5), r"`n_val` must be an integer >= 1, got 2.5"),
        (dict(seed=-1), r"`seed` must be an integer >= 0, got -1"),
        (dict(image_size=(32, 128)), r"`image_size` must be \(width, height\) with both integers >= 64"),
        (dict(image_size=(128,)), r"`image_size` must be \(width, height\)"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_demo_dataset(tmp_path / "d", **kwargs)


def test_digest_needs_a_dataset(tmp_path):
    with pytest.raises(DemoDataError, match="holds no demo-data manifest.json"):
        dataset_digest(tmp_path)


# --------------------------------------------------------------------------------------------
# End to end: a real mmengine Runner on the demo data
# --------------------------------------------------------------------------------------------


def _train_demo(root: Path, work_dir: Path, epochs: int, *, rspose: bool) -> tuple[list[float], list[float]]:
    """Train the demo config; return (mean train loss per epoch, coco/AP per epoch)."""
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from rspose_tune.spaces import load_preset

    preset = load_preset("demo", data_root=root, env={})
    if rspose:
        from rspose_tune.mmpose_adapter.configs import build_config

        cfg = build_config(preset, dict(preset.known_good[0]), work_dir=work_dir, max_epochs=epochs)
    else:  # the config file as shipped (stock HeatmapHead + KeypointMSELoss)
        cfg = Config.fromfile(str(preset.source.parent / preset.base_config))
        cfg.work_dir = str(work_dir)
        cfg.train_cfg.max_epochs = epochs
        for key in ("train_dataloader", "val_dataloader"):
            cfg[key].dataset.data_root = str(root)
        cfg.test_dataloader = cfg.val_dataloader
        cfg.val_evaluator.ann_file = str(root / VAL_ANN)
        cfg.test_evaluator = cfg.val_evaluator
    cfg.log_level = "ERROR"

    class Record(Hook):
        def __init__(self) -> None:
            self.batch: list[float] = []
            self.losses: list[float] = []
            self.aps: list[float] = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self.batch.append(float(outputs["loss"].detach()))

        def after_train_epoch(self, runner) -> None:
            self.losses.append(sum(self.batch) / len(self.batch))
            self.batch = []

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.aps.append(float(metrics["coco/AP"]))

    torch.set_num_threads(1)
    record = Record()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(record, "LOWEST")
    runner.train()
    return record.losses, record.aps


@pytest.mark.slow
@pytest.mark.parametrize("rspose", [False, True], ids=["mse", "rspose"])
def test_runner_learns_on_demo_data(mmpose_ready, tmp_path_factory, rspose):
    root = generate_demo_dataset(tmp_path_factory.getbasetemp() / "demo_e2e", n_train=400, n_val=100)
    losses, aps = _train_demo(root, tmp_path_factory.mktemp("work"), epochs=3, rspose=rspose)
    assert len(losses) == 3 and len(aps) == 3
    assert losses[-1] < 0.8 * losses[0], losses
    assert aps[-1] > 0.2, aps
