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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_the_runs_study_on_loopback(tmp_path):
    """Issue 10: the set-up installs optuna-dashboard, and it opens a run's optuna.journal."""
    import json
    import shutil
    import subprocess
    import sys
    import time

    from rspose_tune.searcher import JOURNAL_FILE_NAME, PruningAwareOptunaSearch
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo")
    journal = tmp_path / "run" / JOURNAL_FILE_NAME  # where a search keeps the study
    searcher = PruningAwareOptunaSearch(preset.params, max_epochs=2, metric="metric", mode="max",
                                        known_good=preset.known_good, journal_path=journal)  # fmt: skip
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, "metric": 0.5})
    searcher.on_trial_complete("t1", {"epoch": 2, "metric": 0.6})
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is not installed in this environment (requirements/lock.txt)"
    port = _free_port()
    server = subprocess.Popen([exe, str(journal), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode()[-2000:]
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert body is not None, "optuna-dashboard did not answer on 127.0.0.1"
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["rspose"]
        study = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=10).read())  # fmt: skip
        assert [t["state"] for t in study["trials"]] == ["Complete"]
    finally:
        server.terminate()
        server.wait(timeout=30)
