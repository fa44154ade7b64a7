# CPU demo: a complete MMPose top-down heatmap config (no _base_) for the procedural dataset
# written by `rspose_tune.demo_data.generate_demo_dataset` (the `demo` preset).
#
# Tiny on purpose: 64x48 crops, the ~0.1 M-parameter `DemoTinyNet` backbone
# (rspose_tune/mmpose_adapter/demo_modules.py) with stride-2 output, 32x24 UDP heatmaps,
# single-process data loading, no pretrained weights, no checkpoints, COCO AP with GT boxes.
# No flip augmentation or flip test: the demo people carry side-specific colours, so a flip
# would contradict the left/right labels.
#
# The rspose_tune config builder overrides `data_root`, the annotation files and image folders
# (in the dataloaders and the evaluator) from the preset, `train_cfg.max_epochs`/`val_interval`
# from the search budget, and swaps the head for `RSPoseHeatmapHead` with the trial's losses.

custom_imports = dict(
    imports=['rspose_tune.mmpose_adapter.demo_modules'], allow_failed_imports=False)

default_scope = 'mmpose'

# runtime
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# optimizer
optim_wrapper = dict(optimizer=dict(type='Adam', lr=6e-3))

# learning policy: short warm-up, then cosine decay to the end of training
param_scheduler = [
    dict(type='LinearLR', begin=0, end=30, start_factor=0.01, by_epoch=False),
    dict(
        type='CosineAnnealingLR',
        T_max=10,
        eta_min=1e-5,
        begin=0,
        end=10,
        by_epoch=True,
        convert_to_iter_based=True),
]

# hooks: no checkpoints (interval=-1), sparse logging
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='PoseVisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
    dist_cfg=dict(backend='gloo'),
)
visualizer = dict(
    type='PoseLocalVisualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer')
log_processor = dict(
    type='LogProcessor', window_size=50, by_epoch=True, num_digits=6)
log_level = 'WARNING'
load_from = None
resume = False
backend_args = dict(backend='local')
randomness = dict(seed=0)

# codec settings
# UDP heatmaps (as ViTPose): Gaussians truncated to a (2*3*sigma+1)^2 square (10x10 = 100
# non-zero pixels at sigma 1.5, corners down to 1.45e-6; not a 3-sigma disc), so RSPose's ranking
# losses see positives and negatives (MSRAHeatmap with unbiased=True has no zero pixel at all),
# and sub-pixel DARK-UDP decoding. Which of them are positives: the loss's pos_thr (demo.yaml).
codec = dict(
    type='UDPHeatmap',
    input_size=(48, 64),
    heatmap_size=(24, 32),
    sigma=1.5,
    blur_kernel_size=5)

# model settings
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='DemoTinyNet',
        channels=(16, 32, 64),
        out_channels=32,
        out_stride=2),
    head=dict(
        type='HeatmapHead',
        in_channels=32,
        out_channels=17,
        deconv_out_channels=None,
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=codec),
    # COCO keypoint sigmas, for RSPose's Instance Sort (keypoint similarity)
    train_cfg=dict(metainfo=dict(from_file='configs/_base_/datasets/coco.py')),
    test_cfg=dict(flip_test=False))

# dataset settings (paths match rspose_tune.demo_data's layout)
dataset_type = 'CocoDataset'
data_mode = 'topdown'
data_root = 'data/rspose_demo/'
train_ann_file = 'annotations/person_keypoints_train.json'
val_ann_file = 'annotations/person_keypoints_val.json'

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(
        type='RandomBBoxTransform',
        shift_factor=0.1,
        scale_factor=(0.8, 1.2),
        rotate_factor=30.0),
    dict(type='TopdownAffine', input_size=codec['input_size'], use_udp=True),
    dict(type='GenerateTarget', encoder=codec),
    # default meta_keys + bbox_rotation (RSPose's Instance Sort maps predictions back through
    # the rotated warp)
    dict(
        type='PackPoseInputs',
        meta_keys=('id', 'img_id', 'img_path', 'category_id', 'crowd_index',
                   'ori_shape', 'img_shape', 'input_size', 'input_center',
                   'input_scale', 'flip', 'flip_direction', 'flip_indices',
                   'raw_ann_info', 'dataset_name', 'bbox_rotation'))
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size'], use_udp=True),
    dict(type='PackPoseInputs')
]

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file=train_ann_file,
        data_prefix=dict(img='images/train/'),
        pipeline=train_pipeline,
    ))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file=val_ann_file,
        data_prefix=dict(img='images/val/'),
        test_mode=True,
        pipeline=val_pipeline,
    ))
test_dataloader = val_dataloader

val_evaluator = dict(type='CocoMetric', ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator
