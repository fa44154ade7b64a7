# CPU RTMPose demo (the `demo-rtmcc` preset): the `demo-simcc` preset's data, optimiser, schedule and
# augmentation (demo_tiny_simcc.py) with RTMPose's head and labels: a real RTMCCHead (7x7 conv, MLP,
# GAU block with RTMPose's gau_cfg) on a small CSPNeXt, and RTMPose's codec and stock loss.
#
# Codec: RTMPose's 256x192 SimCC labels bin for bin on the demo's 48x64 crops: 384 x-bins and 512
# y-bins (split ratio 8; RTMPose: 192x256 at 2), sigma (4.9, 5.66) bins, normalize=False, so the
# positive supports (pos_thr) are RTMPose's (RSPoseLoss's table: 141 x-, 163 y-bins at label > 0).
#
# Backbone: mmpose's own CSPNeXt (the class RTMPose configures under mmdet's scope; mmdet's import
# needs compiled mmcv ops), RTMPose-t's depth (deepen 0.167) at widen 0.25, its stride-8 stage
# (out_indices=(2,)): 64 channels at 6x8, the feature map size RTMPose's head gets at 256x192
# (stride 32). One 32-sample train step takes about what demo-simcc's takes on one CPU thread
# (docs/real_backbone.md). Stock loss (the baseline): KLDiscretLoss(beta=10, label_softmax) as
# RTMPose configures it. The config builder swaps the head for RSPoseRTMCCHead with the losses.

_base_ = ['demo_tiny_simcc.py']

codec = dict(
    type='SimCCLabel', input_size=(48, 64), sigma=(4.9, 5.66), simcc_split_ratio=8.0, normalize=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='CSPNeXt',
        arch='P5',
        expand_ratio=0.5,
        deepen_factor=0.167,
        widen_factor=0.25,
        out_indices=(2, ),
        channel_attention=True,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU')),
    head=dict(
        _delete_=True,
        type='RTMCCHead',
        in_channels=64,
        out_channels=17,
        input_size=codec['input_size'],
        in_featuremap_size=(6, 8),  # stride 8 on 48x64
        simcc_split_ratio=codec['simcc_split_ratio'],
        final_layer_kernel_size=7,
        gau_cfg=dict(hidden_dims=256, s=128, expansion_factor=2, dropout_rate=0., drop_path=0.,
                     act_fn='SiLU', use_rel_bias=False, pos_enc=False),
        loss=dict(type='KLDiscretLoss', use_target_weight=True, beta=10., label_softmax=True),
        decoder=codec))

# demo_tiny_simcc.py's augmentation with this codec's targets (PackPoseInputs' meta keys: the
# config builder adds the ones Instance Sort reads)
train_pipeline = [
    dict(type='LoadImage'), dict(type='GetBBoxCenterScale'),
    dict(type='RandomBBoxTransform', shift_factor=0.1, scale_factor=(0.8, 1.2), rotate_factor=30.0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec), dict(type='PackPoseInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
