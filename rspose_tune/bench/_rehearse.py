"""``python -m rspose_tune.bench gpu --rehearse``: the GPU machine's route, rehearsed on a CPU machine.

1. **machine**: a python3.12 venv holding only packages of the GPU machine's declared list
   (:data:`rspose_tune.bench._bundle.MACHINE_PACKAGES`): those the bundle's closure relies on, at
   their declared versions (torch 2.11.0, torchvision 0.26.0, numpy 2.5.2) or else the lock's, with
   what pip brings along for them (torch's CUDA libraries: PyPI's torch 2.11.0 cannot be imported
   without them). Anything pip installs that is not on the declared list fails the rehearsal.
2. **checkout**: the files the device tool would copy (``git ls-files -co --exclude-standard``).
3. **prepare**: in that copy, ``python -m rspose_tune.bench gpu --prepare-wheels gpu_wheels`` with
   this project's venv, as docs/gpu_check.md says.
4. **install** and 5. **check**: docs/gpu_check.md's device call, run by bash in that copy with the
   machine venv's ``python3`` first on PATH, ``--device cpu`` instead of ``cuda``, the site and
   ``$OUT`` in the work folder.
6. **fallback**: a python3.12 venv with no setuptools (numpy and Cython only, as the machine has
   them) compiles xtcocotools from the bundle's sdist (``tools/gpu_install.py --sdist``), which must
   then import.

Each step's time is printed; ``rehearsal.json`` in the work folder has them all. The work folder
is a temporary one, removed at the end (``--rehearse-dir DIR``: that folder, kept).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rspose_tune.bench import _bundle
from rspose_tune.errors import RSPoseTuneError

__all__ = ["MACHINE_CONSTRAINTS", "machine_requirements", "rehearse"]

#: Versions of what pip brings along for the machine packages, where the declared list implies them
#: (a package that would pull in an undeclared one cannot be the version that machine has).
MACHINE_CONSTRAINTS: dict[str, str] = {
    "python-dateutil": "<3",  # 3.0 and 4.0 require tzdata, which the declared list lacks (matplotlib needs it)
}


class RehearsalFailed(Exception):
    pass


class RehearsalUsageError(RSPoseTuneError):
    """``--rehearse`` cannot start (a flag, or no CPython 3.12): one ``error:`` line, exit 2."""


def machine_requirements(entries, pins) -> list[str]:
    """``name==version`` for the machine packages the closure relies on: declared version, else the lock's."""
    here_for = {_bundle.canonical(v): _bundle.canonical(k) for k, v in _bundle.PROVIDES.items()}
    reqs = []
    for e in sorted(entries.values(), key=lambda e: e.name):
        if e.where != "machine":
            continue
        version = e.version or pins.get(e.name) or pins.get(here_for.get(e.name, ""))
        reqs.append(f"{e.name}=={version}" if version else e.name)
    return reqs


def _clean_env(path_first: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return env


class _Steps:
    def __init__(self, work: Path):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.times: dict[str, float] = {}

    def run(self, step: str, cmd: list[str], **kw) -> str:
        """Run one command of a step, its output into logs/<step>.log; raise with its tail if it fails."""
        t0 = time.perf_counter()
        log = self.logs / f"{step}.log"
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, check=False, **kw)
        self.times[step] = self.times.get(step, 0.0) + time.perf_counter() - t0
        text = log.read_text()
        if proc.returncode != 0:
            tail = "\n".join(line for line in text.splitlines() if "is ignored: it is neither" not in line)[-3000:]
            raise RehearsalFailed(f"step {step!r} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        return text


def _copy_checkout(dest: Path) -> int:
    """Copy what the device tool copies: tracked files and untracked files git does not ignore."""
    proc = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=_bundle.REPO,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RehearsalFailed(f"{_bundle.REPO} is not a git checkout (git ls-files: {proc.stderr.decode().strip()})")
    count = 0
    for rel in proc.stdout.decode().split("\0"):
        src = _bundle.REPO / rel
        if not rel or not src.is_file():  # deleted in the work tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        count += 1
    return count


def rehearse(workdir: str | None = None, python312: str | None = None) -> int:
    t_all = time.perf_counter()
    py312 = _bundle.find_python312(python312)
    if py312 is None:
        raise RehearsalUsageError("--rehearse needs a CPython 3.12 (python3.12 on PATH or under pyenv; or "
                                  "--python312 PATH)")
    if workdir:
        work = Path(workdir).absolute()
        if work.exists() and any(work.iterdir()):
            raise RehearsalUsageError(f"--rehearse-dir {workdir}: exists and is not empty")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="rspose_rehearsal_"))
    steps = _Steps(work)
    report: dict = {"python312": py312, "work": str(work), "times_s": steps.times}
    try:
        entries = _bundle.derive()  # BundleError: one error: line, exit 2 (bench gpu's handler)
        pins = _bundle.locked_versions()
        _rehearse(steps, work, py312, entries, pins, report, explicit_python=python312 is not None)
    except RehearsalFailed as exc:
        print(f"\nREHEARSAL FAILED after {time.perf_counter() - t_all:.0f} s: {exc}", file=sys.stderr)
        return 1
    finally:
        report["total_s"] = time.perf_counter() - t_all
        (work / "rehearsal.json").write_text(json.dumps(report, indent=1) + "\n")
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nrehearsal passed in {report['total_s']:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.times.items()))
    return 0


def _rehearse(steps: _Steps, work: Path, py312: str, entries, pins, report: dict, explicit_python: bool) -> None:
    version = subprocess.run([py312, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"rehearsal in {work} with {py312} ({version})", flush=True)

    # 1. The machine: only declared packages.
    reqs = machine_requirements(entries, pins)
    machine = work / "machine"
    print(f"[1/6] machine venv: {' '.join(reqs)} (and what pip brings for them; constraints "
          f"{', '.join(k + v for k, v in MACHINE_CONSTRAINTS.items())}) ...", flush=True)
    steps.run("machine", [py312, "-m", "venv", str(machine)])
    mpy = str(machine / "bin" / "python")
    constraints = work / "machine-constraints.txt"
    constraints.write_text("".join(f"{k}{v}\n" for k, v in MACHINE_CONSTRAINTS.items()))
    # --no-compile: no .pyc at install time (Python writes them on first import); the same packages
    steps.run("machine", [mpy, "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-compile",
                          "-c", str(constraints), *reqs], env=_clean_env())
    listed = json.loads(subprocess.run([mpy, "-m", "pip", "--disable-pip-version-check", "list", "--format=json"],
                                       capture_output=True, text=True, check=True).stdout)
    held = {_bundle.canonical(p["name"]): p["version"] for p in listed}
    declared = {_bundle.canonical(k) for k in _bundle.MACHINE_PACKAGES}
    undeclared = sorted(set(held) - declared)
    if undeclared:
        raise RehearsalFailed(f"the machine venv holds {undeclared}, which the GPU machine's declared list lacks")
    size = sum(f.stat().st_size for f in machine.rglob("*") if f.is_file() and not f.is_symlink())
    report["machine"] = {"packages": held, "bytes": size}
    print(f"      {len(held)} packages, {size / 2**30:.1f} GiB, {steps.times['machine']:.0f} s "
          f"(torch {held.get('torch')}, torchvision {held.get('torchvision')}, numpy {held.get('numpy')}, "
          f"setuptools {held.get('setuptools')})", flush=True)

    # 2. The checkout, as the device tool copies it.
    checkout = work / "checkout"
    t0 = time.perf_counter()
    count = _copy_checkout(checkout)
    steps.times["checkout"] = time.perf_counter() - t0
    print(f"[2/6] checkout: {count} files (tracked + untracked, not ignored)", flush=True)

    # 3. Prepare the bundle as docs/gpu_check.md says (this project's venv, in the checkout).
    print("[3/6] prepare: python -m rspose_tune.bench gpu --prepare-wheels gpu_wheels ...", flush=True)
    prepare = [sys.executable, "-m", "rspose_tune.bench", "gpu", "--prepare-wheels", "gpu_wheels"]
    text = steps.run("prepare", prepare + (["--python312", py312] if explicit_python else []), cwd=checkout,
                     env=_clean_env())
    total = next((line for line in text.splitlines() if line.startswith("total ")), "?")
    bundle = json.loads((checkout / "gpu_wheels" / _bundle.MANIFEST).read_text())
    report["bundle"] = {"line": total, "files": len(bundle["files"]) + 1,
                        "bytes": sum(f["bytes"] for f in bundle["files"].values()),
                        "xtcocotools_wheel": bundle["xtcocotools_wheel"]}
    if not bundle["xtcocotools_wheel"]:
        raise RehearsalFailed("the bundle has no prebuilt xtcocotools wheel although a python3.12 is here")
    print(f"      {total} ({steps.times['prepare']:.0f} s)", flush=True)

    # 4 + 5. docs/gpu_check.md's device call, with the machine venv's python3 and --device cpu.
    site, out = work / "site", work / "out"
    env = _clean_env(machine / "bin")
    install = _bundle.INSTALL_COMMAND.format(site=site)
    check = _bundle.CHECK_COMMAND.format(site=site, device="cpu", out=out)
    print(f"[4/6] install: {install}", flush=True)
    steps.run("install", ["bash", "-c", install], cwd=checkout, env=env)
    print(f"      {steps.times['install']:.1f} s", flush=True)
    print(f"[5/6] check: {check}", flush=True)
    text = steps.run("check", ["bash", "-c", check], cwd=checkout, env=env)
    result = json.loads((out / "gpu_check.json").read_text())
    problems = [p for p, bad in (("not finished", not result.get("finished")), ("not ok", not result.get("ok")),
                                 ("imported ray", result.get("ray_imported")),
                                 ("a part is missing", set(result.get("results", {})) != {"losses", "step", "rank"}))
                if bad]
    if problems or not (out / "gpu_check.log").is_file():
        raise RehearsalFailed(f"the check's {out / 'gpu_check.json'}: {', '.join(problems) or 'no log'}")
    summary = text[text.find("=== GPU check summary ==="):].rstrip()
    report["check"] = {"versions": result.get("versions"), "python": result.get("python"), "wall_s": result.get("wall_s")}
    print(f"      {steps.times['check']:.0f} s (the check's own wall time {result['wall_s']:.0f} s, Python "
          f"{result['python']}, torch {result['versions']['torch']})\n" + "\n".join("      " + s for s in summary.splitlines()),
          flush=True)

    # 6. The fallback: xtcocotools from its sdist, in a python3.12 with no setuptools.
    bare = work / "bare"
    print("[6/6] fallback: tools/gpu_install.py --sdist in a python3.12 venv without setuptools ...", flush=True)
    steps.run("fallback", [py312, "-m", "venv", str(bare)])
    bpy = str(bare / "bin" / "python")
    have = [f"numpy=={_bundle.MACHINE_PACKAGES['numpy']}", f"cython=={pins['cython']}"]
    steps.run("fallback", [bpy, "-m", "pip", "--disable-pip-version-check", "uninstall", "-q", "-y", "setuptools"],
              env=_clean_env())
    steps.run("fallback", [bpy, "-m", "pip", "--disable-pip-version-check", "install", "-q", *have], env=_clean_env())
    no_setuptools = subprocess.run([bpy, "-c", "import setuptools"], capture_output=True, env=_clean_env()).returncode
    if no_setuptools == 0:
        raise RehearsalFailed("the fallback venv has setuptools; it must not")
    site2 = work / "site_sdist"
    text = steps.run("fallback", [bpy, "tools/gpu_install.py", "--sdist", "gpu_wheels", str(site2)], cwd=checkout,
                     env=_clean_env())
    steps.run("fallback", [bpy, "-c", "import xtcocotools._mask, xtcocotools.mask, pkg_resources; print('ok')"],
              env={**_clean_env(), "PYTHONPATH": str(site2)})
    report["fallback"] = {"line": text.strip().splitlines()[-1]}
    print(f"      {text.strip().splitlines()[-1]} ({steps.times['fallback']:.0f} s with the venv)", flush=True)
