"""Issue 8 through the search CLI (each test starts and stops its own local Ray): a 2-rank trial
with DataLoader worker processes, and resources that fit no node refused before any trial."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_two_rank_trial_with_dataloader_workers_through_the_cli(tmp_path, capsys):
    """Two placement-group bundles = two gloo ranks (the trial + a Ray actor, trainables._ray_ranks),
    each with DataLoader worker processes (a daemonic rank process could not start them), through the
    search CLI. (It was also a second test in tests/trainables/test_ray_ranks.py, the same 2-rank
    trial through a bare Tuner; its assertions are here.)"""
    from rspose_tune import search
    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.results import read_results

    data = generate_demo_dataset(tmp_path / "data", n_train=48, n_val=12)
    code = search.main([
        "--storage", str(tmp_path / "out"), "--name", "ddp", "--data-root", str(data),
        "--num-trials", "1", "--max-epochs", "2", "--grace-epochs", "1", "--num-cpus", "2",
        "--cpus-per-trial", "2", "--workers-per-trial", "2", "--num-workers", "2",
        "--confirm-top", "0", "--no-baseline", "--no-dashboard", "--verbose", "0",
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = read_results(tmp_path / "out" / "ddp" / "trials").sort_values("epoch")
    assert list(rows["status"]) == ["running", "completed"] and rows["error"].isna().all()
    assert list(rows["epoch"]) == [1, 2] and rows["loss"].notna().all()
    assert list(rows["world_size"]) == [2, 2] and all(len(n.split(",")) == 2 for n in rows["nodes"])
    trial_dir = next((tmp_path / "out" / "ddp").glob("trial_*"))
    assert list(trial_dir.glob("checkpoint_*")), sorted(p.name for p in trial_dir.iterdir())  # rank 0 checkpointed
    resolved = (trial_dir / "resolved_config.py").read_text()
    assert "num_workers=2" in resolved and "persistent_workers=True" in resolved
    assert "export" in captured.out or (tmp_path / "out" / "ddp" / "export").is_dir()


def test_resources_that_fit_no_node_are_refused_before_any_trial(tmp_path, capsys):
    from rspose_tune import search
    from rspose_tune.demo_data import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "data", n_train=8, n_val=4)
    code = search.main([
        "--storage", str(tmp_path / "out"), "--name", "big", "--data-root", str(data), "--num-cpus", "2",
        "--gpus-per-trial", "2", "--no-dashboard", "--verbose", "0",
    ])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("error:") == 1
    assert "2 rank(s) of {CPU: 0.5, GPU: 1}" in err and "largest node has {CPU: 2, GPU: 0}" in err
    assert not list((tmp_path / "out" / "big").glob("trial_*"))
