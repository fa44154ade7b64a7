"""Issue 9: RSPose heads predict from per-keypoint min-max calibrated logits (paper App. C).

The ranking losses leave each keypoint channel's logit level free; these tests check that
positions and scores do not depend on it (real MMPose heads, real training pipeline), that the
stock decoders do (contrast), how the statistics are gathered, and that they survive checkpoints,
a trial resume and an export run through mmpose's own tools/train.py and tools/test.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.mmpose_adapter.conftest import build_model

pytestmark = pytest.mark.usefixtures("mmpose_ready")


INPUT = {"udp": (256, 192), "msra": (256, 192), "simcc": (256, 192), "rtmcc": (256, 192)}


def _feats(model, seed: int, n: int = 6):
    gen = torch.Generator().manual_seed(seed)
    h, w = INPUT["udp"]
    with torch.no_grad():
        return model.extract_feat(torch.randn(n, 3, h, w, generator=gen))


def _with_offsets(head, offsets: torch.Tensor):
    """``head`` (a fresh one, same weights, no statistics yet) whose logits get ``offsets`` added
    per channel: (K,) for heatmaps, (2, K) (x, y) for SimCC. No loss can see it; the stock
    decoders can."""
    forward = head.forward

    def shifted(feats):
        out = forward(feats)
        if isinstance(out, tuple):  # SimCC (x, y)
            return out[0] + offsets[0][:, None], out[1] + offsets[1][:, None]
        return out + offsets[:, None, None]

    head.forward = shifted
    return head


def _gather_and_predict(head, train_feats, samples, train_cfg, test_feats, predict=None):
    # eval mode throughout: with untrained BatchNorm statistics, train-mode logits would not be
    # comparable to eval-mode ones (in a real training they converge)
    head.eval()
    for start in range(0, len(samples), 3):  # two training batches: the statistics' window
        batch = [train_feats[0][start : start + 3]]
        head.loss(tuple(batch), samples[start : start + 3], train_cfg=train_cfg)
    with torch.no_grad():
        preds = (predict or head.predict)(test_feats, samples[: len(test_feats[0])], {})
    return np.stack([p.keypoints[0] for p in preds]), np.stack([p.keypoint_scores[0] for p in preds])


def _offsets(kind: str, case: str, k: int = 17) -> torch.Tensor:
    axes = 2 if kind in ("simcc", "rtmcc") else 1
    if case == "one channel +20":
        off = torch.zeros(axes, k)
        off[:, 5] = 20.0
    elif case == "one channel -20":
        off = torch.zeros(axes, k)
        off[:, 11] = -20.0
    else:  # different offsets per channel (and per SimCC axis)
        off = torch.linspace(-20.0, 17.0, axes * k).reshape(axes, k)[:, torch.randperm(k, generator=torch.Generator().manual_seed(3))]
    return off if axes == 2 else off[0]


@pytest.mark.parametrize("kind", ["udp", "msra", "simcc", "rtmcc"])
@pytest.mark.parametrize("case", ["one channel +20", "one channel -20", "per channel"])
def test_predictions_do_not_depend_on_a_per_channel_logit_offset(kind, case, coco_batches):  # noqa: F811
    cfg, samples = coco_batches[kind]
    model = build_model(cfg)
    train_feats, test_feats = _feats(model, 1), _feats(model, 2)
    train_cfg = cfg.model.train_cfg
    base_xy, base_s = _gather_and_predict(model.head, train_feats, samples[:6], train_cfg, test_feats)
    shifted = _with_offsets(build_model(cfg).head, _offsets(kind, case))
    xy, s = _gather_and_predict(shifted, train_feats, samples[:6], train_cfg, test_feats)
    assert not (base_xy == -1).all(axis=-1).any() and (base_s >= 0).all() and (base_s <= 1).all()
    assert base_s.max() > 0.5 and base_s.min() < 0.5  # a real spread, not all clipped
    np.testing.assert_allclose(xy, base_xy, atol=1e-3)
    np.testing.assert_allclose(s, base_s, atol=1e-3)  # float32: 20 + logit rounds at ~1e-6, spans are ~1e-2 at init


@pytest.mark.parametrize("kind", ["udp", "msra", "simcc"])
@pytest.mark.parametrize("case", ["one channel +20", "one channel -20", "per channel"])
def test_contrast_stock_decoders_depend_on_the_offset(kind, case, coco_batches):  # noqa: F811
    """The same check with MMPose's stock predict (the parent class's) fails."""
    from mmpose.models.heads import HeatmapHead, SimCCHead

    parent = SimCCHead if kind == "simcc" else HeatmapHead
    cfg, samples = coco_batches[kind]
    model = build_model(cfg)
    train_feats, test_feats = _feats(model, 1), _feats(model, 2)
    train_cfg = cfg.model.train_cfg
    results = []
    for head in (model.head, _with_offsets(build_model(cfg).head, _offsets(kind, case))):
        # the stock decoding (BaseHead.decode: the codec on raw logits), as RSPose heads did before
        stock = lambda feats, data, test_cfg, head=head: parent.decode(head, head.forward(feats))  # noqa: E731
        results.append(_gather_and_predict(head, train_feats, samples[:6], train_cfg, test_feats, predict=stock))
    (base_xy, base_s), (xy, s) = results
    assert not np.allclose(s, base_s, atol=1e-4)  # raw peaks move with the offset
    if case == "one channel -20":  # peaks <= 0: the arg-max is replaced by -1 (then refined and scaled)
        assert not np.allclose(xy[:, 11], base_xy[:, 11], atol=1.0)


def test_flip_test_is_offset_invariant_even_when_left_and_right_differ(coco_batches):  # noqa: F811
    """Flip test swaps left/right channels: each pass is calibrated before averaging."""
    cfg, samples = coco_batches["udp"]
    model = build_model(cfg)
    train_feats = _feats(model, 1)
    test_feats = [_feats(model, 2), _feats(model, 4)]  # [image, flipped image]
    flip_cfg = {"flip_test": True, "flip_mode": "heatmap", "shift_heatmap": False}
    outs = []
    for head in (model.head, _with_offsets(build_model(cfg).head, _offsets("udp", "per channel"))):
        _gather_and_predict(head, train_feats, samples[:6], cfg.model.train_cfg, test_feats[0])
        with torch.no_grad():
            preds = head.predict(test_feats, samples[:6], flip_cfg)
        outs.append((np.stack([p.keypoints[0] for p in preds]), np.stack([p.keypoint_scores[0] for p in preds])))
    np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-3)
    np.testing.assert_allclose(outs[1][1], outs[0][1], atol=1e-3)


# --------------------------------------------------------------------------------------------
# How the statistics are gathered
# --------------------------------------------------------------------------------------------


@pytest.fixture
def message_hub():
    from mmengine.logging import MessageHub

    return MessageHub.get_instance(f"test_calibration_{os.getpid()}_{id(object())}")


def test_statistics_are_the_range_of_the_current_epochs_peaks(coco_batches, message_hub):  # noqa: F811
    cfg, _ = coco_batches["udp"]
    head = build_model(cfg).head
    assert torch.isnan(head.peak_min).all() and head.peak_epoch == -1 and head.peak_min.shape == (1, 17)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(1, 4, 17, generator=gen) * 3 for _ in range(5)]
    message_hub.update_info("epoch", 0)
    for p in batches[:3]:
        head._gather_peak_statistics(p)
    epoch0 = torch.cat(batches[:3], dim=1)
    torch.testing.assert_close(head.peak_min, epoch0.amin(1))
    torch.testing.assert_close(head.peak_max, epoch0.amax(1))
    assert head.peak_epoch == 0
    message_hub.update_info("epoch", 1)  # a new epoch starts a new window
    for p in batches[3:]:
        head._gather_peak_statistics(p)
    epoch1 = torch.cat(batches[3:], dim=1)
    torch.testing.assert_close(head.peak_min, epoch1.amin(1))
    torch.testing.assert_close(head.peak_max, epoch1.amax(1))
    assert head.peak_epoch == 1
    with pytest.raises(ValueError, match=r"\(A, B, K\) = \(1, B, 17\).*got \(2, 4, 17\)"):
        head._gather_peak_statistics(torch.zeros(2, 4, 17))


def test_loss_gathers_per_axis_peaks_of_the_batch(coco_batches, message_hub):  # noqa: F811
    cfg, samples = coco_batches["simcc"]
    model = build_model(cfg)
    feats = _feats(model, 1)
    message_hub.update_info("epoch", 7)
    model.head.loss(feats, samples[:6], train_cfg=cfg.model.train_cfg)
    with torch.no_grad():
        x, y = model.head.forward(feats)
    torch.testing.assert_close(model.head.peak_min, torch.stack([x.amax(2).amin(0), y.amax(2).amin(0)]))
    torch.testing.assert_close(model.head.peak_max, torch.stack([x.amax(2).amax(0), y.amax(2).amax(0)]))
    assert model.head.peak_epoch == 7


def test_predict_without_statistics_says_how_to_get_them(coco_batches):  # noqa: F811
    from rspose_tune.mmpose_adapter.heads import MissingCalibrationError

    cfg, samples = coco_batches["udp"]
    model = build_model(cfg)
    model.eval()
    with pytest.raises(MissingCalibrationError, match="no confidence statistics.*gathered in training"):
        model.head.predict(_feats(model, 2), samples[:6], {})


def test_weights_without_statistics_still_load_strictly(coco_batches):  # noqa: F811
    """A checkpoint from before the statistics existed (or a stock head's weights) loads."""
    cfg, _ = coco_batches["udp"]
    model = build_model(cfg)
    state = {k: v for k, v in model.state_dict().items() if ".peak_" not in k}
    fresh = build_model(cfg)
    fresh.load_state_dict(state, strict=True)
    assert torch.isnan(fresh.head.peak_min).all()
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict({**state, "head.bogus": torch.zeros(1)}, strict=True)


def test_minmax_calibrate_shapes_and_empty_range():
    from rspose_tune.mmpose_adapter.heads import minmax_calibrate

    logits = torch.tensor([[[1.0, 3.0], [5.0, 5.0]]])  # (B=1, K=2, W=2)
    out = minmax_calibrate(logits, torch.tensor([1.0, 5.0]), torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]))  # K=1: empty range → offset only
    with pytest.raises(ValueError, match=r"\(K,\) = \(2,\).*got \(3,\) and \(2,\)"):
        minmax_calibrate(logits, torch.zeros(3), torch.zeros(2))


@pytest.mark.parametrize("kind", ["udp", "simcc", "rtmcc"])
def test_statistics_survive_a_weights_only_checkpoint(kind, coco_batches, tmp_path):  # noqa: F811
    cfg, samples = coco_batches[kind]
    model = build_model(cfg)
    _gather_and_predict(model.head, _feats(model, 1), samples[:6], cfg.model.train_cfg, _feats(model, 2))
    model.eval()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pth")
    loaded = torch.load(tmp_path / "ckpt.pth", weights_only=True)
    fresh = build_model(cfg)
    fresh.load_state_dict(loaded["state_dict"], strict=True)
    fresh.eval()
    for name in ("peak_min", "peak_max", "peak_epoch"):
        torch.testing.assert_close(getattr(fresh.head, name), getattr(model.head, name))
    test_feats = _feats(model, 2)
    with torch.no_grad():
        a = model.head.predict(test_feats, samples[:6], {})
        b = fresh.head.predict(test_feats, samples[:6], {})
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.keypoints, pb.keypoints)
        np.testing.assert_array_equal(pa.keypoint_scores, pb.keypoint_scores)


# --------------------------------------------------------------------------------------------
# End to end: demo training, trial checkpoint and resume, export → tools/train.py, tools/test.py
# --------------------------------------------------------------------------------------------

KNOWN_GOOD = dict(delta_rank=0.4, coeff_rank=1.0, delta_sort=1.5, coeff_sort=2.0, delta_inst=3.0, coeff_inst=0.25)


@pytest.fixture(scope="module")
def small_demo_data(tmp_path_factory):
    from rspose_tune.demo_data import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_train=400, n_val=24, seed=0)  # 25 steps per epoch


@pytest.mark.slow
def test_demo_run_reports_the_same_ap_after_a_trial_checkpoint_round_trip(small_demo_data, tmp_path):
    from mmengine.runner import Runner

    from rspose_tune.spaces import load_preset
    from rspose_tune.training import (CHECKPOINT_FILE, TuneReportHook, prepare_trial_config, safe_checkpoint_loading,
                                      verify_checkpoint_dir)

    preset = load_preset("demo", data_root=str(small_demo_data))
    reports = []

    def keep(result, checkpoint_dir):  # what Ray Tune persists of each report
        saved = tmp_path / f"ckpt_{result['epoch']}"
        shutil.copytree(checkpoint_dir, saved)
        reports.append((dict(result), saved))

    cfg = prepare_trial_config(preset, KNOWN_GOOD, tmp_path / "trial", seed=0, max_epochs=3, val_interval=1)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(TuneReportHook(preset.metric, "t1", report=keep))
    runner.train()
    result, ckpt = reports[-1]
    assert result["epoch"] == 3 and result["metric"] > 0.1, result  # a model that ranks, not AP 0
    head = runner.model.head
    assert head.peak_epoch == 2 and torch.isfinite(head.peak_min).all()

    # the trial checkpoint: loadable with weights_only=True (the trainable's allowlist), stats inside
    verify_checkpoint_dir(ckpt, trial_id="t1")
    with safe_checkpoint_loading():
        state = torch.load(ckpt / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    torch.testing.assert_close(state["head.peak_min"], head.peak_min)
    torch.testing.assert_close(state["head.peak_max"], head.peak_max)

    # a fresh process-like Runner resumed from it (as the trainable resumes) reports the same AP
    cfg2 = prepare_trial_config(preset, KNOWN_GOOD, tmp_path / "trial2", seed=0, max_epochs=4, val_interval=1)
    cfg2.resume, cfg2.load_from = True, str(ckpt / CHECKPOINT_FILE)
    resumed = Runner.from_cfg(cfg2)
    resumed_reports = []
    resumed.register_hook(TuneReportHook(preset.metric, "t1", report=lambda r, c: resumed_reports.append(r)))
    with safe_checkpoint_loading():
        resumed.load_or_resume()
    for name in ("peak_min", "peak_max", "peak_epoch"):
        torch.testing.assert_close(getattr(resumed.model.head, name), getattr(head, name))
    metrics = resumed.val()
    for key in ("coco/AP", "coco/AR", "rspose/spearman"):
        assert metrics[key] == pytest.approx(result[key], abs=1e-12), key
    # ... and continuing the trial starts a new window for its next epoch
    with safe_checkpoint_loading():
        resumed.train()
    assert resumed.model.head.peak_epoch == 3 and resumed_reports[-1]["epoch"] == 4


@pytest.mark.slow
def test_exported_config_trains_and_tests_with_mmpose_tools_using_the_statistics(small_demo_data, tmp_path):
    """export → mmpose's tools/train.py (3 epochs) → tools/test.py on the best checkpoint: the
    checkpoint carries the statistics and test.py reports the AP that training's validation did."""
    import mmpose

    from rspose_tune import export as ex
    from tests.report.conftest import KNOWN_GOOD as REPORT_KNOWN_GOOD
    from tests.report.conftest import trial, write_run

    tools = Path(mmpose.__file__).parent / ".mim" / "tools"
    if not (tools / "train.py").is_file() or not (tools / "test.py").is_file():
        pytest.skip(f"mmpose's tools/train.py and tools/test.py are not installed in {tools}")
    storage = tmp_path / "results"
    write_run(storage, "demo-run", [trial("best", REPORT_KNOWN_GOOD, [0.1, 0.2, 0.5], "completed")],
              backbone="demo", gpus=0.0, cpus=1.0, max_epochs=3)
    out = tmp_path / "demo_rspose.py"
    assert ex.main([str(storage), "--backbone", "demo", "--out", str(out), "--data-root", str(small_demo_data)]) == 0
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args):
        proc = subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return proc.stdout + proc.stderr

    run(tools / "train.py", out, "--work-dir", work, "--cfg-options", "train_cfg.max_epochs=3")
    ckpt = next(work.glob("best_coco_AP_epoch_*.pth"))
    scalars = [json.loads(line) for line in next(work.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    best_epoch = int(re.search(r"epoch_(\d+)", ckpt.name).group(1))
    trained_ap = next(s["coco/AP"] for s in scalars if "coco/AP" in s and s["step"] == best_epoch)
    assert trained_ap > 0.1, scalars

    from rspose_tune.training import safe_checkpoint_loading

    with safe_checkpoint_loading(), torch.serialization.safe_globals(_mmengine_checkpoint_globals()):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.isfinite(state["head.peak_min"]).all() and int(state["head.peak_epoch"]) == best_epoch - 1

    # mmengine's own checkpoints pickle numpy and its message hub, which torch >= 2.6's default
    # weights_only load in tools/test.py refuses (true before the statistics existed, too); the
    # weights alone are what an exported model is deployed with
    weights = tmp_path / "weights.pth"
    torch.save({"state_dict": state}, weights)
    run(tools / "test.py", out, weights, "--work-dir", tmp_path / "test_work")
    tested = json.loads(next((tmp_path / "test_work").glob("*/*.json")).read_text())
    assert tested["coco/AP"] == pytest.approx(trained_ap, abs=1e-4)


def _mmengine_checkpoint_globals() -> list:
    """What mmengine's own (non-trial) checkpoints pickle besides tensors: its message hub."""
    from mmengine.logging.history_buffer import HistoryBuffer

    return [HistoryBuffer, np.mean, np.max, np.min, getattr]


_RANK = r"""
import datetime, sys
import torch, torch.distributed as dist
from rspose_tune.mmpose_adapter import setup_mmpose
setup_mmpose()
from rspose_tune.mmpose_adapter.heads._calibration import _CalibrationMixin

class Head(_CalibrationMixin, torch.nn.Module):
    def __init__(self):
        super().__init__()
        self._init_calibration(1, 3)

rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=20))
head = Head()
peaks = torch.zeros(1, 0, 3) if rank == 0 else torch.tensor([[[1.0, 2.0, 3.0], [-1.0, 5.0, 0.0]]])
head._gather_peak_statistics(peaks)  # rank 0's batch is empty: it must still join the all-reduce
head._gather_peak_statistics(torch.zeros(1, 0, 3))  # every batch empty: nothing changes
print("RANGE", head.peak_min.tolist(), head.peak_max.tolist(), flush=True)
dist.destroy_process_group()
"""


def test_an_empty_batch_on_one_rank_still_joins_the_all_reduce(tmp_path):
    """Two real gloo ranks: before the fix rank 0 returned early and rank 1 waited in all_reduce."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, str(rank), str(store)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        # both ranks fold in rank 1's range; the all-empty step leaves it as it was
        assert "RANGE [[-1.0, 2.0, 0.0]] [[1.0, 5.0, 3.0]]" in out
