"""The GPU bundle is complete by construction: the closure's logic, and the check's real imports against it."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rspose_tune.bench import _bundle
from tests.bench.conftest import uncovered

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# The closure's rules, on fake metadata
# --------------------------------------------------------------------------------------------
def _fake(meta: dict[str, tuple[str, list[str]]]):
    def metadata(name: str):
        if name not in meta:
            raise _bundle.BundleError(f"{name} is not installed")
        return meta[name]

    return metadata


def _derive(roots, meta, *, machine=None, pins=None, **kw):
    pins = pins if pins is not None else {n: v for n, (v, _) in meta.items()}
    return _bundle.derive(roots, pins=pins, metadata=_fake(meta), machine=machine or {}, provides=kw.pop("provides", {}),
                          excluded=kw.pop("excluded", {}), force=kw.pop("force", {}), **kw)


def test_closure_follows_markers_and_extras_for_cp312_linux():
    meta = {
        "app": ("1.0", ['lib[fast]>=1', 'old; python_version < "3.11"', 'win; sys_platform == "win32"',
                        'lin; platform_system == "Linux"', 'doc; extra == "docs"']),
        "lib": ("2.0", ['speed; extra == "fast"', 'slowonly; extra == "slow"']),
        "speed": ("3.0", []), "lin": ("4.0", []), "old": ("0.1", []), "win": ("0.1", []), "doc": ("0.1", []),
        "slowonly": ("0.1", []),
    }
    entries = _derive(["app"], meta)
    assert sorted(entries) == ["app", "lib", "lin", "speed"]
    assert all(e.where == "bundle" for e in entries.values())
    assert entries["speed"].required_by == ["lib 2.0 (speed)"]


def test_machine_packages_stop_the_walk_and_their_versions_are_checked():
    meta = {"app": ("1.0", ["numpy>=2", "tool"]), "tool": ("1.0", ["numpy"])}
    entries = _derive(["app"], meta, machine={"numpy": "2.5.2"})
    assert entries["numpy"].where == "machine" and entries["numpy"].version == "2.5.2"
    assert entries["numpy"].required_by == ["app 1.0 (numpy>=2)", "tool 1.0 (numpy)"]
    with pytest.raises(_bundle.BundleError, match=r"machine's numpy 2.5.2 does not satisfy app 1.0 \(numpy<2\)"):
        _derive(["app"], {"app": ("1.0", ["numpy<2"])}, machine={"numpy": "2.5.2"})
    # an undocumented version is not held against anything
    assert _derive(["app"], {"app": ("1.0", ["rich<1"])}, machine={"rich": None})["rich"].version is None


def test_provides_excluded_and_forced():
    meta = {"app": ("1.0", ["opencv-python>=3", "chumpy", "setuptools"]), "setuptools": ("80.10.2", [])}
    entries = _derive(["app"], meta, machine={"opencv-python-headless": None, "setuptools": None},
                      provides={"opencv-python": "opencv-python-headless"}, excluded={"chumpy": "never imported"},
                      force={"setuptools": "needs pkg_resources"})
    assert entries["opencv-python-headless"].where == "machine" and "opencv-python" not in entries
    assert entries["chumpy"].where == "excluded" and entries["chumpy"].why == "never imported"
    assert entries["setuptools"].where == "bundle" and entries["setuptools"].why == "needs pkg_resources"


def test_a_bundled_distribution_needs_a_pin_that_matches_what_is_installed():
    with pytest.raises(_bundle.BundleError, match="pin no version of it"):
        _derive(["app"], {"app": ("1.0", [])}, pins={})
    with pytest.raises(_bundle.BundleError, match="installed app is 1.1 but the lock pins 1.0"):
        _derive(["app"], {"app": ("1.1", [])}, pins={"app": "1.0"})
    with pytest.raises(_bundle.BundleError, match=r"pinned lib==1.0 does not satisfy app 1.0 \(lib>=2\)"):
        _derive(["app"], {"app": ("1.0", ["lib>=2"]), "lib": ("1.0", [])})


def test_lock_lines_must_be_single_pins(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "build.txt").write_text("numpy==2.4.6  # comment\n")
    (tmp_path / "requirements" / "lock.txt").write_text("Foo_Bar==1.0\nbaz>=2\n")
    with pytest.raises(_bundle.BundleError, match=r"lock.txt:2: 'baz>=2' must pin one version"):
        _bundle.locked_versions(tmp_path)
    (tmp_path / "requirements" / "lock.txt").write_text("Foo_Bar==1.0\n")
    assert _bundle.locked_versions(tmp_path)["foo-bar"] == "1.0"


# --------------------------------------------------------------------------------------------
# The real closure, from this venv's metadata
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def entries():
    return _bundle.derive()


def test_real_closure(entries):
    where = {name: e.where for name, e in entries.items()}
    # the modules whose absence hid behind mmengine's registry (issue 15) are each covered
    for name in ("mat4py", "mmpretrain", "model-index", "importlib-metadata", "xtcocotools", "setuptools"):
        assert where[name] == "bundle", name
    for name in ("einops", "markdown", "six", "tqdm", "rich", "pyyaml", "torch", "numpy"):
        assert where[name] == "machine", name
    assert where["chumpy"] == "excluded" and "--no-deps" in entries["chumpy"].why
    assert entries["opencv-python-headless"].why == "provides opencv-python" and "opencv-python" not in entries
    pins = _bundle.locked_versions()
    assert all(e.version == pins[e.name] for e in entries.values() if e.where == "bundle")
    assert entries["torch"].version == "2.11.0" and entries["numpy"].version == "2.5.2"


def test_check_modules_literal_is_the_closures(entries):
    assert _bundle.check_modules(entries) == _bundle.CHECK_MODULES


def test_xtcocotools_pin_is_setup_shs():
    assert f"xtcocotools=={_bundle.EXTRA_PINS['xtcocotools']}" in (REPO / "setup.sh").read_text()
    assert md.version("xtcocotools") == _bundle.EXTRA_PINS["xtcocotools"]


IMPORT_PHASE = """
import json, sys
from rspose_tune.bench._gpu import preflight
problems = preflight()
files = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if m is not None}
open(sys.argv[1], "w").write(json.dumps({"problems": problems, "files": files}))
"""


def test_every_module_the_checks_preflight_imports_is_bundled_or_declared(tmp_path, entries):
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", IMPORT_PHASE, str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["problems"] == []
    assert "mmpretrain.models" in data["files"] and "mmpretrain.datasets" in data["files"]
    assert "ray" not in data["files"]
    assert uncovered(data["files"], entries) == []


def test_the_coverage_check_can_fail(entries):
    import ray  # in this venv, not on the GPU machine

    files = {"ray": ray.__file__, "numpy": __import__("numpy").__file__, "mystery": "/nonexistent/site-packages/x.py"}
    bad = uncovered(files, entries)
    assert len(bad) == 2 and bad[0].startswith("mystery") and "from ray, neither bundled nor" in bad[1]


# --------------------------------------------------------------------------------------------
# --prepare-wheels and tools/gpu_install.py: bad input
# --------------------------------------------------------------------------------------------
def _one_error(proc, rc=2) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == rc and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def test_prepare_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "rspose_tune.bench", "gpu", "--prepare-wheels", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert "is not a bundle this command wrote" in _one_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def _install(*args: str):
    return subprocess.run([sys.executable, str(REPO / "tools" / "gpu_install.py"), *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_gpu_install_checks_the_bundle_and_the_site(tmp_path):
    wheels, site = tmp_path / "gpu_wheels", tmp_path / "site"
    assert "no such folder" in _one_error(_install(str(wheels), str(site)))
    wheels.mkdir()
    assert "has no bundle.json" in _one_error(_install(str(wheels), str(site)))
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"not the file")
    (wheels / "bundle.json").write_text(json.dumps({"files": {}}))
    assert "not a bundle manifest ('xtcocotools_sdist')" in _one_error(_install(str(wheels), str(site)))
    xtc = {"xtcocotools_sdist": "sdist/xtcocotools-1.14.3.tar.gz", "xtcocotools_wheel": None}
    (wheels / "bundle.json").write_text(json.dumps({**xtc, "files": {
        "a-1.0-py3-none-any.whl": {"bytes": 3, "sha256": "0" * 64}, "b-1.0-py3-none-any.whl": {"bytes": 1, "sha256": ""}}}))
    line = _one_error(_install(str(wheels), str(site)))
    assert "a-1.0-py3-none-any.whl differs from bundle.json" in line and "b-1.0-py3-none-any.whl missing" in line
    site.mkdir()
    (wheels / "bundle.json").write_text(json.dumps({**xtc, "files": {}}))
    assert "was not made by this script" in _one_error(_install(str(wheels), str(site)))
    assert not list(tmp_path.glob("site.partial-*"))


def test_docs_give_the_device_call_the_code_rehearses():
    from rspose_tune.bench import _gpu

    section = (REPO / "docs" / "gpu_check.md").read_text().split("## The device call", 1)[1].split("\n## ", 1)[0]
    command = (_bundle.INSTALL_COMMAND.format(site=_bundle.GPU_SITE) + " && "
               + _bundle.CHECK_COMMAND.format(site=_bundle.GPU_SITE, device="cuda", out="$OUT"))
    assert f"`{command}`" in section
    assert '`["gpu_wheels"]`' in section and "/gpu_wheels" in (REPO / ".gitignore").read_text().splitlines()
    timeout = int(section.split("| `timeout_s` | `", 1)[1].split("`", 1)[0])
    assert _gpu.DEADLINE_S["cuda"] < timeout and 2 * timeout <= 15 * 60 - 180  # a rerun fits, with a start
