# SimCC with an HRNet-W48 backbone on COCO, 256x192 (the `hrnet-w48-simcc` preset).
#
# MMPose 1.3.2 ships no such config, so this one takes MMPose's HRNet-W48 top-down heatmap
# recipe (same backbone, data, optimiser and 210-epoch schedule) and replaces the heatmap head by
# a SimCCHead with the SimCCLabel codec of MMPose's SimCC ResNet-50 config. HRNet-W48 already
# outputs stride-4 features (48 channels, 48x64), so the head has no deconvolutions: a 1x1 conv
# to the 17 keypoints, flattened into the x/y classification layers.
_base_ = ['mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w48_8xb32-210e_coco-256x192.py']

codec = dict(
    type='SimCCLabel', input_size=(192, 256), sigma=6.0, simcc_split_ratio=2.0)

model = dict(
    head=dict(
        _delete_=True,
        type='SimCCHead',
        in_channels=48,
        out_channels=17,
        input_size=codec['input_size'],
        in_featuremap_size=tuple([s // 4 for s in codec['input_size']]),
        simcc_split_ratio=codec['simcc_split_ratio'],
        deconv_out_channels=None,
        loss=dict(type='KLDiscretLoss', use_target_weight=True),
        decoder=codec),
    test_cfg=dict(_delete_=True, flip_test=True))

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomHalfBody'),
    dict(type='RandomBBoxTransform'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
