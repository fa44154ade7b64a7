"""A tiny CNN backbone for the CPU demo, registered in MMPose's ``MODELS`` as ``DemoTinyNet``.

MMPose's smallest backbones (ResNet-18, MobileNetV2, a 2-layer ViT) are far too slow or learn too
little in the seconds a CPU demo trial has. :class:`DemoTinyNet` is a three-level conv encoder
with one top-down fusion step (a miniature FPN), so its single output keeps a high resolution
(stride 2 or 4) for accurate heatmaps while its deepest level sees most of the crop.

Importing this module registers the backbone; it imports only torch, mmengine and
``mmpose.registry`` (not ``mmpose.models``), so it is safe to name in a config's
``custom_imports`` before the mmcv.ops shim is installed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpose.registry import MODELS
from torch import nn

__all__ = ["DemoTinyNet"]


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@MODELS.register_module()
class DemoTinyNet(BaseModule):
    """Tiny conv encoder with a top-down fusion, for CPU demos (about 0.1 M parameters).

    Note:
        - B: batch size; H, W: input height and width (multiples of 8).

    Levels run at strides 2, 4 and 8 with ``channels[0..2]`` channels; the stride-8 level is
    upsampled and added to the (projected) stride-4 level, and, when ``out_stride == 2``, the
    result is upsampled again and added to the stride-2 level.

    Args:
        in_channels: Input image channels.
        channels: Channels of the stride-2, -4 and -8 levels.
        out_channels: Channels of the output feature map.
        out_stride: Output stride, 2 or 4.
        init_cfg: mmengine initialisation config.

    Returns (from ``forward``):
        A 1-tuple with the feature map, shape ``(B, out_channels, H / out_stride, W / out_stride)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64),
        out_channels: int = 32,
        out_stride: int = 4,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise ValueError(f"`channels` must be 3 positive integers, got {tuple(channels)!r}")
        if out_stride not in (2, 4):
            raise ValueError(f"`out_stride` must be 2 or 4, got {out_stride!r}")
        c2, c4, c8 = (int(c) for c in channels)
        self.out_stride = out_stride
        self.level2 = nn.Sequential(_conv(in_channels, c2, 2), _conv(c2, c2))
        self.level4 = nn.Sequential(_conv(c2, c4, 2), _conv(c4, c4))
        self.level8 = nn.Sequential(_conv(c4, c8, 2), _conv(c8, c8), _conv(c8, c8))
        self.lateral8 = nn.Conv2d(c8, out_channels, 1)
        self.lateral4 = nn.Conv2d(c4, out_channels, 1)
        self.smooth4 = _conv(out_channels, out_channels)
        if out_stride == 2:
            self.lateral2 = nn.Conv2d(c2, out_channels, 1)
            self.smooth2 = _conv(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if x.dim() != 4 or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"expected input (B, C, H, W) with H and W multiples of 8, got {tuple(x.shape)}")
        f2 = self.level2(x)
        f4 = self.level4(f2)
        f8 = self.level8(f4)
        out = self.lateral4(f4) + F.interpolate(self.lateral8(f8), size=f4.shape[-2:], mode="nearest")
        out = self.smooth4(out)
        if self.out_stride == 2:
            out = self.lateral2(f2) + F.interpolate(out, size=f2.shape[-2:], mode="nearest")
            out = self.smooth2(out)
        return (out,)
