"""Real servers on 127.0.0.1 for ``bench soak`` and the cluster tests: Ray nodes started with the
real ``ray start ... --block`` (token authentication, as docs/cluster.md says) and moto's
standalone S3 server, each one process group that its starter stops by id (never by name).

Importing this module starts nothing and imports nothing from Ray.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Node", "S3Server", "free_port", "processes", "ray_bin", "wait_for_nodes", "wait_until"]


def ray_bin() -> str:
    """The ``ray`` command of this interpreter's environment."""
    return str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes() -> list[dict[str, Any]]:
    """Live (non-zombie) processes from /proc: pid, pgid, name, cmdline."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if rest[0] != "Z":
            out.append({"pid": int(entry.name), "pgid": int(rest[2]), "name": name,
                        "cmdline": [c.decode(errors="replace") for c in cmdline if c]})
    return out


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.3) -> Any:
    """The first truthy ``predicate()``; :class:`TimeoutError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class _Group:
    """One process (and its process group, ``start_new_session``) that this program started."""

    proc: subprocess.Popen | None = None

    def members(self) -> list[dict[str, Any]]:
        """Live processes of this process group."""
        if self.proc is None:
            return []
        return [p for p in processes() if p["pgid"] == self.proc.pid]

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace_s``."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a stopped (SIGSTOP) group cannot act on SIGTERM
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace_s
            while self.members() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.proc.wait(timeout=30)


class Node(_Group):
    """One ``ray start ... --block`` process group on 127.0.0.1 with its own temp and home folder."""

    def __init__(self, command: str, *, home: Path, temp: Path, env: dict[str, str], log: Path,
                 extra: tuple[str, ...] = ("--num-cpus=1", "--num-gpus=1")):
        self.command, self.home, self.temp, self.env, self.log, self.extra = command, home, temp, env, log, extra
        self.proc = None

    def start(self) -> None:
        args = shlex.split(self.command) + [
            "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp}", *self.extra, "--block"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, env={**self.env, "HOME": str(self.home)}, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def raylet(self) -> dict[str, Any]:
        (raylet,) = [p for p in self.members() if p["name"] == "raylet"]
        return raylet

    def node_id(self) -> str:
        (arg,) = [a for a in self.raylet()["cmdline"] if a.startswith("--node_id=")]
        return arg.split("=", 1)[1]


def wait_for_nodes(address: str, env: dict[str, str], count: int, timeout_s: float = 90) -> None:
    """Until ``ray status`` at ``address`` lists ``count`` alive nodes."""
    def alive() -> bool:
        out = subprocess.run([ray_bin(), "status", f"--address={address}"], env=env, capture_output=True, text=True,
                             timeout=60)
        return out.returncode == 0 and out.stdout.split("Pending:")[0].count(" node_") == count

    wait_until(alive, timeout_s, f"{count} alive node(s) at {address}", every_s=1.0)


#: What moto's standalone server accepts as credentials; the AWS_* variables of :attr:`S3Server.env`.
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server(_Group):
    """moto's standalone S3 server on a free 127.0.0.1 port (its data lives in its memory).

    :meth:`pause` / :meth:`resume` stop and continue it (SIGSTOP / SIGCONT of its process group): an
    outage that keeps the data, as a partitioned object store does; clients see requests time out.
    """

    def __init__(self, log: Path):
        self.log, self.proc, self.endpoint = log, None, ""

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, **_CREDENTIALS}

    def start(self, timeout_s: float = 60) -> None:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

        def port() -> str | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto's S3 server exited: {self.log.read_text()[-2000:]}")
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log.read_text())
            return match and match.group(1)

        self.endpoint = f"http://127.0.0.1:{wait_until(port, timeout_s, 'moto S3 server to listen', every_s=0.2)}"

    def create_bucket(self, bucket: str) -> None:
        import pyarrow.fs as pafs

        pafs.S3FileSystem(endpoint_override=self.endpoint, access_key=_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          secret_key=_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region=_CREDENTIALS["AWS_DEFAULT_REGION"],
                          allow_bucket_creation=True).create_dir(bucket)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
