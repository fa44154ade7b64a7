"""The GPU machine's wheel bundle, derived from installed metadata so that it is complete by construction.

``bench gpu`` runs on a bare GPU machine that has Python 3.12, torch and a documented set of
packages, but no OpenMMLab and no network. What it must carry there is

    the Requires-Dist closure (markers evaluated for CPython 3.12 on Linux x86_64, extras as pip
    follows them) of the distributions the check imports (:data:`ROOTS`), taken from this
    environment's ``importlib.metadata``,
    minus :data:`MACHINE_PACKAGES`, the one declared list of what that machine already has,
    minus :data:`EXCLUDED` (named here with the reason: mmpose's ``chumpy``),
    plus :data:`FORCE_BUNDLE` (carried although the machine has a copy, with the reason).

A requirement that reaches a machine package stops there (its own dependencies are the
machine's); one that reaches a bundled distribution goes on into that distribution's
requirements. Bundled versions are pinned from ``requirements/lock.txt`` and ``build.txt`` and
must equal what is installed here (that is whose metadata the closure read). A machine package
with a documented version must satisfy every specifier that reaches it.

No side effects on import; nothing here imports torch or OpenMMLab.
"""

from __future__ import annotations

from rspose_tune.errors import RSPoseTuneError

import dataclasses
import importlib.metadata as md
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = [
    "CHECK_MODULES", "EXCLUDED", "FORCE_BUNDLE", "MACHINE_PACKAGES", "MACHINE_PYTHON", "PROVIDES", "ROOTS",
    "BundleError", "Entry", "check_modules", "derive", "locked_versions", "target_environment",
]

REPO = Path(__file__).resolve().parents[2]

#: The bare GPU machine's Python (its documented pip list: python3 is Python 3.12.3).
MACHINE_PYTHON = "3.12.3"

# fmt: off
#: THE declared list: every Python distribution the bare GPU machine's image already holds, as
#: documented for the device machine (kind nvidia-h200, image 'cuda', "Python packages already
#: there", read 2026-11-17), with the version where its documented pip list gives one (None:
#: present, version not documented). Nothing else is assumed to be there.
MACHINE_PACKAGES: dict[str, str | None] = dict.fromkeys((
    "absl-py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio",
    "attrs", "botorch", "build", "certifi", "charset-normalizer", "chex", "click", "cloudpickle", "cmake",
    "colorama", "contourpy", "coverage", "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit",
    "cupy-cuda13x", "cycler", "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock",
    "flatbuffers", "flax", "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch", "grpcio", "h11", "h5py",
    "hf-xet", "httpcore", "httpx", "huggingface-hub", "humanize", "hypothesis", "idna", "imageio", "iniconfig",
    "interface-meta", "jax", "jax-cuda13-pjrt", "jax-cuda13-plugin", "jaxlib", "jaxtyping", "jinja2", "joblib",
    "kiwisolver", "lazy-loader", "lightning", "lightning-utilities", "linear-operator", "lineax", "llvmlite",
    "lxml", "markdown", "markdown-it-py", "markupsafe", "matplotlib", "mdurl", "meson", "ml-dtypes", "mpi4py",
    "mpmath", "msgpack", "multidict", "multipledispatch", "mypy-extensions", "nanobind", "narwhals", "networkx",
    "ninja", "numba", "numba-cuda", "numpy", "numpyro", "nvidia-cublas", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc",
    "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-cufile", "nvidia-curand",
    "nvidia-cusolver", "nvidia-cusparse", "nvidia-cusparselt-cu13", "nvidia-ml-py", "nvidia-nccl-cu13",
    "nvidia-nvjitlink", "nvidia-nvshmem-cu13", "nvidia-nvtx", "onnx", "onnx-ir", "onnxruntime", "onnxscript",
    "opencv-python-headless", "optax", "opt-einsum", "opt-einsum-fx", "optimistix", "orbax-checkpoint",
    "packaging", "pandas", "pathspec", "patsy", "peft", "pillow", "pip", "pluggy", "portalocker",
    "prometheus-client", "propcache", "protobuf", "psutil", "pyarrow", "pybind11", "py-cpuinfo", "pygments",
    "pyparsing", "pyproject-hooks", "pyre-extensions", "pytest", "pytest-benchmark", "pytest-cov", "pytest-mock",
    "pytest-timeout", "pytest-xdist", "python-dateutil", "pytorch-lightning", "pyyaml", "regex", "requests",
    "rich", "sacrebleu", "safetensors", "scikit-build-core", "scikit-image", "scikit-learn", "scipy", "seaborn",
    "sentencepiece", "sentence-transformers", "setuptools", "shellingham", "simplejson", "six",
    "sortedcontainers", "statsmodels", "sympy", "tabulate", "tensorboard", "tensorboard-data-server",
    "tensorstore", "threadpoolctl", "tifffile", "tiktoken", "timm", "tokenizers", "toolz", "torch", "torchaudio",
    "torchdiffeq", "torch-geometric", "torchmetrics", "torchvision", "tqdm", "transformers", "treescope",
    "triton", "typer", "typing-extensions", "typing-inspect", "urllib3", "uvloop", "wadler-lindig", "werkzeug",
    "wheel", "wrapt", "xarray", "xxhash", "yarl", "zipp",
)) | {  # the documented pip list's versions (2026-11)
    "accelerate": "1.15.0", "botorch": "0.18.1", "cupy-cuda13x": "14.2.0", "gpytorch": "1.15.2",
    "huggingface-hub": "1.33.0", "jax": "0.11.2", "jax-cuda13-pjrt": "0.11.2", "jax-cuda13-plugin": "0.11.2",
    "jaxlib": "0.11.2", "jaxtyping": "0.3.11", "numpy": "2.5.2", "numpyro": "0.21.0", "onnx": "1.23.1",
    "onnx-ir": "1.0.0", "onnxruntime": "1.30.0", "onnxscript": "0.7.2", "pytorch-lightning": "2.6.6",
    "safetensors": "0.8.0", "sentence-transformers": "6.0.1", "sentencepiece": "0.2.2", "tiktoken": "0.14.0",
    "tokenizers": "0.23.2", "torch": "2.11.0", "torch-geometric": "2.8.0.post1", "torchaudio": "2.11.0",
    "torchdiffeq": "0.2.5", "torchmetrics": "1.9.0", "torchvision": "0.26.0", "transformers": "5.17.0",
    "triton": "3.6.0",
}
# fmt: on

#: The distributions ``bench gpu`` (and the repository code it runs) import directly. Their
#: closure is the bundle; ``tests/bench/test_bundle.py`` checks every module the check really
#: imports against it. ``setuptools``: mmengine imports ``pkg_resources`` without declaring it.
ROOTS: tuple[str, ...] = (
    "torch", "torchvision", "numpy", "scipy", "matplotlib", "opencv-python", "pyyaml", "pillow",
    "mmengine", "mmcv-lite", "mmpose", "mmpretrain", "mmdet", "xtcocotools", "pycocotools", "setuptools",
    "pydantic",  # rspose_tune.spaces validates presets with it
)

#: A requirement name the machine satisfies with another distribution of the same modules.
PROVIDES: dict[str, str] = {
    "opencv-python": "opencv-python-headless",  # both install cv2; the machine has the headless build
}

#: Requirements deliberately not carried, with why. Each is printed by ``--prepare-wheels``.
EXCLUDED: dict[str, str] = {
    "chumpy": "mmpose lists it, but it is only for SMPL body models, fails to build, and is never installed "
              "(setup.sh installs requirements/lock.txt with --no-deps); nothing bench gpu runs imports it",
}

#: Carried although the machine has a copy, with why (the machine's version is not documented, and
#: these need one the project knows).
FORCE_BUNDLE: dict[str, str] = {
    "setuptools": "mmengine imports pkg_resources, which setuptools >= 81 no longer has; the machine's "
                  "setuptools version is not documented, so 80.10.2 (requirements/build.txt) is carried",
}

#: Not in requirements/lock.txt or build.txt: setup.sh step 2 builds it from its sdist.
EXTRA_PINS: dict[str, str] = {"xtcocotools": "1.14.3"}

# fmt: off
#: Top-level module -> distribution, for every distribution of the closure (bundled or the
#: machine's): ``bench gpu`` looks each one up before it imports anything and names all missing
#: ones in one ``error:`` line. Derived from metadata by :func:`check_modules`; a test keeps this
#: literal equal to it (the check runs where that metadata is not, so it cannot derive it there).
CHECK_MODULES: dict[str, str] = {
    "Cython": "cython", "PIL": "pillow", "addict": "addict", "annotated_types": "annotated-types", "click": "click",
    "cv2": "opencv-python-headless", "cython": "cython", "einops": "einops", "functorch": "torch",
    "importlib_metadata": "importlib-metadata", "json_tricks": "json-tricks",
    "markdown": "markdown", "mat4py": "mat4py", "matplotlib": "matplotlib", "mmcv": "mmcv-lite", "mmdet": "mmdet",
    "mmengine": "mmengine", "mmpose": "mmpose", "mmpretrain": "mmpretrain", "modelindex": "model-index",
    "mpl_toolkits": "matplotlib", "munkres": "munkres", "numpy": "numpy", "ordered_set": "ordered-set",
    "packaging": "packaging", "pkg_resources": "setuptools", "platformdirs": "platformdirs",
    "pycocotools": "pycocotools", "pydantic": "pydantic", "pydantic_core": "pydantic-core", "pylab": "matplotlib",
    "pyximport": "cython", "rich": "rich", "scipy": "scipy", "setuptools": "setuptools", "shapely": "shapely",
    "six": "six", "termcolor": "termcolor", "terminaltables": "terminaltables", "torch": "torch", "torchgen": "torch",
    "torchvision": "torchvision", "tqdm": "tqdm", "typing_extensions": "typing-extensions",
    "typing_inspection": "typing-inspection", "xtcocotools": "xtcocotools", "yaml": "pyyaml", "yapf": "yapf",
    "yapf_third_party": "yapf", "zipp": "zipp",
}
# fmt: on


class BundleError(RSPoseTuneError):
    """The closure cannot be built as declared: printed as one ``error:`` line."""


@dataclasses.dataclass
class Entry:
    """One distribution of the closure."""

    name: str  # canonical
    where: str  # "bundle", "machine" or "excluded"
    version: str | None  # the pin (bundle), the documented version (machine; None: not documented)
    why: str = ""  # FORCE_BUNDLE / EXCLUDED reason, or the machine distribution that provides it
    required_by: list[str] = dataclasses.field(default_factory=list)  # "parent (requirement)"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def target_environment(python_full_version: str = MACHINE_PYTHON) -> dict[str, str]:
    """PEP 508 marker values of the GPU machine: CPython on Linux x86_64."""
    major_minor = ".".join(python_full_version.split(".")[:2])
    return {
        "implementation_name": "cpython", "implementation_version": python_full_version, "os_name": "posix",
        "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "",
        "platform_system": "Linux", "platform_version": "", "python_full_version": python_full_version,
        "python_version": major_minor, "sys_platform": "linux",
    }


def locked_versions(repo: Path = REPO) -> dict[str, str]:
    """``name -> version`` from requirements/lock.txt and build.txt (``==`` pins), plus EXTRA_PINS."""
    from packaging.requirements import InvalidRequirement, Requirement

    pins: dict[str, str] = {}
    for path in (repo / "requirements" / "lock.txt", repo / "requirements" / "build.txt"):
        if not path.is_file():
            raise BundleError(f"the bundle's versions come from {path}, which is missing (run from a checkout)")
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                raise BundleError(f"{path}:{number}: not a requirement: {line!r} ({exc})") from None
            specs = list(req.specifier)
            if len(specs) != 1 or specs[0].operator != "==":
                raise BundleError(f"{path}:{number}: {line!r} must pin one version with ==")
            pins[canonical(req.name)] = specs[0].version
    for name, version in EXTRA_PINS.items():
        pins.setdefault(name, version)
    return pins


Metadata = Callable[[str], tuple[str, list[str]]]


def installed_metadata(name: str) -> tuple[str, list[str]]:
    """``(version, Requires-Dist)`` of an installed distribution."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise BundleError(f"{name} is not installed in this environment, so its requirements cannot be read; "
                          "run ./setup.sh (the bundle is prepared from the project's venv)") from None
    return dist.version, list(dist.requires or [])


def derive(
    roots: Iterable[str] = ROOTS,
    *,
    pins: Mapping[str, str] | None = None,
    metadata: Metadata = installed_metadata,
    machine: Mapping[str, str | None] = MACHINE_PACKAGES,
    provides: Mapping[str, str] = PROVIDES,
    excluded: Mapping[str, str] = EXCLUDED,
    force: Mapping[str, str] = FORCE_BUNDLE,
    python_full_version: str = MACHINE_PYTHON,
) -> dict[str, Entry]:
    """The closure of ``roots``: canonical name -> :class:`Entry` (bundled, the machine's or excluded)."""
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    pins = locked_versions() if pins is None else dict(pins)
    env = target_environment(python_full_version)
    machine = {canonical(k): v for k, v in machine.items()}
    provides = {canonical(k): canonical(v) for k, v in provides.items()}
    excluded = {canonical(k): v for k, v in excluded.items()}
    force = {canonical(k): v for k, v in force.items()}
    entries: dict[str, Entry] = {}
    expanded: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[Requirement, str]] = [(Requirement(r), "bench gpu") for r in roots]

    def applies(marker: Marker | None, extras: frozenset[str]) -> bool:
        if marker is None:
            return True
        return any(marker.evaluate({**env, "extra": e}) for e in (extras | {""}))

    while queue:
        req, parent = queue.pop(0)
        name = canonical(req.name)
        edge = f"{parent} ({req})"
        if name in excluded:
            entries.setdefault(name, Entry(name, "excluded", None, excluded[name])).required_by.append(edge)
            continue
        host = provides.get(name, name)
        if host in machine and name not in force:
            version = machine[host]
            if version is not None and req.specifier and not req.specifier.contains(version, prereleases=True):
                raise BundleError(f"the GPU machine's {host} {version} does not satisfy {edge}; carry it "
                                  f"(add {name!r} to FORCE_BUNDLE in {__name__}) or pin another {parent}")
            entry = entries.setdefault(host, Entry(host, "machine", version, "" if host == name else f"provides {name}"))
            entry.required_by.append(edge)
            continue
        why = force.get(name, "")
        pin = pins.get(name)
        if pin is None:
            raise BundleError(f"{name} is needed on the GPU machine ({edge}) and is not on its declared package list, "
                              "but requirements/lock.txt and build.txt pin no version of it")
        if req.specifier and not req.specifier.contains(pin, prereleases=True):
            raise BundleError(f"the pinned {name}=={pin} does not satisfy {edge}")
        entry = entries.setdefault(name, Entry(name, "bundle", pin, why))
        entry.required_by.append(edge)
        extras = frozenset(canonical(e) for e in req.extras)
        if (name, extras) in expanded:
            continue
        expanded.add((name, extras))
        version, requires = metadata(name)
        if version != pin:
            raise BundleError(f"installed {name} is {version} but the lock pins {pin}: the closure must be read from "
                              "the pinned version's metadata (run ./setup.sh)")
        for line in requires:
            child = Requirement(line)
            if applies(child.marker, extras):
                child.marker = None
                queue.append((child, f"{name} {pin}"))
    return entries


def bundled(entries: Mapping[str, Entry]) -> list[Entry]:
    return sorted((e for e in entries.values() if e.where == "bundle"), key=lambda e: e.name)


def top_level_modules(dist_name: str) -> list[str]:
    """The public top-level modules an installed distribution provides (top_level.txt, else RECORD)."""
    dist = md.distribution(dist_name)
    text = dist.read_text("top_level.txt")
    names = set(text.split()) if text else set()
    if not names:
        for f in dist.files or ():
            parts = f.parts
            if not parts or parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] in ("..", "__pycache__"):
                continue
            if len(parts) == 1:
                if parts[0].endswith(".py"):
                    names.add(parts[0][:-3])
                elif parts[0].endswith(".so"):
                    names.add(parts[0].split(".", 1)[0])
            else:
                names.add(parts[0])
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_") and not _is_test_dir(n))


def _is_test_dir(name: str) -> bool:
    """Test folders some distributions install at top level (model-index: ``tests``; yapf: ``yapftests``)."""
    return name in ("test", "tests", "testing") or name.endswith("tests")


def check_modules(entries: Mapping[str, Entry], *, provides: Mapping[str, str] = PROVIDES) -> dict[str, str]:
    """Module -> distribution for every bundled and machine distribution of the closure.

    A machine distribution that stands in for another (:data:`PROVIDES`) is read from the one
    installed here (``opencv-python-headless`` from ``opencv-python``).
    """
    here_for = {canonical(v): canonical(k) for k, v in provides.items()}
    table: dict[str, str] = {}
    for entry in entries.values():
        if entry.where == "excluded":
            continue
        source = here_for.get(entry.name, entry.name)
        for module in top_level_modules(source):
            table[module] = entry.name
    return dict(sorted(table.items()))


# --------------------------------------------------------------------------------------------
# Preparing the bundle (a networked machine with the project's venv)
# --------------------------------------------------------------------------------------------
#: What ``--prepare-wheels`` writes next to the wheels: the derivation, the files and their hashes.
MANIFEST = "bundle.json"
SDIST_DIR = "sdist"
BUNDLE_LIMIT_MIB = 60.0
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
#: The install and check as docs/gpu_check.md's device call runs them (``tools/gpu_install.py`` is stdlib only).
GPU_SITE = "/tmp/rspose_site"
INSTALL_COMMAND = "python3 tools/gpu_install.py gpu_wheels {site}"
CHECK_COMMAND = "PYTHONPATH={site} python3 -m rspose_tune.bench gpu --device {device} --out {out}"


def find_python312(explicit: str | None = None) -> str | None:
    """A working CPython 3.12: ``explicit``, else ``python3.12`` on PATH, else a pyenv 3.12 (newest)."""
    import glob
    import os
    import shutil
    import subprocess

    if explicit:
        candidates = [explicit]
    else:
        candidates = [c for c in [shutil.which("python3.12")] if c]
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        found = glob.glob(os.path.join(root, "versions", "3.12*", "bin", "python3.12"))
        candidates += sorted(found, key=lambda p: [int(x) if x.isdigit() else 0 for x in
                                                   Path(p).parts[-3].replace("-", ".").split(".")], reverse=True)
    probe = "import sys; print(sys.implementation.name == 'cpython' and sys.version_info[:2] == (3, 12))"
    for cand in candidates:
        try:
            proc = subprocess.run([cand, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0 and proc.stdout.strip() == "True":
            return cand
    return None


def _sha256(path: Path) -> str:
    import hashlib

    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _dist_of_file(filename: str) -> tuple[str, str]:
    """``(canonical name, version)`` of a wheel or sdist file name."""
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    if filename.endswith(".whl"):
        name, version, _build, _tags = parse_wheel_filename(filename)
    else:
        name, version = parse_sdist_filename(filename)
    return str(name), str(version)


def _glibc_needed(path: Path) -> str | None:
    """The newest GLIBC symbol version the wheel's shared objects reference (read from their bytes)."""
    import re
    import zipfile

    newest: tuple[int, ...] | None = None
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if ".so" in info.filename:
                for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?", z.read(info)):
                    v = tuple(int(x) for x in m.groups() if x is not None)
                    newest = v if newest is None or v > newest else newest
    return ".".join(map(str, newest)) if newest else None


def _run(cmd: list[str], what: str, **kw) -> None:
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BundleError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def build_xtcocotools_wheel(sdist: Path, dest: Path, python312: str, work: Path) -> Path:
    """Build the cp312 wheel from the sdist with ``python312`` against requirements/build.txt; smoke-import it."""
    import os

    venv = work / "build312"
    _run([python312, "-m", "venv", str(venv)], "creating a python3.12 build venv")
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "-q", "-r", str(REPO / "requirements" / "build.txt")], "installing requirements/build.txt")
    out = work / "wheel"
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(sdist)],
         f"building the xtcocotools wheel from {sdist.name}")
    wheels = list(out.glob("xtcocotools-*.whl"))
    if len(wheels) != 1:
        raise BundleError(f"building {sdist.name} gave {[w.name for w in wheels]}, not one wheel")
    smoke = work / "smoke"
    _run([*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(smoke), str(wheels[0])],
         "installing the built xtcocotools wheel for a smoke test")
    _run([py, "-c", "import xtcocotools._mask, xtcocotools.mask"], "importing the built xtcocotools wheel",
         env={**os.environ, "PYTHONPATH": str(smoke)})
    target = dest / wheels[0].name
    wheels[0].replace(target)
    return target


def prepare(dest: str, *, python312: str | None = None) -> int:
    """Derive the bundle, download it into ``dest`` (replaced whole), build xtcocotools; print what and why."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    t_start = time.perf_counter()
    entries = derive()
    bundle = bundled(entries)
    out = Path(dest).absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BundleError(f"--prepare-wheels {dest}: exists and is not a bundle this command wrote (no {MANIFEST}); "
                          "name a new or empty folder")
    print(f"bundle = Requires-Dist closure of {len(ROOTS)} roots (markers for CPython {MACHINE_PYTHON}, Linux x86_64) "
          f"minus the GPU machine's {len(MACHINE_PACKAGES)} declared packages:")
    for e in bundle:
        note = f"  [{e.why}]" if e.why else ""
        print(f"  carry    {e.name + '==' + str(e.version):30s} <- {', '.join(e.required_by[:3])}{note}")
    for e in sorted((e for e in entries.values() if e.where == "machine"), key=lambda e: e.name):
        ver = e.version or "version not documented"
        print(f"  machine  {e.name} ({ver}{'; ' + e.why if e.why else ''}) <- {', '.join(e.required_by[:3])}")
    for e in sorted((e for e in entries.values() if e.where == "excluded"), key=lambda e: e.name):
        print(f"  EXCLUDED {e.name} <- {', '.join(e.required_by)}: {e.why}")
    python312 = find_python312(python312)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix="rspose_bundle_"))
    try:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q", "--no-deps"]
        plat = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
        for p in PLATFORMS:
            plat += ["--platform", p]
        wheels = [f"{e.name}=={e.version}" for e in bundle if e.name != "xtcocotools"]
        print(f"downloading {len(wheels)} wheels (cp312 manylinux x86_64 or pure Python) ...", flush=True)
        _run([*pip, *plat, "-d", str(stage), *wheels], "pip download of the wheels")
        (stage / SDIST_DIR).mkdir()
        xtc = f"xtcocotools=={entries['xtcocotools'].version}"
        # --no-build-isolation: pip reads the sdist's metadata with this venv's setuptools/Cython/numpy.
        _run([*pip, "--no-binary=:all:", "--no-build-isolation", "-d", str(stage / SDIST_DIR), xtc],
             f"pip download of the {xtc} sdist")
        sdists = list((stage / SDIST_DIR).iterdir())
        prebuilt = None
        if python312 is None:
            print("WARNING: no python3.12 found (PATH, pyenv): xtcocotools ships as its sdist only, and "
                  "tools/gpu_install.py will compile it on the GPU machine (needs a C compiler and Python headers there)",
                  flush=True)
        else:
            t0 = time.perf_counter()
            prebuilt = build_xtcocotools_wheel(sdists[0], stage, python312, work)
            version = subprocess.run([python312, "--version"], capture_output=True, text=True).stdout.strip()
            print(f"built {prebuilt.name} with {python312} ({version}) against requirements/build.txt in "
                  f"{time.perf_counter() - t0:.1f} s; its shared objects need glibc >= {_glibc_needed(prebuilt)}",
                  flush=True)
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        got: dict[str, list[str]] = {}
        for p in files:
            got.setdefault(_dist_of_file(p.name)[0], []).append(p.name)
        missing = [e.name for e in bundle if e.name not in got]
        extra = sorted(set(got) - {e.name for e in bundle})
        if missing or extra:
            raise BundleError(f"the downloaded files do not match the bundle: missing {missing}, unexpected {extra}")
        manifest = {
            "python": "3.12",
            "prepared_with": f"{sys.executable} (Python {sys.version.split()[0]})",
            "files": {str(p.relative_to(stage)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files},
            "xtcocotools_wheel": prebuilt.name if prebuilt else None,
            "xtcocotools_sdist": f"{SDIST_DIR}/{sdists[0].name}",
            "bundle": {e.name: e.as_dict() for e in bundle},
            "machine": {e.name: e.as_dict() for e in entries.values() if e.where == "machine"},
            "excluded": {e.name: e.as_dict() for e in entries.values() if e.where == "excluded"},
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        stage.replace(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"  {p.stat().st_size / 2**20:7.2f} MiB  {p.relative_to(out)}")
    ok = total / 2**20 <= BUNDLE_LIMIT_MIB
    print(f"total {total / 2**20:.2f} MiB in {len(files)} files, prepared in {time.perf_counter() - t_start:.0f} s "
          f"(limit {BUNDLE_LIMIT_MIB:.0f} MiB: {'ok' if ok else 'TOO BIG'})")
    rel = os.path.relpath(out)
    print("\non the GPU machine, from the repository root, with this folder carried as gpu_wheels "
          f"({rel}; git-ignored, so the device call names it in carry):\n"
          f"  {INSTALL_COMMAND.format(site=GPU_SITE)} && {CHECK_COMMAND.format(site=GPU_SITE, device='cuda', out='$OUT')}")
    return 0 if ok else 1
