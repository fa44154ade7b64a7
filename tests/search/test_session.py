"""rspose_tune.search._session: the Ray session. A bad or unreachable --address fails fast; the local
dashboard is loopback-only and keeps token authentication on; with no --address and no RAY_ADDRESS
a fresh local Ray starts, whatever cluster `ray start` recorded on the machine (here: a stale
record pointing at a dead address)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.search.conftest import _run


def test_unreachable_address_fails_fast(capsys, tmp_path):
    start = time.monotonic()
    code, err = _run(["--address", "127.0.0.1:1", "--storage", str(tmp_path), "--data-root", str(tmp_path / "d")], capsys)
    assert code == 2 and "--address '127.0.0.1:1': no Ray cluster reachable there" in err
    assert time.monotonic() - start < 60


def test_malformed_address(capsys, tmp_path):
    code, err = _run(["--address", "nohost", "--storage", str(tmp_path), "--data-root", str(tmp_path / "d")], capsys)
    assert code == 2 and "--address must be 'auto' or host:port" in err


@pytest.mark.slow
def test_dashboard_loopback_and_token_required(tmp_path, capsys):
    import ray

    from rspose_tune import search

    args = search.parse_options(["--storage", str(tmp_path), "--dashboard-port", "8297", "--num-cpus", "1"])
    plan = search.Plan(None, "x", str(tmp_path), str(tmp_path / "x"), 1, 1, 1, 2, 0.0, 1.0, None)
    context = search.start_ray(plan, args)
    try:
        search._print_dashboard(context)
        out = capsys.readouterr().out
        assert "Ray dashboard: http://127.0.0.1:8297" in out and "auth_token" in out
        url = "http://127.0.0.1:8297/api/version"
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url, timeout=20)
        assert exc.value.code == 401
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(request, timeout=20).status == 200
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_exposed_dashboard_warns(tmp_path, capsys, monkeypatch):
    import ray

    from rspose_tune import search

    calls = {}
    monkeypatch.setattr(ray, "init", lambda **kw: calls.update(kw))  # only the warning is under test
    args = search.parse_options(["--storage", str(tmp_path), "--dashboard-host", "0.0.0.0"])
    plan = search.Plan(None, "x", str(tmp_path), str(tmp_path / "x"), 1, 1, 1, 2, 0.0, 1.0, None)
    search.start_ray(plan, args)
    assert "CVE-2023-48022" in capsys.readouterr().err and calls["dashboard_host"] == "0.0.0.0"


@pytest.mark.slow
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
        args = search.parse_options(["--storage", {str(tmp_path)!r}, "--num-cpus", "1", "--no-dashboard"])
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
