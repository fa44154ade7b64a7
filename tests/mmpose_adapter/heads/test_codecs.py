"""rspose_tune.mmpose_adapter.heads._codecs: calibrated decoding agrees with the stock codec where both apply."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("mmpose_ready")


def test_calibrated_decoding_matches_the_stock_codec_on_positive_calibrated_maps(coco_batches):  # noqa: F811
    """Positions: arg-max + the codec's own refinement; where the stock decoder's -1 rule does not
    fire and the map is already peak-1, both decoders agree."""
    from mmpose.codecs import UDPHeatmap

    from rspose_tune.mmpose_adapter.heads import decode_calibrated_heatmaps

    codec = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0, blur_kernel_size=11)
    xs, ys = np.meshgrid(np.arange(48), np.arange(64))
    centres = [(10.3, 20.7), (30.6, 5.2), (40.0, 60.4)]
    maps = np.stack([np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0) for cx, cy in centres])[None].astype(np.float32)
    maps /= maps.max(axis=(2, 3), keepdims=True)  # peak 1
    kpts, scores = decode_calibrated_heatmaps(maps, codec)
    ref_kpts, ref_scores = codec.decode(maps[0])
    np.testing.assert_allclose(kpts, ref_kpts, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    # a low calibrated peak keeps its position (the stock decoder would give -1) with score 0
    low_kpts, low_scores = decode_calibrated_heatmaps(maps - 2.0, codec)
    np.testing.assert_allclose(low_kpts, kpts, atol=1e-4)
    assert (low_scores == 0).all()
    np.testing.assert_allclose(codec.decode(maps[0] - 2.0)[0], -1 / 47 * 192, atol=0.1)  # stock: -1, scaled
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        decode_calibrated_heatmaps(maps[0], codec)
