"""rspose_tune.bench._step: the train-step benchmark runs, prints the RSPose / MSE ratio, refuses bad arguments."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("mmpose_ready")


def test_step_benchmark_runs_and_prints_the_ratio(capsys):
    from rspose_tune.bench import _step

    args = ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--embed-dims", "32",
            "--num-layers", "1", "--num-heads", "2"]
    assert _step.main(args) == 0
    out = capsys.readouterr().out
    assert "HeatmapHead + KeypointMSELoss" in out and "ratio RSPose / MSE (wall medians):" in out
    assert "extra loss time (cpu)" in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--batch-size", "0"], "--batch-size is 0"),
        (["--embed-dims", "10", "--num-heads", "3"], "divisible"),
        (["--device", "tpu"], "--device must be one of"),
        (["--warmup", "-1"], "--warmup is -1"),
    ],
)
def test_step_benchmark_rejects_bad_arguments(args, match, capsys):
    from rspose_tune.bench import _step

    with pytest.raises(SystemExit):
        _step.main(args)
    assert match in capsys.readouterr().err
