"""rspose_tune.mmpose_adapter.demo_modules: the demo backbone (``DemoTinyNet``)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("out_stride", "shape"), [(2, (2, 32, 32, 24)), (4, (2, 32, 16, 12))])
def test_demo_tiny_net_shapes(mmpose_ready, out_stride, shape):
    import torch
    from mmpose.registry import MODELS

    net = MODELS.build(dict(type="DemoTinyNet", out_channels=32, out_stride=out_stride))
    (out,) = net(torch.zeros(2, 3, 64, 48))
    assert out.shape == shape
    assert sum(p.numel() for p in net.parameters()) < 200_000


def test_demo_tiny_net_rejects_bad_input(mmpose_ready):
    import torch

    from rspose_tune.mmpose_adapter.demo_modules import DemoTinyNet

    with pytest.raises(ValueError, match=r"multiples of 8, got \(1, 3, 60, 48\)"):
        DemoTinyNet()(torch.zeros(1, 3, 60, 48))
    with pytest.raises(ValueError, match="`out_stride` must be 2 or 4, got 8"):
        DemoTinyNet(out_stride=8)
    with pytest.raises(ValueError, match="`channels` must be 3 positive integers"):
        DemoTinyNet(channels=(8, 16))
