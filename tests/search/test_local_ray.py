"""Issue 10: with no --address and no RAY_ADDRESS the search starts a fresh local Ray, whatever
cluster `ray start` recorded on the machine (here: a stale record pointing at a dead address)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytestmark = pytest.mark.slow


def test_stale_cluster_file_is_ignored_without_an_address(tmp_path):
    # Ray finds `ray start`'s cluster in <RAY_TMPDIR>/ray/ray_current_cluster; a private RAY_TMPDIR
    # (short: Ray's socket paths must fit 107 bytes) leaves other Ray instances on this machine alone.
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs(f"{ray_tmp}/ray")
    with open(f"{ray_tmp}/ray/ray_current_cluster", "w") as f:
        f.write("127.0.0.1:1")  # a head node that died: nothing listens there
    code = textwrap.dedent(f"""
        import ray
        from rspose_tune import search
        args = search.build_parser().parse_args(["--storage", {str(tmp_path)!r}, "--num-cpus", "1", "--no-dashboard"])
        plan = search.Plan(None, "x", {str(tmp_path)!r}, {str(tmp_path / "x")!r}, 1, 1, 1, 2, 0.0, 1.0, None)
        context = search.start_ray(plan, args)
        print("CPUS", ray.cluster_resources().get("CPU"), "SESSION", context.address_info["session_dir"])
        ray.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    finally:
        subprocess.run(["rm", "-rf", ray_tmp], check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "CPUS 1.0" in proc.stdout and f"SESSION {ray_tmp}/ray/session_" in proc.stdout
