"""rspose_tune.mmpose_adapter._weights: the ``--weights`` preflight (issue 27). Real ``torch.save`` files
in tmp_path, shaped as the registry-built backbones; the search CLI's start and ``--dry-run``.

Checkpoints for the table presets (rtmpose-m, res50-simcc) are state dicts shaped as the recorded
backbone (``backbone_tensors.json``, which ``test_the_table_is_the_registry_built_backbones`` keeps
equal to the real mmpose/mmdet modules), each tensor a zero expanded to its shape (a file of a few
kilobytes): a real rtmpose-m backbone cannot be saved from the ``meta`` device, and building it with
memory would cost more than this file's other tests together.
The loading end to end (the file's tensors reach the trained model through MMPose's own
``Pretrained`` init, prefix included) uses a real small CSPNeXt (``demo-rtmcc``'s) with real weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from rspose_tune import search
from rspose_tune.mmpose_adapter._weights import (
    TABLE_FILE,
    WeightsError,
    check_weights,
    format_table,
    match_tensors,
    read_checkpoint_tensors,
    record_table,
)
from rspose_tune.spaces import load_preset

ROOT = Path(__file__).resolve().parents[2]
TABLE = json.loads(TABLE_FILE.read_text())
#: The presets the table records: every shipped preset that names weights.
TABLE_PRESETS = ["vit-b", "vit-h", "hrnet-w32-crowdpose", "hrnet-w32-mpii", "hrnet-w48-simcc", "res50-simcc",
                 "rtmpose-m", "rtmpose-t"]


def _shapes(preset: str) -> dict[str, list[int]]:
    return TABLE["backbones"][TABLE["presets"][preset]["backbone"]]["tensors"]


def _save(path: Path, state: dict, **extra) -> Path:
    torch.save({"state_dict": state, **extra} if extra else state, path)
    return path


def _zeros(preset: str, prefix: str = "", drop: float = 0.0) -> dict:
    """The preset's backbone state dict (the first ``drop`` of it left out), every tensor a zero
    expanded to its shape: the file stores one element per tensor (kilobytes, not rtmpose-m's 49 MB)."""
    shapes = list(_shapes(preset).items())
    keep = shapes[int(len(shapes) * drop):]
    return {prefix + k: torch.zeros(()).expand(v) for k, v in keep}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    head = {"head.fc.weight": torch.zeros(()).expand(1000, 768)}
    return {
        # a CSPNeXt classifier checkpoint as RTMDet's release holds it: state_dict + numpy meta
        "cspnext": _save(d / "cspnext.pth", {**_zeros("rtmpose-m", "backbone."), **head},
                         meta={"epoch": torch.tensor(600).numpy(), "hash": "ecb3bbd9"}),
        # RTMPose-t's CSPNeXt-tiny classifier checkpoint (the same release, widen 0.375, deepen 0.167)
        "cspnext_tiny": _save(d / "cspnext_tiny.pth", {**_zeros("rtmpose-t", "backbone."), **head},
                              meta={"epoch": torch.tensor(600).numpy(), "hash": "3a2dd350"}),
        "cspnext_bare": _save(d / "cspnext_bare.pth", _zeros("rtmpose-m")),  # no `backbone.` prefix
        "cspnext_model": _save(d / "cspnext_model.pth", _zeros("rtmpose-m", "model.")),
        "resnet": _save(d / "resnet.pth", _zeros("res50-simcc")),
        "resnet_module": _save(d / "resnet_module.pth", _zeros("res50-simcc", "module.")),  # DataParallel's keys
        "cspnext_quarter_missing": _save(d / "q.pth", _zeros("rtmpose-m", "backbone.", drop=0.25)),
        "cspnext_most_missing": _save(d / "m.pth", _zeros("rtmpose-m", "backbone.", drop=0.6)),
        "text": _write(d / "notes.pth", "these are not weights\n"),
        "evil": _save(d / "evil.pth", {"w": torch.zeros(1)}, hook=os.getcwd),
        "list": _save(d / "list.pth", [torch.zeros(1)]),
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """The files rtmpose-m's data check wants (empty: a start fails at the weights before reading them)."""
    root = tmp_path_factory.mktemp("coco")
    for folder in ("annotations", "train2017", "val2017", "person_detection_results"):
        (root / folder).mkdir()
    for name in ("annotations/person_keypoints_train2017.json", "annotations/person_keypoints_val2017.json",
                 "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"):
        (root / name).write_text("{}")
    return root


def _search(argv, capsys):
    code = search.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _dry(weights: Path, capsys, backbone="rtmpose-m"):
    return _search(["--backbone", backbone, "--num-trials", "48", "--dry-run", "--weights", str(weights)], capsys)


def test_the_classifier_checkpoint_passes_the_dry_run_with_its_prefix(files, capsys):
    code, out, err = _dry(files["cspnext"], capsys)
    assert code == 0 and err == "" and "ASHA levels" in out and "note: --weights" not in out


@pytest.mark.parametrize(("name", "needles"), [
    ("resnet", ["holds 0 of the backbone's 293 tensors", "no key starts with 'backbone.'", "'layer"]),
    ("cspnext_model", ["holds 0 of the backbone's 293 tensors", "its keys start with 'model.'"]),
    ("cspnext_bare", ["no key starts with 'backbone.'", "'stage"]),  # the prefix is honoured
    ("cspnext_most_missing", ["holds 118 of the backbone's 293 tensors"]),
    ("text", ["cannot load it as a PyTorch checkpoint", "neither a zip nor a legacy torch.save file"]),
    ("evil", ["holds the global `posix.getcwd`", "torch.load(weights_only=True) refuses"]),
    ("list", ["holds a list, not a state dict"]),
])
def test_a_wrong_file_is_one_error_line_in_the_dry_run(files, capsys, name, needles):
    code, out, err = _dry(files[name], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: --weights {str(files[name])!r}"), err
    assert "rtmpose-m" in err and "Traceback" not in err and "ASHA" not in out
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("backbone", ["rtmpose-m", "rtmpose-t"])
def test_a_start_refuses_it_before_ray_and_creates_nothing(files, coco, capsys, tmp_path, backbone):
    code, _, err = _search(["--backbone", backbone, "--data-root", str(coco), "--weights", str(files["resnet"]),
                            "--storage", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and f"is not a CSPNeXt checkpoint for preset {backbone!r}" in err
    assert not (tmp_path / "out").exists()


def test_the_two_rtmpose_presets_take_their_own_cspnext_only(files, capsys):
    """Every CSPNeXt-tiny tensor has its name in CSPNeXt-m, none its shape: each preset refuses the other's file."""
    code, out, err = _dry(files["cspnext_tiny"], capsys, backbone="rtmpose-t")
    assert code == 0 and err == "" and "ASHA levels" in out and "note: --weights" not in out
    code, out, err = _dry(files["cspnext"], capsys, backbone="rtmpose-t")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "ASHA" not in out, err
    assert err.startswith(f"error: --weights {str(files['cspnext'])!r} is not a CSPNeXt checkpoint for preset "
                          "'rtmpose-t': it holds 0 of the backbone's 173 tensors"), err
    assert "173 with another shape, e.g. 'stage1.0.bn.bias': [96] here, [48] in the backbone" in err
    assert "rtmpose-t.yaml names" in err
    code, _, err = _dry(files["cspnext_tiny"], capsys, backbone="rtmpose-m")
    assert code == 2 and err.count("\n") == 1 and "holds 0 of the backbone's 293 tensors" in err, err


@pytest.mark.parametrize("backbone", ["rtmpose-m", "rtmpose-t"])
def test_a_data_root_without_the_presets_files_is_one_error_before_the_weights(files, tmp_path, capsys, backbone):
    """A COCO root without the detections file: one ``error:`` line (the missing paths indented under it)."""
    root = tmp_path / "coco"
    for folder in ("annotations", "train2017", "val2017"):
        (root / folder).mkdir(parents=True)
    for name in ("person_keypoints_train2017.json", "person_keypoints_val2017.json"):
        (root / "annotations" / name).write_text("{}")
    code, out, err = _search(["--backbone", backbone, "--data-root", str(root), "--weights", str(files["resnet"]),
                              "--storage", str(tmp_path / "out")], capsys)
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err and out == "", err
    assert [line for line in lines if "error:" in line] == [lines[0]], err
    assert lines[0] == f"error: preset {backbone!r} ({ROOT / 'search_spaces' / f'{backbone}.yaml'}) needs paths that do not exist:"
    assert lines[1:-1] == [f"  data.bbox_file: file '{root}/person_detection_results/"
                           "COCO_val2017_detections_AP_H_56_person.json'"], err
    assert "--data-root PATH" in lines[-1] and not (tmp_path / "out").exists()


def test_the_message_names_where_the_path_came_from(files, capsys, monkeypatch):
    monkeypatch.setenv("RSPOSE_TUNE_WEIGHTS", str(files["resnet"]))
    code, _, err = _search(["--backbone", "rtmpose-m", "--dry-run"], capsys)
    assert code == 2 and err.startswith(f"error: RSPOSE_TUNE_WEIGHTS {str(files['resnet'])!r} is not a CSPNeXt")


def test_a_partial_match_is_a_note(files, capsys):
    code, out, err = _dry(files["cspnext_quarter_missing"], capsys)
    assert code == 0 and err == ""
    assert "note: --weights" in out and "holds 220 of the backbone's 293 tensors" in out and "73 missing" in out


def test_another_preset_reads_its_own_backbone_and_strips_module(files, capsys):
    assert _dry(files["resnet_module"], capsys, backbone="res50-simcc")[0] == 0
    code, _, err = _dry(files["cspnext"], capsys, backbone="res50-simcc")
    assert code == 2 and "is not a ResNet checkpoint for preset 'res50-simcc'" in err and "'backbone.'" in err


def test_the_reader_agrees_with_the_trials_torch_load(files):
    """Shapes as torch.load(weights_only=True) under the trial's allowlist gives them; refused alike."""
    from rspose_tune.training import safe_checkpoint_loading

    for name in ("cspnext", "resnet", "resnet_module"):
        with safe_checkpoint_loading():
            loaded = torch.load(files[name], weights_only=True, mmap=True)
        state = loaded.get("state_dict", loaded)
        assert read_checkpoint_tensors(files[name]) == {k.removeprefix("module."): tuple(v.shape)
                                                        for k, v in state.items()}
    with safe_checkpoint_loading(), pytest.raises(Exception, match="getcwd"):
        torch.load(files["evil"], weights_only=True)


def test_a_download_cut_short_is_one_error_line(files, tmp_path, capsys):
    cut = tmp_path / "cut.pth"
    data = files["cspnext"].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    code, _, err = _dry(cut, capsys)
    assert code == 2 and err.count("\n") == 1 and "a download cut short?" in err


def test_the_readers_allowlist_is_the_trials():
    """The non-torch globals: torch's weights_only allowlist and the numpy ones of SAFE_GLOBALS."""
    from torch._weights_only_unpickler import _get_allowed_globals

    from rspose_tune.mmpose_adapter import _weights
    from rspose_tune.training._checkpoint import SAFE_GLOBALS

    others = {k for k in _get_allowed_globals() if not k.startswith("torch.")}
    assert others == {*_weights._OTHER_ALLOWED, "_codecs.encode"}
    for obj in SAFE_GLOBALS:
        assert _weights._NUMPY_ALLOWED.fullmatch(f"{obj.__module__}.{obj.__qualname__}"), obj
    assert not _weights._NUMPY_ALLOWED.fullmatch("numpy.testing.assert_equal")


def test_the_legacy_format_reads_too(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"a.weight": torch.zeros(3, 2), "b": torch.zeros(())}, path, _use_new_zipfile_serialization=False)
    assert read_checkpoint_tensors(path) == {"a.weight": (3, 2), "b": ()}


def test_the_rule_counts_names_and_shapes_and_allows_resized_positions():
    backbone = {"pos_embed": (1, 192, 8), "w": (4, 3), "b": (4,), "c": (2,)}
    m = match_tensors({"pos_embed": (1, 197, 8), "w": (4, 3), "b": (5,), "x": (1,)}, backbone, frozenset({"pos_embed"}))
    assert (m.matched, m.missing, m.unexpected) == (("pos_embed", "w"), ("c",), ("x",))
    assert m.wrong_shape == (("b", (5,), (4,)),)
    assert m.ok and not m.complete  # 2 of 4: half is enough
    assert not match_tensors({"pos_embed": (1, 197, 9), "w": (4, 3)}, backbone, frozenset({"pos_embed"})).ok


def test_no_weights_or_a_missing_file_is_left_to_the_path_check(tmp_path):
    assert check_weights(load_preset("rtmpose-m", weights="none")) is None
    assert check_weights(load_preset("rtmpose-m", weights=str(tmp_path / "absent.pth"))) is None


def test_the_check_imports_no_torch_and_takes_milliseconds(files):
    """What keeps ``--dry-run`` fast: a fresh process checks the rtmpose-m file without importing torch."""
    import subprocess
    import sys

    code = ("import sys, time; from rspose_tune.spaces import load_preset; "
            "from rspose_tune.mmpose_adapter._weights import check_weights; "
            f"p = load_preset('rtmpose-m', weights={str(files['cspnext'])!r}); t = time.perf_counter(); "
            "check_weights(p); print(time.perf_counter() - t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    assert out[1] == "False" and float(out[0]) < 0.5, out


@pytest.mark.slow
def test_the_table_is_the_registry_built_backbones(mmpose_ready):
    """Regenerate after an mmpose/mmdet/mmpretrain update or a preset change with
    ``python -c "from rspose_tune.mmpose_adapter._weights import TABLE_FILE, format_table, record_table;
    from rspose_tune.spaces import load_preset;
    TABLE_FILE.write_text(format_table(record_table([load_preset(n, weights='none') for n in NAMES])))"``
    (NAMES: :data:`TABLE_PRESETS`)."""
    presets = [load_preset(n, weights="none") for n in TABLE_PRESETS]
    assert format_table(record_table(presets)) == TABLE_FILE.read_text()
    shipped = [p.stem for p in (ROOT / "search_spaces").glob("*.yaml")]
    assert sorted(n for n in shipped if load_preset(n).weights is not None) == sorted(TABLE_PRESETS)


@pytest.mark.slow
def test_a_real_small_cspnext_checkpoint_loads_through_mmposes_pretrained_init(mmpose_ready, tmp_path):
    """A preset outside the table (a small CSPNeXt, ``demo-rtmcc``'s, with ``prefix='backbone.'``):
    the check builds its backbone on the meta device; the file passes, and MMPose's own init loads
    its tensors into the model a trial builds; another backbone's file fails."""
    from mmengine.config import Config
    from mmpose.registry import MODELS

    from rspose_tune.mmpose_adapter.configs import build_config

    cfg_file = tmp_path / "cspnext_pretrained.py"
    cfg_file.write_text(f"_base_ = [{str(ROOT / 'search_spaces/configs/demo_tiny_rtmcc.py')!r}]\n"
                        "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='x', "
                        "prefix='backbone.')))\n")
    text = (ROOT / "search_spaces/demo-rtmcc.yaml").read_text()
    yaml = tmp_path / "presets" / "small-cspnext.yaml"
    yaml.parent.mkdir()
    yaml.write_text(text.replace("base_config: configs/demo_tiny_rtmcc.py", f"base_config: {cfg_file}"))
    backbone_cfg = Config.fromfile(str(cfg_file)).model.backbone
    backbone_cfg.pop("init_cfg")
    real = MODELS.build(backbone_cfg)
    torch.nn.init.normal_(real.stem[0].conv.weight)
    weights = _save(tmp_path / "small.pth", {f"backbone.{k}": v for k, v in real.state_dict().items()})

    preset = load_preset("small-cspnext", search_dir=yaml.parent, weights=str(weights))
    assert check_weights(preset, str(weights)) is None
    model = MODELS.build(build_config(preset, None).model)
    model.init_weights()
    assert torch.equal(model.backbone.stem[0].conv.weight, real.stem[0].conv.weight)

    wrong = _save(tmp_path / "wrong.pth", {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(WeightsError, match=r"holds 0 of the backbone's \d+ tensors with the right name and shape "
                                           r"under the prefix 'backbone.'"):
        check_weights(load_preset("small-cspnext", search_dir=yaml.parent, weights=str(wrong)), str(wrong))


def test_a_resume_checks_the_runs_weights_again_before_anything_is_written(files, coco, capsys, tmp_path):
    """--resume takes its weights from the run spec: a file changed since the start is refused."""
    import shutil

    from rspose_tune.runspec import write_spec

    weights = tmp_path / "cspnext-m.pth"
    shutil.copyfile(files["cspnext"], weights)
    storage = tmp_path / "runs"
    argv = ["--backbone", "rtmpose-m", "--data-root", str(coco), "--weights", str(weights), "--storage", str(storage),
            "--name", "r"]
    write_spec(search.plan(search.parse_options(argv), argv).spec)  # what a start writes before Ray's state
    capsys.readouterr()
    before = sorted(p.name for p in (storage / "r").iterdir())
    shutil.copyfile(files["resnet"], weights)  # replaced since the start
    code, out, err = _search(["--resume", "--storage", str(storage), "--name", "r"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: weights {str(weights)!r} (the run's, {storage / 'r' / 'run_spec.yaml'})"), err
    assert "is not a CSPNeXt checkpoint for preset 'rtmpose-m'" in err
    assert sorted(p.name for p in (storage / "r").iterdir()) == before  # nothing written


@pytest.mark.parametrize(("backbone", "partial", "hooks"), [
    ("rtmpose-m", "cspnext_quarter_missing", {"EMAHook", "CalibrationEMAHook", "mmdet.PipelineSwitchHook"}),
    ("rtmpose-t", "cspnext_tiny", {"mmdet.PipelineSwitchHook"}),  # MMPose's tiny recipe has no EMA
])
def test_export_checks_its_weights_and_writes_nothing(files, coco, capsys, tmp_path, backbone, partial, hooks):
    from rspose_tune import export
    from tests.report.conftest import KNOWN_GOOD, trial, write_run

    root = tmp_path / "results"
    write_run(root, "rtm", [trial("t1", KNOWN_GOOD, [0.1, 0.2], "completed")], backbone=backbone, max_epochs=2)
    out = tmp_path / "rtm.py"
    argv = [str(root), "--backbone", backbone, "--out", str(out), "--data-root", str(coco)]
    code = export.main([*argv, "--weights", str(files["resnet"])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: --weights {str(files['resnet'])!r} is not a CSPNeXt checkpoint"), err
    assert not out.exists() and not (root / "rtm" / "export").exists()
    assert export.main([*argv, "--weights", str(files[partial])]) == 0
    assert ("note: --weights" in capsys.readouterr().err) == (partial == "cspnext_quarter_missing") and out.is_file()
    from mmengine.config import Config

    exported = {h["type"] for h in Config.fromfile(str(out), import_custom_modules=False).custom_hooks}
    assert exported == hooks  # the recipe, exported
