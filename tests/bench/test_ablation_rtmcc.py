"""``bench ablation --preset demo-rtmcc`` at its smallest: RTMPose's stock loss and RS+Inst rows."""

from __future__ import annotations

import pytest

from tests.bench.test_ablation import _bench


@pytest.mark.slow
def test_ablation_takes_the_rtmcc_demo(tmp_path):
    out = _bench("--preset", "demo-rtmcc", "--train-images", "8", "--val-images", "4", "--epochs", "1", "--seeds", "2",
                 "--pos-thr", "0", "--losses", "stock,rs_inst", "--data-root", str(tmp_path / "data"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("ABLATION\n", 1)[1]
    assert table.startswith("bench ablation, preset demo-rtmcc: 1 epochs, 2 seeds"), table
    rows = [" ".join(line.split()[:4]) for line in table.splitlines()[3:5]]
    assert rows == ["stock (KLDiscretLoss) (its own", "RS+Inst label > 0"], table
