"""Tests for rspose_tune.spaces: shipped presets, every validation rule, overrides, user presets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rspose_tune import demo_data
from rspose_tune.spaces import (
    ENV_DATA_ROOT,
    ENV_WEIGHTS,
    PARAM_NAMES,
    MissingDataError,
    ParamSpec,
    SearchSpaceError,
    list_presets,
    load_preset,
)

SHIPPED = ["demo", "demo-rtmcc", "demo-simcc", "hrnet-w32-crowdpose", "hrnet-w32-mpii", "hrnet-w48-simcc", "res50-simcc", "rtmpose-m", "rtmpose-t", "vit-b", "vit-h"]

# RSPose paper, Table E.8 (COCO): (delta_rank, coeff_rank, delta_sort, coeff_sort, delta_inst, coeff_inst).
TABLE_E8 = {
    "vit-b": (0.4, 1.0, 1.5, 2.0, 3.0, 0.25),
    "vit-h": (0.4, 1.0, 1.5, 2.0, 3.0, 1.5),
    "res50-simcc": (0.4, 1.0, 0.2, 0.25, None, 0.0),
    "hrnet-w48-simcc": (0.3, 1.0, 1.2, 0.5, 0.5, 0.1),
    "hrnet-w32-crowdpose": (0.4, 1.0, 1.5, 2.0, 3.0, 0.25),  # no E.8 row: ViT-B values
    "hrnet-w32-mpii": (0.4, 1.0, 1.5, 2.0, 3.0, 0.25),
    "rtmpose-m": (0.4, 1.0, 0.2, 0.25, None, 0.0),  # no RTMPose row: the SimCC ResNet-50 row
    "rtmpose-t": (0.4, 1.0, 0.2, 0.25, None, 0.0),
}

VALID = textwrap.dedent(
    """\
    description: a test preset
    base_config: mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py
    dataset: coco-format
    metric: coco/AP
    mode: max
    params:
      delta_rank: {low: 0.1, high: 1.0, log: false}
      coeff_rank: {fixed: 1.0}
      delta_sort: {low: 0.1, high: 3.0, log: true}
      coeff_sort: {low: 0.1, high: 4.0, log: true, allow_off: true}
      delta_inst: {low: 0.25, high: 5.0, log: true}
      coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}
    known_good:
      - {delta_rank: 0.4, coeff_rank: 1.0, delta_sort: 1.5, coeff_sort: 2.0, delta_inst: 3.0, coeff_inst: 0.25}
    budget: {max_epochs: 20, grace_epochs: 2, reduction_factor: 3, val_interval: 1}
    resources: {gpus: 0, cpus: 1}
    data:
      root: mydata
      train_ann: annotations/train.json
      val_ann: annotations/val.json
      train_img: images/train/
      val_img: images/val/
    weights: null
    """
)


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(old: str, new: str, text: str = VALID) -> str:
    if old not in text:
        raise AssertionError(f"test bug: {old!r} not in the template")
    return text.replace(old, new, 1)


def mmpose_config_dir() -> Path:
    import mmpose  # plain import: needs no mmcv ops

    return Path(mmpose.__file__).parent / ".mim" / "configs"


# --------------------------------------------------------------------------------------------
# Shipped presets
# --------------------------------------------------------------------------------------------


def test_list_presets_ships_all():
    assert list_presets() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_loads(name):
    preset = load_preset(name, env={})
    assert preset.name == name
    assert list(preset.params) == list(PARAM_NAMES)
    assert preset.source.name == f"{name}.yaml" and preset.source.is_file()
    assert preset.data.root.is_absolute()
    assert preset.known_good, "every shipped preset names a known-good setting"
    assert preset.mode == "max"
    for spec in preset.params.values():
        assert isinstance(spec.describe(), str) and spec.describe()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_base_config_exists(name):
    preset = load_preset(name, env={})
    ref = preset.base_config
    if ref.startswith("mmpose::"):
        path = mmpose_config_dir() / ref[len("mmpose::"):]
    else:
        path = preset.source.parent / ref
    assert path.is_file(), path


@pytest.mark.parametrize("name", sorted(TABLE_E8))
def test_known_good_is_table_e8(name):
    preset = load_preset(name, env={})
    six = PARAM_NAMES[:6]  # Table E.8's columns; the paper's positives are every label > 0
    assert tuple(preset.known_good[0][p] for p in six) == TABLE_E8[name]
    assert preset.known_good[0]["pos_thr"] == 0.0 and preset.params["pos_thr"].describe() == "fixed 0"


@pytest.mark.parametrize(
    ("name", "gpus", "metric", "dataset", "max_epochs"),
    [
        ("vit-b", 1, "coco/AP", "coco", 210),
        ("vit-h", 2, "coco/AP", "coco", 210),
        ("res50-simcc", 1, "coco/AP", "coco", 210),
        ("hrnet-w48-simcc", 1, "coco/AP", "coco", 210),
        ("hrnet-w32-crowdpose", 1, "crowdpose/AP", "crowdpose", 210),
        ("hrnet-w32-mpii", 1, "PCK", "mpii", 210),
        ("rtmpose-m", 1, "coco/AP", "coco", 420),
        ("rtmpose-t", 1, "coco/AP", "coco", 420),
        ("demo", 0, "coco/AP", "coco-format", 10),
        ("demo-rtmcc", 0, "coco/AP", "coco-format", 10),
    ],
)
def test_shipped_preset_facts(name, gpus, metric, dataset, max_epochs):
    preset = load_preset(name, env={})
    assert preset.resources.gpus == gpus
    assert (preset.metric, preset.dataset, preset.budget.max_epochs) == (metric, dataset, max_epochs)


def test_demo_preset_matches_generator_layout():
    preset = load_preset("demo", env={})
    data = preset.data
    assert data.generated == "demo"
    assert (data.train_ann, data.val_ann, data.train_img, data.val_img) == (
        demo_data.TRAIN_ANN, demo_data.VAL_ANN, demo_data.TRAIN_IMG, demo_data.VAL_IMG,
    )
    assert data.root == demo_data.default_demo_root()
    assert preset.weights is None
    assert preset.resources.cpus == 1 and preset.budget.val_interval == 1


def test_simcc_hrnet_w48_config_parses(mmpose_base):
    from mmengine.config import Config

    preset = load_preset("hrnet-w48-simcc", env={})
    cfg = Config.fromfile(str(preset.source.parent / preset.base_config))
    assert cfg.model.backbone.type == "HRNet"
    assert cfg.model.head.type == "SimCCHead" and cfg.model.head.in_channels == 48
    assert cfg.model.head.in_featuremap_size == (48, 64)
    assert cfg.model.head.decoder.type == "SimCCLabel"
    assert [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "GenerateTarget"][0].encoder.type == (
        "SimCCLabel"
    )
    assert cfg.train_cfg.max_epochs == 210


@pytest.mark.slow
def test_simcc_hrnet_w48_builds_and_runs(mmpose_base):
    import torch
    from mmengine.config import Config
    from mmpose.registry import MODELS

    preset = load_preset("hrnet-w48-simcc", env={})
    cfg = Config.fromfile(str(preset.source.parent / preset.base_config))
    cfg.model.backbone.pop("init_cfg")  # never download
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        pred_x, pred_y = model.head(model.extract_feat(torch.zeros(1, 3, 256, 192)))
    assert pred_x.shape == (1, 17, 384) and pred_y.shape == (1, 17, 512)


# --------------------------------------------------------------------------------------------
# ParamSpec
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (ParamSpec("delta_rank", low=0.1, high=1.0), "[0.1, 1]"),
        (ParamSpec("coeff_inst", low=0.05, high=3.0, log=True, allow_off=True), "[0.05, 3] log, or off"),
        (ParamSpec("coeff_rank", fixed=1.0), "fixed 1"),
        (ParamSpec("coeff_inst", fixed=0.0), "off"),
        (ParamSpec("delta_inst", fixed=None), "off"),
    ],
)
def test_param_spec_describe(spec, text):
    assert spec.describe() == text


def test_param_spec_contains():
    coeff = ParamSpec("coeff_inst", low=0.05, high=3.0, log=True, allow_off=True)
    assert coeff.contains(0.05) and coeff.contains(3.0) and coeff.contains(0.0) and coeff.contains(None)
    assert not coeff.contains(3.1) and not coeff.contains(0.01)
    strict = ParamSpec("coeff_sort", low=0.1, high=4.0)
    assert not strict.contains(0.0) and not strict.can_be_off
    delta = ParamSpec("delta_rank", low=0.1, high=1.0)
    assert not delta.contains(None) and not delta.can_be_off


# --------------------------------------------------------------------------------------------
# Validation: every rule raises one clear SearchSpaceError naming the file and the key
# --------------------------------------------------------------------------------------------

BAD = [
    pytest.param(edit("mode: max", "mode: max\nsampler: tpe"), r"top level.*unknown key\(s\) \['sampler'\].*valid keys: \['description', 'base_config'", id="unknown-top-key"),
    pytest.param(edit("  coeff_inst:", "  coeff_extra: {fixed: 1.0}\n  coeff_inst:"), r"`params` has unknown key\(s\) \['coeff_extra'\]; valid keys: \['delta_rank'", id="unknown-param"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 0.1, high: 1.0, lg: true}"), r"`params.delta_rank` has unknown key\(s\) \['lg'\]; valid keys: \['low', 'high', 'log', 'allow_off'\]", id="unknown-range-key"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 2.0, high: 1.0}"), r"`params.delta_rank` must have low < high \(for a single value write \{fixed: 2\}\), got low=2, high=1", id="low-gt-high"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 0.5, high: 0.5}"), r"`params.delta_rank` must have low < high \(for a single value write \{fixed: 0.5\}\), got low=0.5, high=0.5", id="low-eq-high"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: -0.1, high: 1.0}"), r"`params.delta_rank.low` must be >= 0, got -0.1", id="negative-delta"),
    pytest.param(edit("coeff_rank: {fixed: 1.0}", "coeff_rank: {fixed: -1.0}"), r"`params.coeff_rank.fixed` must be >= 0, got -1", id="negative-coeff"),
    pytest.param(edit("{low: 0.05, high: 3.0, log: true, allow_off: true}", "{low: 0.0, high: 3.0, log: true}"), r"`params.coeff_inst.low` must be > 0 with log: true, got 0", id="log-low-zero"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 0.0, high: 1.0}"), r"`params.delta_rank.low` must be > 0 for a delta", id="delta-low-zero"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 0.1, high: 1.0, allow_off: true}"), r"`params.delta_rank.allow_off` only applies to coefficients.*`params.coeff_rank`", id="allow-off-on-delta"),
    pytest.param(edit("coeff_rank: {fixed: 1.0}", "coeff_rank: {fixed: null}"), r"`params.coeff_rank.fixed` must be a number \(0 switches the component off\)", id="fixed-null-coeff"),
    pytest.param(edit("coeff_rank: {fixed: 1.0}", "coeff_rank: {fixed: 1.0, allow_off: true}"), r"`params.coeff_rank.allow_off` only applies to a range", id="allow-off-on-fixed"),
    pytest.param(edit("delta_inst: {low: 0.25, high: 5.0, log: true}", "delta_inst: {fixed: null}"), r"`params.delta_inst` is \{fixed: null\} but `coeff_inst` can be non-zero", id="null-delta-live-coeff"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}", "coeff_inst: {fixed: 0}"), r"`params.delta_inst` must be \{fixed: null\}: the inst component is always off", id="off-component-delta"),
    pytest.param(edit("coeff_rank: {fixed: 1.0}", "coeff_rank: {fixed: 0.0}").replace("delta_rank: {low: 0.1, high: 1.0, log: false}", "delta_rank: {fixed: null}"), r"`params.coeff_sort` and `params.coeff_rank` can both be off", id="rank-and-sort-off"),
    pytest.param(edit("  delta_rank: {low: 0.1, high: 1.0, log: false}\n", ""), r"`params` is missing required key\(s\) \['delta_rank'\]", id="missing-param"),
    pytest.param(edit("delta_rank: {low: 0.1, high: 1.0, log: false}", "delta_rank: 0.4"), r"`params.delta_rank` must be a mapping \{low, high, log\} or \{fixed\}, got 0.4", id="param-not-mapping"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 0.1, high: 1.0, log: yes please}"), r"`params.delta_rank.log` must be true or false, got 'yes please'", id="log-not-bool"),
    pytest.param(edit("{low: 0.1, high: 1.0, log: false}", "{low: 1e-3, high: 1.0}"), r"`params.delta_rank.low` must be a number, got '1e-3' \(str\) \(YAML reads 1e-3 as a string", id="yaml-1e-3-string"),
    pytest.param(edit("budget: {max_epochs: 20,", "budget: {max_epochs: ten,"), r"`budget.max_epochs` must be an integer, got 'ten' \(str\)", id="wrong-type"),
    pytest.param(edit("budget: {max_epochs: 20,", "budget: {max_epochs: 20.5,"), r"`budget.max_epochs` must be an integer, got 20.5 \(float\)", id="float-epochs"),
    pytest.param(edit("budget: {max_epochs: 20, grace_epochs: 2, reduction_factor: 3, val_interval: 1}", "budget: {max_epochs: 20, grace_epochs: 2, val_interval: 1}"), r"`budget` is missing required key\(s\) \['reduction_factor'\]", id="missing-budget-key"),
    pytest.param(edit("reduction_factor: 3", "reduction_factor: 1"), r"`budget.reduction_factor` must be >= 2, got 1", id="reduction-factor"),
    pytest.param(edit("grace_epochs: 2", "grace_epochs: 30"), r"`budget.grace_epochs` must be <= max_epochs \(20\), got 30", id="grace-gt-max"),
    pytest.param(edit("grace_epochs: 2, reduction_factor: 3, val_interval: 1", "grace_epochs: 3, reduction_factor: 3, val_interval: 2"), r"`budget.grace_epochs` must be a multiple of val_interval \(2\)", id="grace-not-multiple"),
    pytest.param(edit("resources: {gpus: 0, cpus: 1}", "resources: {gpus: 0, cpus: 0}"), r"`resources.cpus` must be > 0, got 0", id="cpus-zero"),
    pytest.param(edit("resources: {gpus: 0, cpus: 1}", "resources: {gpus: -1, cpus: 1}"), r"`resources.gpus` must be >= 0, got -1", id="gpus-negative"),
    pytest.param(edit("dataset: coco-format", "dataset: cocoo"), r"`dataset` must be one of \['coco', 'crowdpose', 'mpii', 'coco-format'\], got 'cocoo'", id="unknown-dataset"),
    pytest.param(edit("metric: coco/AP", "metric: PCK"), r"`metric` for dataset 'coco-format' must be a metric that starts with 'coco/'", id="metric-dataset-mismatch"),
    pytest.param(edit("mode: max", "mode: maximum"), r"`mode` must be one of \['max', 'min'\], got 'maximum'", id="bad-mode"),
    pytest.param(edit("  val_img: images/val/\n", ""), r"`data` is missing required key\(s\) \['val_img'\]", id="missing-data-key"),
    pytest.param(edit("  val_img: images/val/", "  val_img: images/val/\n  imgs: x/"), r"`data` has unknown key\(s\) \['imgs'\]; valid keys: \['root', 'train_ann'", id="unknown-data-key"),
    pytest.param(edit("  val_img: images/val/", "  val_img: images/val/\n  generated: synth"), r"`data.generated` must be one of \['demo'\], got 'synth'", id="bad-generator"),
    pytest.param(edit("annotations/train.json", "annotations/train.txt"), r"`data.train_ann` must be a COCO-format .json annotation file", id="ann-not-json"),
    pytest.param(edit("dataset: coco-format\nmetric: coco/AP", "dataset: mpii\nmetric: PCK"), r"`data.headbox_file` is required for dataset 'mpii'", id="mpii-needs-headbox"),
    pytest.param(edit("  val_img: images/val/", "  val_img: images/val/\n  headbox_file: a.mat"), r"`data.headbox_file` only applies to dataset 'mpii'", id="headbox-not-mpii"),
    pytest.param(edit("weights: null\n", ""), r"top level is missing required key\(s\) \['weights'\]", id="missing-weights"),
    pytest.param(edit("weights: null", "weights: 3"), r"`weights` must be a non-empty path string, got 3 \(int\)", id="weights-not-path"),
    pytest.param(edit("coeff_inst: 0.25}", "coeff_inst: 9.0}"), r"`known_good\[0\].coeff_inst` is 9.0, outside its search space '\[0.05, 3\] log, or off'", id="known-good-outside"),
    pytest.param(edit("delta_inst: 3.0, coeff_inst: 0.25}", "delta_inst: 3.0, coeff_inst: null}"), r"`known_good\[0\].delta_inst` must be null because `coeff_inst` is off", id="known-good-delta-of-off"),
    pytest.param(edit("delta_inst: 3.0, coeff_inst: 0.25}", "delta_inst: null, coeff_inst: 0.25}"), r"`known_good\[0\].delta_inst` must be a number because `coeff_inst` is 0.25", id="known-good-missing-delta"),
    pytest.param(edit("coeff_sort: 2.0,", ""), r"`known_good\[0\]` is missing required key\(s\) \['coeff_sort'\]", id="known-good-missing-key"),
    pytest.param(edit("coeff_rank: 1.0, delta_sort", "coeff_rank: 2.0, delta_sort"), r"`known_good\[0\].coeff_rank` is 2.0, outside its search space 'fixed 1'", id="known-good-fixed-mismatch"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good", "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {fixed: 1.0}\nknown_good"), r"`params.pos_thr.fixed` must be < 1 \(labels peak at 1, so nothing would be a positive\), got 1", id="pos-thr-fixed-1"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good", "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {low: 0.1, high: 1.5}\nknown_good"), r"`params.pos_thr.high` must be < 1 \(labels peak at 1", id="pos-thr-high-above-1"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good", "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {fixed: -0.1}\nknown_good"), r"`params.pos_thr.fixed` must be >= 0, got -0.1", id="pos-thr-negative"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good", "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {fixed: null}\nknown_good"), r"`params.pos_thr.fixed` must be a number \(null is only for an off delta\)", id="pos-thr-null"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good", "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {low: 0.001, high: 0.5, log: true, allow_off: true}\nknown_good"), r"`params.pos_thr.allow_off` only applies to coefficients.*`pos_thr` belongs to no component", id="pos-thr-allow-off"),
    pytest.param(edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good", "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {low: 0.001, high: 0.5, log: true}\nknown_good"), r"`known_good\[0\].pos_thr` is 0.0 \(its default: the entry does not name it\), outside its search space '\[0.001, 0.5\] log'", id="known-good-pos-thr-default-outside"),
    pytest.param(edit("known_good:\n", "known_good: {}\nx:\n"), r"unknown key\(s\) \['x'\]", id="unknown-after-known-good"),
    pytest.param(edit("mode: max", "mode: max\nmode: min"), r"not valid YAML: .*duplicate key 'mode'", id="duplicate-key"),
    pytest.param("params: [unclosed", r"not valid YAML", id="invalid-yaml"),
    pytest.param("- a list", r"top level must be a mapping, got \['a list'\]", id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "match"), BAD)
def test_invalid_file_raises_clear_error(tmp_path, text, match):
    path = write(tmp_path, text, name="broken.yaml")
    with pytest.raises(SearchSpaceError, match=match) as info:
        load_preset(path, env={})
    assert "broken.yaml" in str(info.value)


def test_template_itself_is_valid(tmp_path):
    preset = load_preset(write(tmp_path, VALID), env={})
    assert preset.name == "mine" and preset.description == "a test preset"
    # pos_thr is not named: fixed at its default (0, every non-zero label), also in known_good
    assert preset.params["pos_thr"].describe() == "fixed 0" and preset.known_good[0]["pos_thr"] == 0.0
    assert list(preset.params) == list(PARAM_NAMES) and list(preset.known_good[0]) == list(PARAM_NAMES)


def test_pos_thr_searched_with_a_known_good_value(tmp_path):
    text = edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good",
                "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {low: 1.0e-4, high: 0.7, log: true}\nknown_good")
    text = edit("coeff_inst: 0.25}", "coeff_inst: 0.25, pos_thr: 0.011}", text)
    preset = load_preset(write(tmp_path, text), env={})
    spec = preset.params["pos_thr"]
    assert (spec.low, spec.high, spec.log, spec.is_coefficient) == (1e-4, 0.7, True, False)
    assert preset.known_good[0]["pos_thr"] == 0.011
    assert preset.known_good[0]["coeff_inst"] == 0.25


def test_pos_thr_range_from_zero_contains_its_default(tmp_path):
    """A threshold range starting at 0 contains 0 (the default of a known-good entry that omits it);
    only a coefficient's 0 means "off"."""
    text = edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\nknown_good",
                "coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}\n  pos_thr: {low: 0.0, high: 0.5}\nknown_good")
    preset = load_preset(write(tmp_path, text), env={})
    spec = preset.params["pos_thr"]
    assert spec.contains(0.0) and spec.contains(0.5) and not spec.contains(0.6) and not spec.contains(None)
    assert preset.known_good[0]["pos_thr"] == 0.0


def test_unknown_preset_lists_valid_names():
    with pytest.raises(SearchSpaceError, match=r"`--backbone` must be one of \['demo', .*'vit-h'\], got 'vith' \(did you mean 'vit-h'\?\)"):
        load_preset("vith")


def test_missing_file_path():
    with pytest.raises(SearchSpaceError, match=r"search-space file '.*nope.yaml' does not exist"):
        load_preset("somewhere/nope.yaml")


def test_search_dir_must_exist(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"search_dir '.*missing' is not a folder"):
        list_presets(tmp_path / "missing")


def test_known_good_off_component_normalised(tmp_path):
    text = edit("delta_inst: 3.0, coeff_inst: 0.25}", "delta_inst: null, coeff_inst: 0}")
    preset = load_preset(write(tmp_path, text), env={})
    assert preset.known_good[0]["delta_inst"] is None and preset.known_good[0]["coeff_inst"] == 0.0


def test_fixed_off_component(tmp_path):
    text = edit("delta_inst: {low: 0.25, high: 5.0, log: true}", "delta_inst: {fixed: null}")
    text = edit("coeff_inst: {low: 0.05, high: 3.0, log: true, allow_off: true}", "coeff_inst: {fixed: 0}", text)
    text = edit("delta_inst: 3.0, coeff_inst: 0.25}", "delta_inst: null, coeff_inst: null}", text)
    preset = load_preset(write(tmp_path, text), env={})
    assert preset.params["coeff_inst"].describe() == "off" and preset.params["coeff_inst"].can_be_off


# --------------------------------------------------------------------------------------------
# Overrides, user presets, path checks
# --------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_cwd(tmp_path, monkeypatch):
    path = write(tmp_path, VALID)
    monkeypatch.chdir(tmp_path)
    preset = load_preset(path, env={})
    assert preset.data.root == tmp_path / "mydata"
    assert preset.data.paths()["data.train_ann"] == tmp_path / "mydata" / "annotations/train.json"


def test_env_overrides(tmp_path):
    env = {ENV_DATA_ROOT: str(tmp_path / "envdata"), ENV_WEIGHTS: str(tmp_path / "w.pth")}
    preset = load_preset("vit-b", env=env)
    assert preset.data.root == tmp_path / "envdata"
    assert preset.weights == tmp_path / "w.pth"
    assert preset.data.train_ann == "annotations/person_keypoints_train2017.json"


def test_cli_overrides_beat_env(tmp_path):
    env = {ENV_DATA_ROOT: str(tmp_path / "envdata"), ENV_WEIGHTS: str(tmp_path / "env.pth")}
    preset = load_preset("vit-b", env=env, data_root=tmp_path / "cli", weights=str(tmp_path / "cli.pth"))
    assert preset.data.root == tmp_path / "cli" and preset.weights == tmp_path / "cli.pth"


@pytest.mark.parametrize("word", ["none", "None", "NULL"])
def test_weights_none_override(word):
    assert load_preset("vit-b", weights=word, env={}).weights is None
    assert load_preset("vit-b", env={ENV_WEIGHTS: word}).weights is None


def test_empty_env_is_ignored():
    preset = load_preset("vit-b", env={ENV_DATA_ROOT: "", ENV_WEIGHTS: ""})
    assert preset.data.root.name == "coco" and preset.weights is not None


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    preset = load_preset("demo", env={})
    assert preset.data.root == tmp_path / ".cache/rspose_tune/demo_data"


def test_user_preset_in_search_dir(tmp_path):
    write(tmp_path, VALID, name="my-data.yaml")
    write(tmp_path, "not yaml: [", name="notes.txt")
    assert list_presets(tmp_path) == sorted([*SHIPPED, "my-data"])  # added to the built-in presets
    preset = load_preset("my-data", search_dir=tmp_path, env={})
    assert preset.name == "my-data" and preset.source == tmp_path / "my-data.yaml"
    # issue 25: --search-dir replaced the built-in presets, so `--search-dir D --backbone demo` was refused
    assert load_preset("vit-b", search_dir=tmp_path, env={}).source == load_preset("vit-b", env={}).source
    with pytest.raises(SearchSpaceError, match=r"must be one of \[.*'my-data'.*\], got 'my-dat'"):
        load_preset("my-dat", search_dir=tmp_path)


def test_a_user_preset_named_like_a_built_in_one_is_refused_naming_both(tmp_path):
    write(tmp_path, VALID, name="vit-b.yaml")
    built_in = load_preset("vit-b", env={}).source
    with pytest.raises(SearchSpaceError) as info:
        load_preset("vit-b", search_dir=tmp_path, env={})
    assert str(info.value) == (f"`--backbone` 'vit-b' names both the built-in preset {str(built_in)!r} and "
                               f"{str(tmp_path / 'vit-b.yaml')!r} of --search-dir: rename the file in --search-dir, "
                               f"or pass its path (--backbone {str(tmp_path / 'vit-b.yaml')!r})")
    assert load_preset(str(tmp_path / "vit-b.yaml"), env={}).source == tmp_path / "vit-b.yaml"  # its path: fine


def test_validate_paths_lists_every_missing_path(tmp_path):
    preset = load_preset("vit-b", data_root=tmp_path / "nococo", weights=tmp_path / "none.pth", env={})
    with pytest.raises(MissingDataError) as info:
        preset.validate_paths()
    text = str(info.value)
    for key in ("data.root", "data.train_ann", "data.val_ann", "data.train_img", "data.val_img", "data.bbox_file", "weights"):
        assert f"  {key}:" in text
    assert "vit-b.yaml" in text and "--data-root" in text and ENV_WEIGHTS in text and "never downloads" in text


def test_validate_paths_passes_with_bring_your_own_data(tmp_path):
    root = tmp_path / "mydata"
    for rel in ("images/train", "images/val", "annotations"):
        (root / rel).mkdir(parents=True)
    for rel in ("annotations/train.json", "annotations/val.json"):
        (root / rel).write_text("{}")
    preset = load_preset(write(tmp_path, VALID), data_root=root, env={})
    preset.validate_paths()
    (root / "annotations/val.json").unlink()
    with pytest.raises(MissingDataError, match=r"data.val_ann: file '.*val.json'"):
        preset.validate_paths()


def test_validate_paths_generated_demo(tmp_path):
    preset = load_preset("demo", data_root=tmp_path / "demo", env={})
    with pytest.raises(MissingDataError, match=r"generated: call rspose_tune.demo_data.generate_demo_dataset"):
        preset.validate_paths()
    demo_data.generate_demo_dataset(preset.data.root, n_train=2, n_val=2)
    preset.validate_paths()


def test_validate_paths_demo_with_its_data_and_missing_weights_names_the_weights_fix(tmp_path):
    """Before, missing --weights on the demo said "call generate_demo_dataset(...) first" (the data was there)."""
    demo_data.generate_demo_dataset(tmp_path / "demo", n_train=2, n_val=2)
    (tmp_path / "w.pth").mkdir()
    for weights, kind in ((tmp_path / "none.pth", ""), (tmp_path / "w.pth", " (a folder)")):
        preset = load_preset("demo", data_root=tmp_path / "demo", weights=weights, env={})
        with pytest.raises(MissingDataError) as info:
            preset.validate_paths()
        assert str(info.value).splitlines()[1:] == [
            f"  weights: file {str(weights)!r}{kind}",
            f"Point --weights (or {ENV_WEIGHTS}) at an existing checkpoint file, or pass --weights none for no "
            "weights; rspose_tune never downloads weights."]
    preset = load_preset("demo", data_root=tmp_path / "new", weights=tmp_path / "none.pth", env={})
    with pytest.raises(MissingDataError) as info:  # both missing: both fixes
        preset.validate_paths()
    assert "generate_demo_dataset" in str(info.value) and "Point --weights" in str(info.value)


def test_presets_are_frozen():
    preset = load_preset("demo", env={})
    with pytest.raises(AttributeError):
        preset.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        preset.params["delta_rank"] = None  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# Issue 17: one pydantic model (PresetFile) validates presets; its JSON schema is published
# --------------------------------------------------------------------------------------------


def test_published_json_schema_is_the_models():
    """docs/preset.schema.json must be regenerated when the model changes:
    python -c "import json; from rspose_tune.spaces import preset_json_schema as s; print(json.dumps(s(), indent=2, sort_keys=True))" > docs/preset.schema.json"""
    import json

    from rspose_tune.spaces import preset_json_schema

    committed = Path(__file__).resolve().parents[1] / "docs" / "preset.schema.json"
    assert json.loads(committed.read_text()) == preset_json_schema()


def test_every_shipped_preset_satisfies_the_published_schema_and_the_model():
    import json

    import jsonschema  # installed with ray[default]
    from rspose_tune.spaces import PresetFile, _UniqueKeyLoader, list_presets

    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "preset.schema.json").read_text())
    for name in list_presets():
        import yaml

        data = yaml.load(load_preset(name, weights="none").source.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506
        jsonschema.validate(data, schema)
        PresetFile.model_validate(data)


@pytest.mark.parametrize(("value", "message"), [
    ("true", r"`params.delta_rank.low` must be a number, got True \(bool\)"),  # strict: no bool-as-number
    ("'0.1'", r"`params.delta_rank.low` must be a number, got '0.1' \(str\) \(YAML reads 0.1 as a string"),
    (".inf", r"`params.delta_rank.low` must be finite, got inf"),
])
def test_strict_numbers_with_the_key_path(value, message, tmp_path):
    text = edit("{low: 0.1, high: 1.0, log: false}", f"{{low: {value}, high: 1.0}}")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SearchSpaceError, match=message):
        load_preset(str(path))


#: ``pickle.dumps`` on main 986a56e (``rspose_tune/spaces.py`` one module) of ``{"dims": {coeff_sort: a
#: ParamSpec range, pos_thr: a fixed ParamSpec}, "budget": Budget(10, 2, 3, 1), "param": LOSS_PARAMS[-1]}``:
#: how a saved searcher state or a run's ``tuner.pkl`` names these classes.
_OLD_PICKLE = (
    b"\x80\x04\x95\x9a\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\x04dims\x94}\x94(\x8c\ncoeff_sort\x94\x8c\x12rspose_tune"
    b".spaces\x94\x8c\tParamSpec\x94\x93\x94)\x81\x94}\x94(\x8c\x04name\x94h\x03\x8c\x03low\x94G?\xb9\x99\x99\x99\x99"
    b"\x99\x9a\x8c\x04high\x94G@\x10\x00\x00\x00\x00\x00\x00\x8c\x03log\x94\x88\x8c\x05fixed\x94N\x8c\tallow_off\x94"
    b"\x88ub\x8c\x07pos_thr\x94h\x06)\x81\x94}\x94(h\th\x0fh\nNh\x0bNh\x0c\x89h\rG\x00\x00\x00\x00\x00\x00\x00\x00h"
    b"\x0e\x89ubu\x8c\x06budget\x94h\x04\x8c\x06Budget\x94\x93\x94)\x81\x94}\x94(\x8c\nmax_epochs\x94K\n\x8c\x0cgrace"
    b"_epochs\x94K\x02\x8c\x10reduction_factor\x94K\x03\x8c\x0cval_interval\x94K\x01ub\x8c\x05param\x94h\x04\x8c\tLos"
    b"sParam\x94\x93\x94)\x81\x94}\x94(h\th\x0f\x8c\x04kind\x94\x8c\tthreshold\x94\x8c\tcomponent\x94N\x8c\x06target"
    b"\x94\x8c\x04loss\x94\x8c\x07default\x94G\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x05label\x94\x8c\x08Pos. thr\x94ubu."
)


def test_pickles_of_the_one_module_spaces_still_load_and_new_ones_keep_its_name():
    import pickle

    from rspose_tune.spaces import LOSS_PARAMS, Budget

    old = pickle.loads(_OLD_PICKLE)
    assert old == {"dims": {"coeff_sort": ParamSpec("coeff_sort", low=0.1, high=4.0, log=True, allow_off=True),
                            "pos_thr": ParamSpec("pos_thr", fixed=0.0)},
                   "budget": Budget(10, 2, 3, 1), "param": LOSS_PARAMS[-1]}
    assert type(old["dims"]["pos_thr"]) is ParamSpec
    # a new pickle names the package, as the old module did, so a move inside the package cannot break it
    assert pickle.dumps(old, protocol=4) == _OLD_PICKLE
