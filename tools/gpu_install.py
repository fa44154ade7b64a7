#!/usr/bin/env python3
"""Install the GPU check's wheel bundle into a site folder, on the bare GPU machine (no network).

    python3 tools/gpu_install.py gpu_wheels /tmp/rspose_site
    PYTHONPATH=/tmp/rspose_site python3 -m rspose_tune.bench gpu --device cuda --out $OUT

``gpu_wheels`` is what ``python -m rspose_tune.bench gpu --prepare-wheels gpu_wheels`` wrote on a
networked machine. Standard library only (it runs before anything is installed); pip is the
interpreter's own (``python3 -m pip``), always ``--no-index --no-deps`` (the bundle is complete:
the rest is the machine's).

* Every file is checked against ``bundle.json`` (name, size, SHA-256) first.
* xtcocotools: the prebuilt cp312 wheel when this is CPython 3.12 on Linux x86_64; otherwise
  (or with ``--sdist``) it is compiled from the sdist with ``--no-build-isolation``, using the
  bundle's own setuptools (put on PYTHONPATH, so the machine needs no setuptools) and the
  machine's Cython and numpy; that needs a C compiler and Python's headers.
* It installs into ``SITE.partial-*`` and renames that to ``SITE`` only when all went well, so a
  failed or interrupted install leaves no half-written site; an old ``SITE`` is replaced only if
  this script made it (it holds ``.rspose_site``).

Bad input: one ``error:`` line, exit 2. A failed pip: its output, then ``error:``, exit 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = "bundle.json"
MARKER = ".rspose_site"


class Usage(Exception):
    pass


class Failed(Exception):
    pass


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # Python >= 3.11 (the GPU machine has 3.12)


def _read_bundle(wheels: Path) -> dict:
    if not wheels.is_dir():
        raise Usage(f"WHEELS {wheels}: no such folder (prepare it with: python -m rspose_tune.bench gpu "
                    f"--prepare-wheels {wheels.name}, and carry it)")
    manifest = wheels / MANIFEST
    if not manifest.is_file():
        raise Usage(f"WHEELS {wheels}: has no {MANIFEST}; it must be a folder that --prepare-wheels wrote")
    try:
        bundle = json.loads(manifest.read_text())
        files = bundle["files"]
        bundle["xtcocotools_sdist"], bundle["xtcocotools_wheel"]  # noqa: B018 - both must be there
    except (ValueError, KeyError, TypeError) as exc:
        raise Usage(f"WHEELS {manifest}: not a bundle manifest ({exc})") from None
    bad = []
    for rel, meta in sorted(files.items()):
        path = wheels / rel
        if not path.is_file():
            bad.append(f"{rel} missing")
        elif path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
            bad.append(f"{rel} differs from {MANIFEST}")
    if bad:
        raise Usage(f"WHEELS {wheels}: {'; '.join(bad)} (prepare the bundle again)")
    return bundle


def _pip(args: list[str], env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-index", "--no-deps", *args]
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise Failed(f"pip exited {proc.returncode}: {' '.join(cmd)}")


def _prebuilt_fits() -> str | None:
    """None when this interpreter takes the cp312 linux_x86_64 wheel, else why not."""
    here = f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform} {platform.machine()}"
    if (sys.implementation.name, sys.version_info[:2], sys.platform, platform.machine()) == ("cpython", (3, 12), "linux", "x86_64"):
        return None
    return f"this is {here}, the prebuilt wheel is for cpython 3.12 on linux x86_64"


def install(wheels: Path, site: Path, from_sdist: bool) -> int:
    t0 = time.perf_counter()
    bundle = _read_bundle(wheels)
    if site.exists() and not (site / MARKER).is_file():
        raise Usage(f"SITE {site}: exists and was not made by this script (no {MARKER}); name another folder")
    prebuilt = bundle.get("xtcocotools_wheel")
    why_sdist = ("--sdist was given" if from_sdist else
                 "the bundle has no prebuilt wheel (no python3.12 where it was prepared)" if not prebuilt else
                 _prebuilt_fits())
    wheel_files = [wheels / rel for rel in sorted(bundle["files"]) if rel.endswith(".whl")
                   and not (why_sdist and rel == prebuilt)]
    site.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{site.name}.partial-", dir=site.parent))
    try:
        print(f"installing {len(wheel_files)} wheels into {site} with {sys.executable} "
              f"(Python {platform.python_version()}) ...", flush=True)
        _pip(["--target", str(stage), *map(str, wheel_files)])
        if why_sdist:
            sdist = wheels / bundle["xtcocotools_sdist"]
            print(f"xtcocotools: compiling {sdist.name} ({why_sdist}) with the bundle's setuptools ...", flush=True)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(stage), *filter(None, [env.get("PYTHONPATH")])])
            _pip(["--no-build-isolation", "--target", str(stage), str(sdist)], env=env)
        (stage / MARKER).write_text(json.dumps({"from": str(wheels.resolve()), "xtcocotools":
                                                "sdist" if why_sdist else "wheel"}) + "\n")
        if site.exists():
            shutil.rmtree(site)
        stage.replace(site)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    how = f"xtcocotools from its sdist ({why_sdist})" if why_sdist else "xtcocotools from its prebuilt cp312 wheel"
    print(f"installed the bundle into {site} in {time.perf_counter() - t0:.1f} s ({how}); run with PYTHONPATH={site}",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 tools/gpu_install.py", description=__doc__.split("\n")[0])
    p.add_argument("wheels", metavar="WHEELS", help="the folder --prepare-wheels wrote (carried as gpu_wheels)")
    p.add_argument("site", metavar="SITE", help="the folder to install into; run the check with PYTHONPATH=SITE")
    p.add_argument("--sdist", action="store_true", help="compile xtcocotools from its sdist even if the wheel fits")
    args = p.parse_args(argv)
    try:
        return install(Path(args.wheels), Path(args.site).absolute(), args.sdist)
    except Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
