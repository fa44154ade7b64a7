"""Shared by the GPU check's tests: which installed distribution owns each module a run imported."""

from __future__ import annotations

import importlib.metadata as md
import sysconfig
from pathlib import Path

from rspose_tune.bench import _bundle

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# The check's real imports: every module file belongs to a bundled or a declared distribution
# --------------------------------------------------------------------------------------------
def _owners() -> dict[str, str]:
    """Resolved file path -> canonical distribution name, for every distribution installed in this
    venv's site-packages. Only there: once anything has imported setuptools, its ``_vendor`` folder is
    on ``sys.path`` and the dist-infos vendored in it (backports.tarfile, jaraco, ...) would claim
    files that setuptools itself installs and carries (its RECORD lists them)."""
    index: dict[str, str] = {}
    site = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
    for dist in md.distributions(path=site):
        name = _bundle.canonical(dist.metadata["Name"])
        for f in dist.files or ():
            if f.suffix in (".py", ".so", ".pyc") or f.name == "__init__.py":
                index[str(Path(dist.locate_file(f)).resolve())] = name
    return index


def uncovered(module_files: dict[str, str | None], entries) -> list[str]:
    """Modules whose file is neither the repository's, the standard library's, nor of a covered distribution."""
    covered = {n for n, e in entries.items() if e.where in ("bundle", "machine")}
    covered |= {_bundle.canonical(n) for n in _bundle.MACHINE_PACKAGES}
    covered |= {_bundle.canonical(k) for k, v in _bundle.PROVIDES.items() if _bundle.canonical(v) in covered}
    covered.add("rspose-tune")  # this project's editable install (its finder): the checkout travels itself
    stdlib = {str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "platstdlib")}
    owners = _owners()
    bad = []
    for module, file in sorted(module_files.items()):
        if not file:
            continue  # built-in, frozen, namespace package, or synthetic (Cython's _cython_3_x)
        path = Path(file).resolve()
        if path.is_relative_to(REPO) and ".venv" not in path.relative_to(REPO).parts:
            continue
        owner = owners.get(str(path))
        if owner is None:
            if any(str(path).startswith(s + "/") for s in stdlib) and "site-packages" not in path.parts:
                continue
            bad.append(f"{module} ({path}: no distribution owns it)")
        elif owner not in covered:
            bad.append(f"{module} (from {owner}, neither bundled nor on the GPU machine's declared list)")
    return bad
