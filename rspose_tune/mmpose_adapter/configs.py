"""Build MMPose configs: an installed MMPose base config + RSPose loss settings + a trial's budget.

Everything a trial or an export needs goes through :func:`build_config`, so the resolved config
saved beside a trial's results is exactly what ran.

Config references (``base_config`` in a search-space file):

- ``mmpose::<path>``: a config shipped inside the installed mmpose (``mmpose/.mim/configs/<path>``);
- anything else: a file path, relative to the search-space file that names it.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rspose_tune.spaces import LOSS_PARAMS, PARAM_NAMES, LossSetting, LossSettingError

__all__ = [
    "LOSS_PARAM_NAMES",
    "ConfigBuildError",
    "apply_rspose_losses",
    "build_config",
    "load_base_config",
    "mmpose_config_dir",
    "resolve_config_ref",
    "scale_schedule",
    "set_dataset",
    "shrink_model",
]

#: The RSPose loss hyperparameters (:data:`rspose_tune.spaces.PARAM_NAMES`). A coefficient of 0
#: switches a component off.
LOSS_PARAM_NAMES = PARAM_NAMES

#: Stock MMPose heads and the RSPose head that replaces each (registered by ``setup_mmpose``).
RSPOSE_HEADS = {"HeatmapHead": "RSPoseHeatmapHead", "SimCCHead": "RSPoseSimCCHead", "RTMCCHead": "RSPoseRTMCCHead"}


class ConfigBuildError(RSPoseTuneError, ValueError):
    """A config cannot be built from the given preset, parameters or paths."""


def mmpose_config_dir() -> Path:
    """``mmpose/.mim/configs`` of the installed mmpose (found without importing it: the weights
    preflight of every ``--dry-run`` reads configs through here)."""
    import importlib.util

    spec = importlib.util.find_spec("mmpose")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'mmpose'", name="mmpose")
    return Path(next(iter(spec.submodule_search_locations))) / ".mim" / "configs"


def resolve_config_ref(ref: str, relative_to: Path | None = None) -> Path:
    """The file a config reference points to (see module docstring); it must exist."""
    if ref.startswith("mmpose::"):
        path = mmpose_config_dir() / ref[len("mmpose::"):]
        if not path.is_file():
            raise ConfigBuildError(
                f"base config {ref!r} is not in the installed mmpose (looked for {str(path)!r}); "
                "`mmpose::` paths are relative to mmpose/.mim/configs/"
            )
        return path
    path = Path(ref)
    if not path.is_absolute() and relative_to is not None:
        path = Path(relative_to) / path
    if not path.is_file():
        raise ConfigBuildError(f"base config file {str(path)!r} does not exist")
    return path


def load_base_config(ref: str, relative_to: Path | None = None):
    """Load an MMPose config by reference (``mmpose::...`` or a path; see module docstring)."""
    from mmengine.config import Config

    return Config.fromfile(str(resolve_config_ref(ref, relative_to)))


def _check_params(params: Mapping[str, Any]) -> dict[str, float]:
    unknown = sorted(set(params) - set(LOSS_PARAM_NAMES))
    if unknown:
        raise ConfigBuildError(f"unknown loss parameter(s) {unknown}; valid: {list(LOSS_PARAM_NAMES)}")
    try:
        setting = LossSetting.from_dict(params)  # off: coefficient 0.0; pos_thr None or absent: its default
    except LossSettingError as exc:
        raise ConfigBuildError(f"loss parameter {exc}") from None
    out = {name: 0.0 if value is None else value for name, value in setting.items()}  # an off component's delta
    if out["coeff_rank"] == 0 and out["coeff_sort"] == 0:
        raise ConfigBuildError("`coeff_rank` and `coeff_sort` are both 0: the heatmap would get no loss")
    return out


def apply_rspose_losses(cfg, params: Mapping[str, Any]) -> None:
    """Swap ``cfg.model.head`` for its RSPose subclass with the loss settings (in place).

    Each parameter goes where :data:`rspose_tune.spaces.LOSS_PARAMS` says: ``RSPoseLoss``'s
    (``model.head.loss``: the rank and sort deltas and coefficients, ``pos_thr``) or the head's
    (``delta_inst``, ``coeff_inst``).
    """
    values = _check_params(params)
    head = cfg.model.head
    head_type = head.get("type")
    if head_type in RSPOSE_HEADS.values():
        pass
    elif head_type in RSPOSE_HEADS:
        head["type"] = RSPOSE_HEADS[head_type]
    else:
        raise ConfigBuildError(
            f"model.head.type is {head_type!r}; RSPose losses support {sorted(RSPOSE_HEADS)}"
        )
    loss = dict(type="RSPoseLoss")
    for param in LOSS_PARAMS:
        (loss if param.target == "loss" else head)[param.name] = values[param.name]
    head["loss"] = loss


def scale_schedule(cfg, max_epochs: int) -> None:
    """Set ``max_epochs`` and scale epoch-based LR milestones to it (in place).

    The 210-epoch recipe drops the LR at epochs 170 and 200; a 20-epoch budget drops at 16 and 19.
    Epoch-based ``begin`` and a custom hook's ``switch_epoch`` (RTMPose: cosine from epoch 210 of
    420, stage-2 pipeline at 390) scale the same way.
    """
    if max_epochs < 1:
        raise ConfigBuildError(f"max_epochs must be >= 1, got {max_epochs}")
    old = int(cfg.train_cfg.get("max_epochs", max_epochs))
    cfg.train_cfg["max_epochs"] = int(max_epochs)
    if old == max_epochs:
        return
    for sched in cfg.get("param_scheduler", None) or []:
        if not sched.get("by_epoch", True):
            continue
        if "milestones" in sched:
            sched["milestones"] = sorted(
                {max(1, min(max_epochs, round(m * max_epochs / old))) for m in sched["milestones"]}
            )
        if "end" in sched and sched["end"] is not None:
            sched["end"] = max_epochs if sched["end"] >= old else max(1, round(sched["end"] * max_epochs / old))
        if "T_max" in sched:
            sched["T_max"] = max(1, round(sched["T_max"] * max_epochs / old))
        if sched.get("begin"):
            sched["begin"] = min(max_epochs - 1, max(0, round(sched["begin"] * max_epochs / old)))
    for hook in cfg.get("custom_hooks", None) or []:  # RTMPose's stage-2 pipeline switch
        if "switch_epoch" in hook:
            hook["switch_epoch"] = max(0, min(max_epochs - 1, round(hook["switch_epoch"] * max_epochs / old)))


def set_dataset(
    cfg,
    *,
    root: str | Path,
    train_ann: str,
    val_ann: str,
    train_img: str,
    val_img: str,
    bbox_file: str | None = None,
    headbox_file: str | None = None,
) -> None:
    """Point the train/val/test loaders and the evaluator at a dataset (in place).

    Validation uses ground-truth boxes unless ``bbox_file`` (relative to ``root``) is given.
    ``headbox_file`` (MPII's ``mpii_gt_val.mat``, relative to ``root``) replaces the base's.
    """
    root = Path(root)
    for key, ann, img, is_val in (
        ("train_dataloader", train_ann, train_img, False),
        ("val_dataloader", val_ann, val_img, True),
        ("test_dataloader", val_ann, val_img, True),
    ):
        if key not in cfg:
            continue
        loader = copy.deepcopy(cfg[key])  # test_dataloader is often the same object as val's
        dataset = loader["dataset"]
        dataset["data_root"] = str(root)
        dataset["ann_file"] = ann
        dataset["data_prefix"] = dict(img=img)
        if is_val:
            dataset.pop("bbox_file", None)
            if bbox_file:
                dataset["bbox_file"] = str(root / bbox_file)
            if headbox_file:
                dataset["headbox_file"] = str(root / headbox_file)
            elif "headbox_file" in dataset:  # the base's path is relative to its own data layout
                dataset.pop("headbox_file")
        cfg[key] = loader
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if isinstance(evaluator, Mapping) and "ann_file" in evaluator:
            evaluator = copy.deepcopy(evaluator)
            evaluator["ann_file"] = str(root / val_ann)
            cfg[key] = evaluator


def shrink_model(cfg) -> None:
    """Replace the backbone by a tiny one of the same family (tests and CPU smoke runs, in place).

    Keeps the head type, codec and data pipeline; removes pretrained ``init_cfg`` downloads.
    """
    backbone = cfg.model.backbone
    btype = backbone["type"]
    backbone.pop("init_cfg", None)
    if btype.endswith("VisionTransformer"):
        backbone["arch"] = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=128)
        backbone["drop_path_rate"] = 0.0
        channels = 64
        cfg.optim_wrapper.get("paramwise_cfg", {})["num_layers"] = 2
    elif btype == "HRNet":
        extra = backbone["extra"]
        extra["stage1"]["num_blocks"] = (1,)
        extra["stage1"]["num_channels"] = (16,)
        for i, stage in enumerate(("stage2", "stage3", "stage4")):
            n = len(extra[stage]["num_channels"])
            extra[stage]["num_modules"] = 1
            extra[stage]["num_blocks"] = (1,) * n
            extra[stage]["num_channels"] = tuple(8 * 2**k for k in range(n))
        channels = 8
    elif btype == "ResNet":
        backbone["depth"] = 18
        channels = 512
    elif btype == "CSPNeXt":
        backbone.update(deepen_factor=0.167, widen_factor=0.125, norm_cfg=dict(type="BN"))
        channels = 128  # the last stage's 1024 * 0.125
    else:
        raise ConfigBuildError(f"shrink_model does not know backbone type {btype!r}")
    head = cfg.model.head
    head["in_channels"] = channels
    if "deconv_out_channels" in head and head["deconv_out_channels"]:
        head["deconv_out_channels"] = tuple(min(c, 32) for c in head["deconv_out_channels"])


def _set_pretrained(cfg, weights: str | Path | None) -> None:
    """Use the user's local weights, or none; never let a config download pretrained weights.

    ``weights=None`` means training from scratch (the preset says ``weights: null`` or the user
    passed ``--weights none``): any ``init_cfg`` of the backbone is removed. A preset that names
    weights gets them checked by ``Preset.validate_paths`` before any trial starts.
    """
    backbone = cfg.model.backbone
    if weights is None:
        backbone.pop("init_cfg", None)
        return
    path = Path(weights)
    if not path.is_file():
        raise ConfigBuildError(
            f"pretrained weights {str(path)!r} do not exist (--weights / RSPOSE_TUNE_WEIGHTS); "
            "rspose_tune never downloads weights: download them yourself, or pass --weights none"
        )
    prefix = (backbone.get("init_cfg") or {}).get("prefix")  # RTMPose: `backbone.` of a classifier's keys
    backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(path.resolve()), **({"prefix": prefix} if prefix else {}))


def _pack_rotation(cfg) -> None:
    """Let Instance Sort see each training crop's rotation (``bbox_rotation`` in the meta keys)."""
    from .heads import RSPOSE_PACK_META_KEYS

    pipelines = [cfg.train_dataloader.dataset.get("pipeline") or []]
    # RTMPose's stage-2 pipeline (mmdet.PipelineSwitchHook) rotates too
    pipelines += [hook["switch_pipeline"] for hook in cfg.get("custom_hooks", None) or [] if "switch_pipeline" in hook]
    for pipeline in pipelines:
        for step in pipeline:
            if step.get("type") == "PackPoseInputs":
                keys = tuple(step.get("meta_keys") or RSPOSE_PACK_META_KEYS)
                step["meta_keys"] = keys + tuple(k for k in RSPOSE_PACK_META_KEYS if k not in keys)


def _ema_calibration(cfg) -> None:
    """Beside an ``EMAHook``, the hook that gives the EMA model the raw heads' calibration
    statistics instead of their moving average (:class:`...heads._calibration.CalibrationEMAHook`)."""
    hooks = list(cfg.get("custom_hooks", None) or [])
    types = {hook.get("type") for hook in hooks}
    if "EMAHook" in types and "CalibrationEMAHook" not in types:
        cfg["custom_hooks"] = hooks + [dict(type="CalibrationEMAHook")]


def _add_keypoint_meta(cfg) -> None:
    """Give the model the dataset's keypoint meta (Instance Sort needs its OKS ``sigmas``)."""
    from mmpose.registry import DATASETS

    dataset = cfg.train_dataloader.dataset
    metainfo = dataset.get("metainfo") or getattr(DATASETS.get(dataset["type"]), "METAINFO", None)
    if metainfo:
        train_cfg = cfg.model.get("train_cfg") or {}
        train_cfg.setdefault("metainfo", dict(metainfo))
        cfg.model["train_cfg"] = train_cfg


def _add_confidence_metric(cfg) -> None:
    """Add the confidence-vs-OKS Spearman metric beside COCO-style evaluators (paper Table 5)."""
    evaluator = cfg.get("val_evaluator")
    evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    if not any(isinstance(e, Mapping) and e.get("type") == "CocoMetric" for e in evaluators):
        return
    if not any(isinstance(e, Mapping) and e.get("type") == "ConfidenceOKSCorrelation" for e in evaluators):
        evaluators.append(dict(type="ConfidenceOKSCorrelation"))
    cfg["val_evaluator"] = evaluators


def build_config(
    preset,
    params: Mapping[str, Any] | None,
    *,
    work_dir: str | Path | None = None,
    seed: int = 0,
    max_epochs: int | None = None,
    val_interval: int | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    shrink: bool = False,
    scratch: bool = False,
):
    """The full MMPose config of one trial (or of an export, with ``max_epochs`` of the base).

    Args:
        preset: a :class:`rspose_tune.spaces.Preset` (its base config, data and weights).
        params: the loss hyperparameters (:data:`LOSS_PARAM_NAMES`); None or 0 = off (``pos_thr``
            None or missing: its default).
            ``params=None`` (not a mapping) builds the **stock** config: the base config's own
            head and loss (``KeypointMSELoss``, ``KLDiscretLoss`` ...) untouched, the baseline
            the search compares RSPose against; everything else (data, budget, seed) the same.
        work_dir: the Runner's work_dir (the trial's own directory).
        seed: mmengine ``randomness.seed``.
        max_epochs: training length; default the preset's budget. LR milestones scale with it.
        val_interval: validate every N epochs; default the preset's budget.
        batch_size, num_workers: train/val loader overrides.
        shrink: replace the backbone by a tiny one (tests only).
        scratch: train from scratch even if the base config names remote pretrained weights.
    """
    from mmengine.config import Config

    cfg = load_base_config(preset.base_config, Path(preset.source).parent)
    cfg = Config(copy.deepcopy(cfg.to_dict()))  # detach from _base_ bookkeeping
    if params is not None:
        apply_rspose_losses(cfg, params)
    data = preset.data
    set_dataset(
        cfg,
        root=data.root,
        train_ann=data.train_ann,
        val_ann=data.val_ann,
        train_img=data.train_img,
        val_img=data.val_img,
        bbox_file=data.bbox_file,
        headbox_file=getattr(data, "headbox_file", None),
    )
    if shrink:
        shrink_model(cfg)
    _set_pretrained(cfg, None if (shrink or scratch) else preset.weights)
    if params is not None:
        _pack_rotation(cfg)  # only RSPose's Instance Sort reads the rotation
        _ema_calibration(cfg)  # only RSPose heads have calibration statistics
    scale_schedule(cfg, int(max_epochs or preset.budget.max_epochs))
    cfg.train_cfg["val_interval"] = int(val_interval or preset.budget.val_interval)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if key not in cfg:
            continue
        if batch_size is not None:
            cfg[key]["batch_size"] = int(batch_size)
        if num_workers is not None:
            cfg[key]["num_workers"] = int(num_workers)
            # Worker processes live for the whole training (mmengine's usual setting);
            # persistent_workers is only valid with num_workers > 0.
            cfg[key]["persistent_workers"] = num_workers > 0
    if params is not None:
        _add_keypoint_meta(cfg)  # Instance Sort's OKS sigmas
    _add_confidence_metric(cfg)
    metric = preset.metric
    hooks = cfg.setdefault("default_hooks", {})
    # Trials checkpoint through Ray Tune; keep mmengine's own checkpoints rare and cheap.
    hooks["checkpoint"] = dict(type="CheckpointHook", interval=-1, save_best=None, save_last=False)
    hooks.setdefault("logger", dict(type="LoggerHook"))["interval"] = 10
    hooks.pop("visualization", None)
    cfg["randomness"] = dict(seed=int(seed), deterministic=False)
    cfg["work_dir"] = str(work_dir) if work_dir is not None else f"work_dirs/{preset.name}"
    cfg["launcher"] = "none"
    cfg["rspose_tune"] = dict(preset=preset.name, metric=metric, params=None if params is None else dict(params),
                              seed=int(seed), stock_loss=params is None)
    return cfg
