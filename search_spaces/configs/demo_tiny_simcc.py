# CPU SimCC demo (the `demo-simcc` preset): the `demo` preset's data, backbone, optimiser,
# schedule and augmentation (demo_tiny.py), with a SimCC head and KLDiscretLoss instead of the
# heatmap head and KeypointMSELoss.
#
# The SimCC codec reproduces, bin for bin, what MMPose's SimCC ResNet-50 COCO 256x192 recipe
# (and the RSPose paper's SimCC rows) trains on: 384 x-bins and 512 y-bins with sigma = 6 bins.
# On the demo's 48x64 crops that takes `simcc_split_ratio=8` (MMPose: 192x256 at 2), so sigma
# is 0.75 input pixels, the same fraction of the crop as MMPose's 3 pixels of 192. Keeping the
# bins and sigma is what makes the positive supports the paper's: label > 0 (every non-zero
# bin, ~170 per axis until float32 underflow, paper Table 1's N/P ~1.2 for x and ~2 for y),
# label > exp(-4.5) (within 3 sigma, 35 bins) and label > 0.5 (15 bins), so the SimCC default
# `pos_thr` can be measured on CPU (`python -m rspose_tune.bench ablation --preset demo-simcc`).
#
# Head: the backbone's stride-2 features (32 channels, 24x32) -> 1x1 conv to 17 keypoints ->
# flattened (768) -> one linear layer per axis (768 -> 384, 768 -> 512), no deconvolutions.
# SimCC decodes arg-max bin / split ratio in input pixels with the plain (non-UDP) warp, as
# MMPose's SimCC configs, so TopdownAffine runs with use_udp=False here.
#
# The rspose_tune config builder overrides data paths and the budget as for `demo`, and swaps
# the head for `RSPoseSimCCHead` with the trial's losses; `build_config(preset, None)` keeps
# this SimCCHead + KLDiscretLoss (the stock baseline).

_base_ = ['demo_tiny.py']

codec = dict(
    type='SimCCLabel', input_size=(48, 64), sigma=6.0, simcc_split_ratio=8.0)

model = dict(
    head=dict(
        _delete_=True,
        type='SimCCHead',
        in_channels=32,
        out_channels=17,
        input_size=codec['input_size'],
        in_featuremap_size=(24, 32),  # DemoTinyNet at out_stride=2
        simcc_split_ratio=codec['simcc_split_ratio'],
        deconv_out_channels=None,
        loss=dict(type='KLDiscretLoss', use_target_weight=True),
        decoder=codec))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(
        type='RandomBBoxTransform',
        shift_factor=0.1,
        scale_factor=(0.8, 1.2),
        rotate_factor=30.0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
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
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs')
]

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = val_dataloader
