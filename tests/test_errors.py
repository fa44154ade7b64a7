"""rspose_tune.errors: one exception root for user errors; the CLIs catch it and print one ``error:`` line."""

from __future__ import annotations

import importlib

import pytest

from rspose_tune.errors import RSPoseTuneError

USER_ERRORS = [
    ("rspose_tune.spaces", "SearchSpaceError", ValueError),
    ("rspose_tune.spaces", "MissingDataError", FileNotFoundError),
    ("rspose_tune.spaces", "LossSettingError", ValueError),
    ("rspose_tune.search", "SearchError", RuntimeError),
    ("rspose_tune.runspec", "RunSpecError", ValueError),
    ("rspose_tune.tracking", "TrackingError", ValueError),
    ("rspose_tune.report", "ReportError", ValueError),
    ("rspose_tune._resources", "ResourceError", ValueError),
    ("rspose_tune._stages", "StageError", ValueError),
    ("rspose_tune.demo_data", "DemoDataError", RuntimeError),
    ("rspose_tune.replay._table", "TableError", ValueError),
    ("rspose_tune.mmpose_adapter.configs", "ConfigBuildError", ValueError),
    ("rspose_tune.mmpose_adapter._weights", "WeightsError", ValueError),
    ("rspose_tune.mmpose_adapter._mmcv_shim", "MissingMMCVOpsError", RuntimeError),
    ("rspose_tune.mmpose_adapter.heads", "MissingCalibrationError", RuntimeError),
    ("rspose_tune.bench._bundle", "BundleError", Exception),
    ("rspose_tune.bench._gpu", "_UsageError", Exception),
    ("rspose_tune.training._checkpoint", "CheckpointMismatchError", RuntimeError),
    ("rspose_tune.replay._cli", "ReplayError", ValueError),
    ("rspose_tune.bench._rehearse", "RehearsalUsageError", Exception),
    ("rspose_tune.bench._soak", "SoakUsageError", ValueError),
]


@pytest.mark.parametrize("module,name,legacy", USER_ERRORS, ids=[n for _, n, _ in USER_ERRORS])
def test_every_user_error_derives_from_the_root_and_keeps_its_old_base(module, name, legacy):
    if module.startswith("rspose_tune.mmpose_adapter."):
        from rspose_tune.mmpose_adapter import setup_mmpose

        setup_mmpose()  # MMPose imports need the mmcv.ops shim first
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, RSPoseTuneError) and issubclass(cls, legacy)


def test_cli_error_prints_one_line_and_returns_2(capsys):
    from rspose_tune.errors import cli_error

    assert cli_error(RSPoseTuneError("--x must be >= 1, got 0")) == 2
    assert capsys.readouterr().err == "error: --x must be >= 1, got 0\n"
