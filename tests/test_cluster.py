"""Issue 5: trials placed across the nodes of a (simulated) two-node Ray cluster with GPUs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture()
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster
    import ray

    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_two_gpu_nodes_and_write_shared_storage(two_node_cluster, tmp_path, capsys):
    import ray

    from rspose_tune import search
    from rspose_tune.demo_data import generate_demo_dataset
    from rspose_tune.results import read_results

    data = generate_demo_dataset(tmp_path / "data", n_train=48, n_val=12)
    storage = tmp_path / "shared"  # one filesystem path both nodes see, as NFS would be
    code = search.main([
        "--address", two_node_cluster.address, "--storage", str(storage), "--name", "cluster",
        "--data-root", str(data), "--num-trials", "2", "--max-epochs", "1", "--grace-epochs", "1",
        "--gpus-per-trial", "1", "--cpus-per-trial", "1", "--no-report", "--verbose", "0",
    ])
    assert code == 0, capsys.readouterr().err
    rows = read_results(storage / "cluster" / "trials")
    assert len(rows) == 2 and set(rows["status"]) == {"completed"}
    node_ids = {n.split("/")[-1] for n in rows["node"]}
    cluster_nodes = {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}
    assert node_ids == cluster_nodes and len(node_ids) == 2  # one trial on each GPU node
