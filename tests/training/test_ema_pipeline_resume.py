"""RTMPose's EMA and stage-2 pipeline switch through a stopped and restarted trial (issue 27).

The real parts: the demo-rtmcc model (RTMCCHead with RSPose losses on CSPNeXt) on generated demo
data, mmengine's Runner through :func:`rspose_tune.training.train_rank` (what the trainable runs
for a one-bundle trial), the trial checkpoint :class:`TuneReportHook` saves, and the hooks
rtmpose-m configures: ``EMAHook(ema_type='ExpMomentumEMA', update_buffers=True, priority=49)`` and
``mmdet.PipelineSwitchHook``. The trial stops after its second report (as at an ASHA rung) and a
second Runner resumes it from that checkpoint (an ASHA promotion, a Tune retry and ``--resume``
all end in this call: ``tune.get_checkpoint()`` -> ``newest_checkpoint`` -> ``train_rank(resume_from)``).
Checked: the checkpoint holds EMA (``state_dict``) and raw (``ema_state_dict``) weights, and the EMA
model's calibration statistics are the raw head's (``CalibrationEMAHook``); validation runs on the
EMA weights; the resumed Runner's EMA and raw weights equal the saved ones; both stages pack
Instance Sort's ``bbox_rotation``, and the resumed trial trains on stage 2. About 13 s on one thread.

mmdet's ``PipelineSwitchHook`` is loaded from mmdet's own file: ``import mmdet.engine.hooks`` needs
compiled mmcv ops, which this CPU lock lacks (docs/real_backbone.md, RTMPose).
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook

SWITCH_EPOCH = 1  # 0-based: the second of three epochs trains on stage 2


class StopTrial(Exception):
    """Raised by the report function after the rung's report: the trial stops there."""


def _register_mmdet_pipeline_switch_hook() -> None:
    import mmdet
    from mmdet.registry import HOOKS

    if "PipelineSwitchHook" in HOOKS.module_dict:
        return
    path = Path(mmdet.__file__).parent / "engine" / "hooks" / "pipeline_switch_hook.py"
    spec = importlib.util.spec_from_file_location("mmdet_pipeline_switch_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers mmdet's class in mmdet's HOOKS
    HOOKS._imported = True  # the registry's own import of mmdet.engine.hooks would fail (mmcv.ops)


class Record(Hook):
    """Per epoch, the train pipeline's RandomBBoxTransform rotation (and whether it packs it); at each validation the weights
    the model validates with; after the Runner resumed, the raw and EMA weights."""

    priority = "LOWEST"  # after EMAHook (49) swapped the EMA weights in for validation

    def __init__(self):
        self.rotations, self.val_weights, self.resumed, self.iters = [], {}, None, 0
        self.packs_rotation = []

    @staticmethod
    def _state(module):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    @staticmethod
    def _ema(runner):
        return next(h for h in runner.hooks if type(h).__name__ == "EMAHook")

    def before_train(self, runner) -> None:  # after Runner.load_or_resume
        self.resumed = (self._state(runner.model), self._state(self._ema(runner).ema_model.module))

    def before_train_epoch(self, runner) -> None:
        box = next(t for t in runner.train_dataloader.dataset.pipeline.transforms
                   if type(t).__name__ == "RandomBBoxTransform")
        pack = next(t for t in runner.train_dataloader.dataset.pipeline.transforms
                    if type(t).__name__ == "PackPoseInputs")
        self.rotations.append((runner.epoch, box.rotate_factor))
        self.packs_rotation.append("bbox_rotation" in pack.meta_keys)  # Instance Sort's rotation, both stages

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.iters += 1

    def before_val_epoch(self, runner) -> None:
        self.val_weights[runner.epoch] = self._state(runner.model)  # keyed by epochs trained


#: demo-rtmcc's model and data with rtmpose-m's hooks, as a preset's base config (so the config
#: builder sees them: it scales the switch epoch and adds Instance Sort's meta keys to stage 2).
BASE_CONFIG = """
_base_ = [{base!r}]
codec = dict(type='SimCCLabel', input_size=(48, 64), sigma=(4.9, 5.66), simcc_split_ratio=8.0, normalize=False)
train_pipeline_stage2 = [
    dict(type='LoadImage'), dict(type='GetBBoxCenterScale'),
    dict(type='RandomBBoxTransform', shift_factor=0.0, scale_factor=(1.0, 1.0), rotate_factor=0.0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec), dict(type='PackPoseInputs'),
]
custom_hooks = [
    # rtmpose-m's EMA, with a short warm-up (gamma 2 of its 2000) so EMA and raw weights differ in a few steps
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0002, gamma=2, update_buffers=True, priority=49),
    dict(type='mmdet.PipelineSwitchHook', switch_epoch=4, switch_pipeline=train_pipeline_stage2),  # 4 of 10
]
"""


def _trial_config(tmp_path):
    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.spaces import load_preset
    from rspose_tune.training import prepare_trial_config

    spaces = Path(__file__).resolve().parents[2] / "search_spaces"
    (tmp_path / "ema_rtmcc.py").write_text(BASE_CONFIG.format(base=str(spaces / "configs" / "demo_tiny_rtmcc.py")))
    preset_file = tmp_path / "demo-rtmcc-ema.yaml"
    preset_file.write_text((spaces / "demo-rtmcc.yaml").read_text().replace(
        "base_config: configs/demo_tiny_rtmcc.py", "base_config: ema_rtmcc.py"))
    root = generate_demo_dataset(tmp_path / "data", n_train=16, n_val=4, seed=0)
    preset = load_preset(str(preset_file), data_root=root)
    cfg = prepare_trial_config(preset, dict(preset.known_good[0]), tmp_path / "trial", max_epochs=3,
                               val_interval=1, batch_size=8, num_workers=0)
    switch = next(h for h in cfg.custom_hooks if h["type"] == "mmdet.PipelineSwitchHook")
    assert switch["switch_epoch"] == SWITCH_EPOCH  # 4 of 10 epochs, scaled to 3
    assert "CalibrationEMAHook" in {h["type"] for h in cfg.custom_hooks}
    return cfg


def _equal(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def test_ema_and_pipeline_switch_survive_a_stopped_and_resumed_trial(tmp_path, mmpose_ready):
    from rspose_tune.training import newest_checkpoint, train_rank
    from rspose_tune.training._checkpoint import safe_checkpoint_loading

    _register_mmdet_pipeline_switch_hook()
    cfg = _trial_config(tmp_path)
    storage = tmp_path / "storage" / "trial_t1"

    def report(result, checkpoint_dir):  # Tune's persist-then-return, into a trial folder
        shutil.copytree(checkpoint_dir, storage / f"checkpoint_{result['epoch']:06d}")
        if result["epoch"] == 2:
            raise StopTrial  # stopped at the rung after epoch 2

    first = Record()
    with pytest.raises(StopTrial):
        train_rank(cfg, metric="coco/AP", trial_id="t1", report=report, hooks=[first])
    assert first.rotations == [(0, 30.0), (1, 0.0)]  # the switch at epoch 1
    assert first.packs_rotation == [True, True]

    import pyarrow.fs as pafs

    _, local, epoch = newest_checkpoint(None, pafs.LocalFileSystem(), str(storage), trial_id="t1",
                                        dest_dir=tmp_path / "resume")
    assert epoch == 2
    with safe_checkpoint_loading():
        saved = torch.load(local, map_location="cpu", weights_only=True)
    ema_saved = saved["state_dict"]  # EMAHook.before_save_checkpoint: EMA weights here, raw ones aside
    raw_saved = {k[len("module."):]: v for k, v in saved["ema_state_dict"].items() if k.startswith("module.")}
    assert set(raw_saved) == set(ema_saved) and int(saved["ema_state_dict"]["steps"]) == first.iters
    params = [k for k, v in ema_saved.items() if v.dtype.is_floating_point and "peak_" not in k]
    assert not _equal(raw_saved, ema_saved, params)  # two sets of weights, not one saved twice
    # calibration: the EMA model's statistics are the raw head's (CalibrationEMAHook), not their average
    calibration = [k for k in ema_saved if "peak_" in k]
    assert calibration and _equal(raw_saved, ema_saved, calibration)
    # the trial's metric: validation ran on the EMA weights (the ones saved as state_dict)
    assert _equal(first.val_weights[2], ema_saved) and not _equal(first.val_weights[2], raw_saved, params)

    second = Record()
    train_rank(cfg, metric="coco/AP", trial_id="t1", report=lambda result, _: None, resume_from=local,
               hooks=[second])
    raw_resumed, ema_resumed = second.resumed
    assert _equal(ema_resumed, ema_saved) and _equal(raw_resumed, raw_saved)
    assert second.rotations == [(2, 0.0)] and second.packs_rotation == [True]  # after the switch: stage 2 again
    assert list(second.val_weights) == [3]  # validated after epoch 3 (the Runner's counter)
