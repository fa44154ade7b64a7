"""rspose_tune.mmpose_adapter._mmcv_shim: under mmcv-lite the narrow ``mmcv.ops`` shim makes mmpose.models
importable and fails loudly on use; with compiled ops it installs nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import _run


def test_shim_active_without_compiled_ops_and_fails_loudly_on_use():
    result = _run(
        """
        import json
        from rspose_tune.mmpose_adapter import install_mmcv_ops_shim, has_compiled_mmcv_ops, MissingMMCVOpsError
        assert not has_compiled_mmcv_ops()
        active = install_mmcv_ops_shim()
        import mmpose.models  # would raise ModuleNotFoundError: mmcv._ext without the shim
        from mmcv.ops import MultiScaleDeformableAttention
        try:
            MultiScaleDeformableAttention(embed_dims=256)
            msg = None
        except MissingMMCVOpsError as exc:
            msg = str(exc)
        import mmcv.ops
        print(json.dumps([active, msg, sorted(n for n in dir(mmcv.ops) if not n.startswith('_'))]))
        """
    )
    active, msg, names = json.loads(result)
    assert active is True
    assert "full mmcv" in msg and "MultiScaleDeformableAttention" in msg
    assert names == ["MultiScaleDeformableAttention"]  # narrow: nothing else is faked


def test_mmpose_models_import_fails_without_shim():
    """The shim is needed at all: without it, mmpose.models does not import under mmcv-lite."""
    out = subprocess.run(
        [sys.executable, "-c", "import mmpose.models"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0 and "mmcv._ext" in out.stderr


def test_shim_inert_when_compiled_ops_exist(tmp_path):
    """With a (stand-in) compiled ``mmcv._ext`` on mmcv's path, the shim installs nothing."""
    fake = tmp_path / "fakeext"
    fake.mkdir()
    (fake / "_ext.py").write_text("# stands in for the compiled extension\n")
    result = _run(
        f"""
        import json, sys
        import mmcv
        mmcv.__path__.append({str(fake)!r})
        from rspose_tune.mmpose_adapter import install_mmcv_ops_shim, has_compiled_mmcv_ops
        print(json.dumps([has_compiled_mmcv_ops(), install_mmcv_ops_shim(), 'mmcv.ops' in sys.modules]))
        """
    )
    assert json.loads(result) == [True, False, False]
