"""The packages' ``__init__`` modules: importing rspose_tune (and rspose_tune.mmpose_adapter, trainables,
search_spaces) loads nothing heavy, and the packages import from the install, not from ``sys.path``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import _run

HEAVY = ("torch", "mmcv", "mmengine", "mmpose", "mmpretrain", "mmdet", "ray", "optuna", "pyarrow")


def test_import_rspose_tune_has_no_side_effects():
    loaded = json.loads(
        _run(
            f"""
            import json, sys
            before = set(sys.modules)
            import rspose_tune, rspose_tune.mmpose_adapter, trainables, search_spaces
            new = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY!r})
            print(json.dumps([new, 'mmcv.ops' in sys.modules]))
            """
        )
    )
    assert loaded == [[], False]


def test_trainables_and_package_import_from_install_not_sys_path(tmp_path):
    # Run from an unrelated directory: works only if the packages are installed.
    out = subprocess.run(
        [sys.executable, "-c", "import rspose_tune, trainables, search_spaces; print(rspose_tune.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )
    assert Path(out.stdout.strip()).name == "__init__.py"
