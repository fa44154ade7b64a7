"""rspose_tune.training._hooks: the report hook refuses a non-finite loss."""

from __future__ import annotations

import pytest


def test_report_hook_rejects_non_finite_loss():
    from rspose_tune.training import LossDivergedError, TuneReportHook

    class FakeRunner:
        epoch, iter = 0, 4

    hook = TuneReportHook("coco/AP", "t0", report=lambda *a, **k: None)
    hook.after_train_iter(FakeRunner(), 0, outputs={"loss": 1.0, "loss_rank": 0.5})
    with pytest.raises(LossDivergedError, match=r"loss_rank became nan at epoch 1, iteration 5"):
        hook.after_train_iter(FakeRunner(), 1, outputs={"loss": 1.0, "loss_rank": float("nan")})
