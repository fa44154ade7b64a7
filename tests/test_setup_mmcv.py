"""``tools/full_mmcv.sh`` (``./setup.sh --full-mmcv``) never leaves a venv without mmcv.

Offline and in seconds: a throwaway venv holds a stand-in ``mmcv-lite`` wheel; "full mmcv" wheels
are stand-ins served from a local find-links folder (pip never reaches an index). The real
source build (~30 min) is not run here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "full_mmcv.sh"


def _wheel(dest: Path, dist: str, version: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel (valid RECORD) holding ``files``."""
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    entries = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in entries.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in entries.items():
            zf.writestr(member, text)
    return path


@pytest.fixture
def lite_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    lite = _wheel(tmp_path / "lite", "mmcv-lite", "2.1.0", {"mmcv/__init__.py": "__version__ = '2.1.0'\nLITE = True\n"})
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(lite)],
                   check=True, env=_offline_env(tmp_path / "empty"))
    return venv


def _offline_env(links: Path) -> dict[str, str]:
    links.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", RSPOSE_MMCV_FIND_LINKS=str(links))
    return env


def _run(venv: Path, links: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True, timeout=300,
                          env=_offline_env(links), check=False)


def _installed(venv: Path) -> str:
    code = "import mmcv, importlib.metadata as m; print(sorted(d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].startswith('mmcv')), getattr(mmcv, 'LITE', False))"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_full_mmcv_keeps_lite_on_failure_and_swaps_on_success(lite_venv: Path, tmp_path: Path):
    assert _installed(lite_venv) == "['mmcv-lite'] True"

    # 1. No wheel can be obtained (an empty index): nothing is uninstalled.
    proc = _run(lite_venv, tmp_path / "empty")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "could not obtain or build an mmcv 2.1.0 wheel" in proc.stderr and "mmcv-lite stays installed" in proc.stderr
    assert _installed(lite_venv) == "['mmcv-lite'] True"

    # 2. A wheel that installs but has no compiled ops: rolled back to mmcv-lite.
    _wheel(tmp_path / "broken", "mmcv", "2.1.0", {"mmcv/__init__.py": "__version__ = '2.1.0'\n"})
    proc = _run(lite_venv, tmp_path / "broken")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "mmcv-lite was restored" in proc.stderr
    assert _installed(lite_venv) == "['mmcv-lite'] True"

    # 3. A working wheel (stand-in for the compiled ops): mmcv-lite is replaced.
    _wheel(tmp_path / "good", "mmcv", "2.1.0", {"mmcv/__init__.py": "__version__ = '2.1.0'\n", "mmcv/_ext.py": ""})
    proc = _run(lite_venv, tmp_path / "good")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _installed(lite_venv) == "['mmcv'] False"


def test_setup_sh_flags():
    setup = REPO / "setup.sh"
    help_text = subprocess.run(["bash", str(setup), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--full-mmcv" in help_text and "--cuda" in help_text
    proc = subprocess.run(["bash", str(setup), "--bogus"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "unknown option '--bogus'" in proc.stderr
