"""Issue 2: the installed stack works end to end on CPU (real MMPose, real evaluation)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "mmcv", "mmengine", "mmpose", "mmpretrain", "mmdet", "ray", "optuna", "pyarrow")


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_import_rspose_tune_has_no_side_effects():
    loaded = json.loads(
        _run(
            f"""
            import json, sys
            before = set(sys.modules)
            import rspose_tune, rspose_tune.mmpose_adapter, trainables, search_spaces
            new = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY!r})
            print(json.dumps([new, 'mmcv.ops' in sys.modules]))
            """
        )
    )
    assert loaded == [[], False]


def test_trainables_and_package_import_from_install_not_sys_path(tmp_path):
    # Run from an unrelated directory: works only if the packages are installed.
    out = subprocess.run(
        [sys.executable, "-c", "import rspose_tune, trainables, search_spaces; print(rspose_tune.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )
    assert Path(out.stdout.strip()).name == "__init__.py"


def test_shim_active_without_compiled_ops_and_fails_loudly_on_use():
    result = _run(
        """
        import json
        from rspose_tune.mmpose_adapter import install_mmcv_ops_shim, has_compiled_mmcv_ops, MissingMMCVOpsError
        assert not has_compiled_mmcv_ops()
        active = install_mmcv_ops_shim()
        import mmpose.models  # would raise ModuleNotFoundError: mmcv._ext without the shim
        from mmcv.ops import MultiScaleDeformableAttention
        try:
            MultiScaleDeformableAttention(embed_dims=256)
            msg = None
        except MissingMMCVOpsError as exc:
            msg = str(exc)
        import mmcv.ops
        print(json.dumps([active, msg, sorted(n for n in dir(mmcv.ops) if not n.startswith('_'))]))
        """
    )
    active, msg, names = json.loads(result)
    assert active is True
    assert "full mmcv" in msg and "MultiScaleDeformableAttention" in msg
    assert names == ["MultiScaleDeformableAttention"]  # narrow: nothing else is faked


def test_mmpose_models_import_fails_without_shim():
    """The shim is needed at all: without it, mmpose.models does not import under mmcv-lite."""
    out = subprocess.run(
        [sys.executable, "-c", "import mmpose.models"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0 and "mmcv._ext" in out.stderr


def test_shim_inert_when_compiled_ops_exist(tmp_path):
    """With a (stand-in) compiled ``mmcv._ext`` on mmcv's path, the shim installs nothing."""
    fake = tmp_path / "fakeext"
    fake.mkdir()
    (fake / "_ext.py").write_text("# stands in for the compiled extension\n")
    result = _run(
        f"""
        import json, sys
        import mmcv
        mmcv.__path__.append({str(fake)!r})
        from rspose_tune.mmpose_adapter import install_mmcv_ops_shim, has_compiled_mmcv_ops
        print(json.dumps([has_compiled_mmcv_ops(), install_mmcv_ops_shim(), 'mmcv.ops' in sys.modules]))
        """
    )
    assert json.loads(result) == [True, False, False]


CONFIGS = {
    "vitpose-b": "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
    "simcc-res50": "mmpose::body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py",
    "hrnet-w32": "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_installed_configs_build_shrunk_and_forward(name, mmpose_base):
    import torch
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.configs import load_base_config, shrink_model

    cfg = load_base_config(CONFIGS[name])
    shrink_model(cfg)
    assert "init_cfg" not in cfg.model.backbone  # no pretrained download
    model = MODELS.build(cfg.model)
    model.init_weights()
    w, h = cfg.codec["input_size"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w), None, mode="tensor")
    if isinstance(out, tuple):  # SimCC: (x-vectors, y-vectors)
        assert out[0].shape[:2] == (2, 17) and out[0].shape[-1] == int(w * cfg.codec["simcc_split_ratio"])
    else:
        hw, hh = cfg.codec["heatmap_size"]
        assert out.shape == (2, 17, hh, hw)


def _train_one_epoch(cfg, tmp_path):
    from mmengine.runner import Runner

    cfg.work_dir = str(tmp_path)
    cfg.train_cfg["max_epochs"] = 1
    cfg.train_cfg["val_interval"] = 1
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[key]["batch_size"] = 4
        cfg[key]["num_workers"] = 0
        cfg[key]["persistent_workers"] = False
    cfg.default_hooks["checkpoint"] = dict(type="CheckpointHook", interval=-1, save_best=None)
    cfg.default_hooks.pop("visualization", None)
    cfg.param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=True)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.val_loop.run()


@pytest.mark.slow
def test_runner_trains_one_epoch_on_bundled_coco(tmp_path, data_dir, mmpose_base):
    from rspose_tune.mmpose_adapter.configs import load_base_config, set_dataset, shrink_model

    cfg = load_base_config(CONFIGS["hrnet-w32"])
    shrink_model(cfg)
    set_dataset(cfg, root=data_dir / "coco", train_ann="test_coco.json", val_ann="test_coco.json",
                train_img="", val_img="")
    metrics = _train_one_epoch(cfg, tmp_path)
    assert "coco/AP" in metrics and 0.0 <= metrics["coco/AP"] <= 1.0


@pytest.mark.slow
def test_runner_trains_one_epoch_on_bundled_crowdpose(tmp_path, data_dir, mmpose_base):
    from rspose_tune.mmpose_adapter.configs import load_base_config, set_dataset, shrink_model

    cfg = load_base_config(
        "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_hrnet-w32_8xb64-210e_crowdpose-256x192.py"
    )
    shrink_model(cfg)
    set_dataset(cfg, root=data_dir / "crowdpose", train_ann="test_crowdpose.json",
                val_ann="test_crowdpose.json", train_img="", val_img="")
    metrics = _train_one_epoch(cfg, tmp_path)
    assert "crowdpose/AP" in metrics and 0.0 <= metrics["crowdpose/AP"] <= 1.0
