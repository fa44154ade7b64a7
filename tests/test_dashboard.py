"""Issue 5: the CLI's local Ray dashboard is loopback-only and keeps token authentication on."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_dashboard_loopback_and_token_required(tmp_path, capsys):
    import ray

    from rspose_tune import search

    args = search.build_parser().parse_args(["--storage", str(tmp_path), "--dashboard-port", "8297", "--num-cpus", "1"])
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


def test_exposed_dashboard_warns(tmp_path, capsys, monkeypatch):
    import ray

    from rspose_tune import search

    calls = {}
    monkeypatch.setattr(ray, "init", lambda **kw: calls.update(kw))  # only the warning is under test
    args = search.build_parser().parse_args(["--storage", str(tmp_path), "--dashboard-host", "0.0.0.0"])
    plan = search.Plan(None, "x", str(tmp_path), str(tmp_path / "x"), 1, 1, 1, 2, 0.0, 1.0, None)
    search.start_ray(plan, args)
    assert "CVE-2023-48022" in capsys.readouterr().err and calls["dashboard_host"] == "0.0.0.0"
