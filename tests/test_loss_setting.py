"""rspose_tune.spaces.LossSetting: one loss setting as a frozen value, built from a dict, a Parquet row,
a run spec entry or an Optuna trial; off, default and NaN read once; ``pos_thr``'s rule once."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pandas as pd
import pytest

from rspose_tune.errors import RSPoseTuneError
from rspose_tune.spaces import PARAM_DEFAULTS, PARAM_NAMES, LossSetting, LossSettingError, loss_param
from tests.conftest import KG

#: The one text of ``pos_thr``'s rule (every site adds where and the value).
POS_THR_RULE = "must be < 1 (labels peak at 1, so nothing would be a positive)"


def test_a_dict_reads_in_param_order_with_floats_and_the_default():
    s = LossSetting.from_dict({**KG, "coeff_rank": 1, "stage": "confirm", "seed": 3})  # other keys: not read
    assert list(s) == list(PARAM_NAMES) and len(s) == len(PARAM_NAMES)
    assert dict(s) == {**KG, "pos_thr": 0.0} and type(s["coeff_rank"]) is float
    assert PARAM_DEFAULTS == {"pos_thr": 0.0} and LossSetting.from_dict({**KG, "pos_thr": None})["pos_thr"] == 0.0
    assert LossSetting.from_dict({**KG, "pos_thr": np.float32(0.25)})["pos_thr"] == 0.25


@pytest.mark.parametrize("off", [None, 0, 0.0])
def test_an_off_coefficient_is_zero_and_its_delta_none(off):
    s = LossSetting.from_dict({**KG, "coeff_sort": off})  # the given delta_sort (1.5) is meaningless
    assert s["coeff_sort"] == 0.0 and s["delta_sort"] is None and not s.is_on("sort") and s.is_on("rank")
    assert s.as_row() == {**KG, "coeff_sort": None, "delta_sort": None, "pos_thr": 0.0}  # Parquet: off is null


def test_an_on_component_without_its_delta_keeps_none():
    assert LossSetting.from_dict({k: v for k, v in KG.items() if k != "delta_inst"})["delta_inst"] is None


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), r"`coeff_inst` must be finite and >= 0, got nan"),  # NaN is a Parquet null: from_row only
    (float("inf"), r"`coeff_inst` must be finite and >= 0, got inf"),
    (-0.5, r"`coeff_inst` must be finite and >= 0, got -0.5"),
    ("0.25", r"`coeff_inst` must be a number, got '0.25'"),
    (True, r"`coeff_inst` must be a number, got True"),
])
def test_a_dict_value_breaking_a_rule_is_refused_with_its_name(value, message):
    with pytest.raises(LossSettingError, match=message):
        LossSetting.from_dict({**KG, "coeff_inst": value})


@pytest.mark.parametrize("value", [1.0, 1.5])
def test_pos_thr_rule_is_one_message(value):
    with pytest.raises(LossSettingError, match=rf"^`pos_thr` {POS_THR_RULE.replace('(', '[(]').replace(')', '[)]')}, "
                                               rf"got {value}$"):
        LossSetting.from_dict({**KG, "pos_thr": value})
    assert loss_param("pos_thr").problem(value) == POS_THR_RULE
    assert loss_param("pos_thr").problem(0.999) is None and loss_param("delta_rank").problem(1.5) is None


def test_the_preset_check_states_the_same_pos_thr_rule(tmp_path):
    from rspose_tune.spaces import SearchSpaceError, validate_space
    from tests.conftest import SPACE

    with pytest.raises(SearchSpaceError, match=r"`params.pos_thr.fixed` " + POS_THR_RULE.replace("(", r"\(")
                       .replace(")", r"\)") + ", got 1$"):
        validate_space({**SPACE, "pos_thr": {"fixed": 1.0}})


def test_a_parquet_row_reads_nulls_as_off_and_the_default():
    row = {**KG, "coeff_inst": float("nan"), "delta_inst": float("nan"), "pos_thr": float("nan")}
    want = LossSetting.from_dict({**KG, "coeff_inst": None})
    assert LossSetting.from_row(row) == want
    assert LossSetting.from_row(pd.Series(row)) == want
    assert LossSetting.from_row(pd.Series({**row, "pos_thr": None}, dtype="Float64")) == want  # pd.NA
    assert LossSetting.from_row(pd.Series({k: v for k, v in row.items() if k != "pos_thr"})) == want  # old file
    assert LossSetting.from_row(pd.DataFrame([row]).iloc[0])["pos_thr"] == 0.0


def test_a_run_spec_entry_reads_like_the_preset_it_came_from():
    """A spec's known-good entries and warm-start params (pos_thr absent in specs written before it)."""
    from rspose_tune.runspec import RunSpec
    from tests.conftest import _stage_spec

    spec = RunSpec.from_dict(_stage_spec().to_dict(), "run_spec.yaml")
    for entry in spec.preset.known_good:
        assert dict(LossSetting.from_dict(entry)) == dict(entry)
    for entry in spec.warm_start:
        old = {k: v for k, v in entry["params"].items() if k != "pos_thr"}
        assert LossSetting.from_dict(old) == LossSetting.from_dict({**entry["params"], "pos_thr": 0.0})


def _reference_config(params: dict, dims: dict) -> dict:
    """An Optuna trial's config as the searcher built it by hand before ``LossSetting`` (an
    independent reading: a fixed value from the space, a sampled one from the trial, a switched-off or
    zero coefficient as 0.0 with delta None)."""
    from rspose_tune.spaces import COMPONENTS, component_names, switch_name

    def value(name):
        return dims[name].fixed if dims[name].is_fixed else params[name]

    config = {}
    for c in COMPONENTS:
        delta, coeff = component_names(c)
        on = params.get(switch_name(c), True)
        config[coeff] = value(coeff) if on else 0.0
        config[delta] = value(delta) if config[coeff] != 0.0 else None
    config["pos_thr"] = value("pos_thr")
    return config


@pytest.mark.parametrize("preset", ["demo", "vit-b", "res50-simcc"])
def test_an_optuna_trial_reads_as_the_searcher_sampled_it(preset):
    import optuna

    from rspose_tune.searcher._space import sample
    from rspose_tune.spaces import load_preset

    dims = load_preset(preset).params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        config = sample(trial, dims)
        study.tell(trial, 0.0)
        params = study.trials[-1].params
        assert config == _reference_config(params, dims)
        assert dict(LossSetting.from_trial(params, dims)) == config


def test_a_value_type_frozen_hashable_and_named():
    s = LossSetting.from_dict(KG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.vector = ()  # type: ignore[misc]
    assert {s: 1}[LossSetting.from_dict({**KG, "pos_thr": 0})] == 1 and s != LossSetting.from_dict({**KG, "coeff_rank": 2})
    assert repr(s).startswith("LossSetting(delta_rank=0.4, coeff_rank=1.0,")
    with pytest.raises(KeyError, match="'pos_thrx' is not a loss hyperparameter"):
        s["pos_thrx"]
    with pytest.raises(LossSettingError, match="a loss setting has 7 values"):
        LossSetting((0.4, 1.0))
    assert pickle.loads(pickle.dumps(s)) == s and b"rspose_tune.spaces\x94\x8c\x0bLossSetting" in pickle.dumps(s, 4)
    assert issubclass(LossSettingError, RSPoseTuneError) and issubclass(LossSettingError, ValueError)
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())
