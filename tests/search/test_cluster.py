"""Issues 5 and 8: trials across the nodes of a simulated two-node Ray cluster with (logical) GPUs.

Each node has its own temp/session folder, as separate machines would: a trial's working
directory on the second node is not under the first node's folder nor under the storage, so a
file found under ``<storage>/<run>/trial_<id>/`` got there through Ray's artifact syncing, not
through a shared /tmp.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture()
def two_node_cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    # Short paths: Ray's unix sockets live under each node's temp dir (108-byte limit).
    temps = [Path(tempfile.mkdtemp(prefix="rn", dir="/tmp")) for _ in range(3)]
    # Cluster writes its address file to <Ray's default temp dir>/ray_current_cluster, a folder
    # that exists only once something has started Ray there. Point that default at a fresh folder
    # of this test's own, so a fresh machine (empty TMPDIR) behaves like any other.
    monkeypatch.setenv("RAY_TMPDIR", str(temps[2]))
    (temps[2] / "ray").mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 1, "include_dashboard": False, "temp_dir": str(temps[0])})
    cluster.add_node(num_cpus=1, num_gpus=1, temp_dir=str(temps[1]))
    cluster.wait_for_nodes()
    yield cluster, temps
    import ray

    ray.shutdown()
    cluster.shutdown()
    for temp in temps:
        shutil.rmtree(temp, ignore_errors=True)


def _search(address, storage, name, data, *extra):
    from rspose_tune import search

    return search.main([
        "--address", address, "--storage", str(storage), "--name", name, "--data-root", str(data),
        "--max-epochs", "1", "--grace-epochs", "1", "--cpus-per-trial", "1", "--no-report", "--verbose", "0",
        "--confirm-top", "0", "--no-baseline",
        *extra,
    ])


def test_trials_on_both_nodes_put_their_files_on_the_storage(two_node_cluster, tmp_path, capsys):
    import ray

    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.results import read_results

    cluster, temps = two_node_cluster
    data = generate_demo_dataset(tmp_path / "data", n_train=48, n_val=12)
    storage = tmp_path / "shared"  # one filesystem path both nodes see, as NFS would be
    code = _search(cluster.address, storage, "cluster", data, "--num-trials", "2", "--gpus-per-trial", "1")
    assert code == 0, capsys.readouterr().err
    rows = read_results(storage / "cluster" / "trials")
    assert len(rows) == 2 and set(rows["status"]) == {"completed"}
    node_ids = {n.split("/")[-1] for n in rows["node"]}
    cluster_nodes = {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}
    assert node_ids == cluster_nodes and len(node_ids) == 2  # one trial on each GPU node
    for trial_id in rows["trial_id"]:
        trial_dir = storage / "cluster" / f"trial_{trial_id}"
        assert (trial_dir / "resolved_config.py").is_file(), sorted(p.name for p in trial_dir.iterdir())
        assert (trial_dir / "trial.json").is_file()
        assert list(trial_dir.glob("checkpoint_*/checkpoint.pth"))
        assert list(trial_dir.glob("mmpose/*/*.log")), "the MMPose log of the trial is not on the storage"
    # The second node wrote its trial's working directory under its own temp folder only.
    node1_configs = list(temps[1].rglob("resolved_config.py"))
    assert node1_configs and not any(temps[0] in p.parents for p in node1_configs)


def test_a_two_rank_trial_spans_two_nodes(two_node_cluster, tmp_path, capsys):
    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.results import read_results

    cluster, _ = two_node_cluster
    data = generate_demo_dataset(tmp_path / "data", n_train=48, n_val=12)
    storage = tmp_path / "shared"
    # 2 GPUs per trial, 1 per node: PACK must place one rank on each node (gloo: no CUDA here).
    code = _search(cluster.address, storage, "span", data, "--num-trials", "1", "--gpus-per-trial", "2",
                   "--cpus-per-trial", "2")
    assert code == 0, capsys.readouterr().err
    rows = read_results(storage / "span" / "trials")
    assert list(rows["status"]) == ["completed"] and list(rows["world_size"]) == [2]
    nodes = rows["nodes"].iloc[0].split(",")
    assert len(set(nodes)) == 2, nodes
