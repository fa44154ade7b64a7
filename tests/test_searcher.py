"""Tests of rspose_tune.searcher: pruning semantics, space mapping, persistence and resume, warm start,
and the Optuna journal (optuna-dashboard, s3://).

Fast tests drive the searcher the way Ray's controller does (``suggest`` ->
``on_trial_result``* -> ``on_trial_complete``, where the result that made the scheduler stop a
trial is passed to ``on_trial_complete`` only). Slow tests run real Ray Tune with ASHA and a fake
trainable with synthetic learning curves. ``SPACE``, ``MAX_T`` and ``make_searcher``:
tests/conftest.py (the limiter's tests use them too)."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune import Callback

from rspose_tune.searcher import (
    JOURNAL_FILE_NAME,
    PARAM_NAMES,
    STATE_VERSION,
    PruningAwareOptunaSearch,
    to_optuna_state,
)
from rspose_tune.spaces import load_preset
from tests.conftest import BUCKET, KG, MAX_T, SPACE, B, make_searcher

optuna.logging.set_verbosity(optuna.logging.WARNING)


KNOWN_GOOD = [
    {"delta_rank": 0.4, "coeff_rank": 1.0, "delta_sort": 1.5, "coeff_sort": 2.0, "delta_inst": 3.0, "coeff_inst": 0.25},
    {"delta_rank": 0.5, "coeff_rank": 1.0, "delta_sort": 1.0, "coeff_sort": 1.0, "delta_inst": None, "coeff_inst": 0.0},
]


def curve(config: dict, epoch: int) -> float:
    """Synthetic learning curve: the plateau depends on the parameters."""
    plateau = 1.0 - abs(config["delta_rank"] - 0.4) - (0.2 if config["coeff_sort"] == 0 else 0.0)
    return plateau * (1.0 - 0.5**epoch)


def drive(searcher, trial_id: str, epochs: int, *, error: bool = False, config: dict | None = None) -> dict:
    """Run one trial like Ray does; the last result only reaches ``on_trial_complete``."""
    config = config or searcher.suggest(trial_id)
    for epoch in range(1, epochs):
        searcher.on_trial_result(trial_id, {"epoch": epoch, "metric": curve(config, epoch)})
    if error:
        searcher.on_trial_complete(trial_id, error=True)
    else:
        last = {"epoch": epochs, "metric": curve(config, epochs)} if epochs else {}
        searcher.on_trial_complete(trial_id, result=last)
    return config


def trial_of(study: optuna.Study, ray_id: str) -> optuna.trial.FrozenTrial:
    (trial,) = [t for t in study.trials if t.user_attrs.get("rspose:ray_trial_id") == ray_id
                and "rspose:rerun_of" not in t.user_attrs]
    return trial


# --------------------------------------------------------------------------------------------
# to_optuna_state
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_epoch", "error", "expected"),
    [
        (None, False, TrialState.FAIL),
        (0, False, TrialState.FAIL),
        (1, False, TrialState.PRUNED),
        (3, False, TrialState.PRUNED),
        (4, False, TrialState.COMPLETE),
        (5, False, TrialState.COMPLETE),
        (1, True, TrialState.FAIL),
        (4, True, TrialState.FAIL),
    ],
)
def test_to_optuna_state(last_epoch, error, expected):
    assert to_optuna_state(last_epoch, 4, error) == expected


@pytest.mark.parametrize(
    ("last_epoch", "max_epochs", "match"),
    [(1, 0, "max_epochs"), (1, -2, "max_epochs"), (1, 2.5, "max_epochs"), (1, True, "max_epochs"),
     (-1, 4, "last_epoch"), (1.5, 4, "last_epoch")],
)
def test_to_optuna_state_rejects(last_epoch, max_epochs, match):
    with pytest.raises(ValueError, match=match):
        to_optuna_state(last_epoch, max_epochs, False)


# --------------------------------------------------------------------------------------------
# Space and constructor validation
# --------------------------------------------------------------------------------------------


def _space(**changes):
    out = {k: dict(v) for k, v in SPACE.items()}
    for key, value in changes.items():
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (_space(delta_rank=None), r"search space: `params` is missing required key\(s\) \['delta_rank'\]"),
        ({**SPACE, "lr": {"low": 0.1, "high": 1.0}}, r"`params` has unknown key\(s\) \['lr'\]"),
        (_space(delta_rank={"low": 2.0, "high": 1.0}), r"`params.delta_rank` must have low < high"),
        (_space(delta_sort={"low": 0.0, "high": 1.0, "log": True}), r"`params.delta_sort.low` must be > 0 with log"),
        (_space(delta_rank={"low": 0.1}), r"`params.delta_rank` is missing required key\(s\) \['high'\]"),
        (_space(delta_rank={"low": 0.1, "high": 1.0, "step": 0.1}), r"`params.delta_rank` has unknown key\(s\) \['step'\]"),
        (_space(delta_rank={"low": 0.1, "high": float("nan")}), r"`params.delta_rank.high` must be finite"),
        (_space(delta_rank={"low": 0.1, "high": 1.0, "log": "yes"}), r"`params.delta_rank.log` must be true or false"),
        (_space(delta_rank={"fixed": None}), r"`params.delta_rank` is \{fixed: null\} but `coeff_rank` can be non-zero"),
        (_space(delta_rank=3.0), r"`params.delta_rank` must be a mapping \{low, high, log\} or \{fixed\}"),
        ([1, 2], "`params` must be a mapping"),
    ],
)
def test_space_errors(space, match):
    with pytest.raises(ValueError, match=match):
        PruningAwareOptunaSearch(space, max_epochs=MAX_T)


@pytest.mark.parametrize(
    ("space", "match"),
    [  # spaces the searcher's own checks accepted and the preset model refuses (issue 17: one rule set)
        (_space(delta_rank={"low": 0.0, "high": 1.0}), r"`params.delta_rank.low` must be > 0 for a delta"),
        (_space(coeff_rank={"low": 0.0, "high": 1.0}, coeff_sort={"low": 0.0, "high": 4.0}),
         r"`params.coeff_sort` and `params.coeff_rank` can both be off"),
        (_space(delta_sort={"low": 0.1, "high": 3.0, "allow_off": True}), r"`params.delta_sort.allow_off` only applies"),
        (_space(coeff_rank={"fixed": 1.0, "allow_off": True}), r"`params.coeff_rank.allow_off` only applies to a range"),
        (_space(coeff_inst={"fixed": 0.0}), r"`params.delta_inst` must be \{fixed: null\}"),
        ({**SPACE, "pos_thr": {"low": 0.1, "high": 1.5}}, r"`params.pos_thr.high` must be < 1"),
        ({**SPACE, "pos_thr": {"fixed": None}}, r"`params.pos_thr.fixed` must be a number"),
    ],
)
def test_space_is_validated_by_the_preset_model(space, match):
    from rspose_tune.errors import RSPoseTuneError
    from rspose_tune.spaces import SearchSpaceError

    with pytest.raises(SearchSpaceError, match=match) as caught:
        PruningAwareOptunaSearch(space, max_epochs=MAX_T)
    assert isinstance(caught.value, RSPoseTuneError)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({**KNOWN_GOOD[0], "lr": 0.1}, r"unknown parameters \['lr'\]"),
        ({**KNOWN_GOOD[0], "coeff_rank": 0.0}, "does not allow it"),
        ({**KNOWN_GOOD[0], "coeff_rank": 2.0}, r"fixed at 1\.0"),
        ({**KNOWN_GOOD[0], "delta_rank": 5.0}, r"in \[0\.1, 1\.0\]"),
        ({**KNOWN_GOOD[0], "delta_sort": "x"}, "finite number"),
        ("not a mapping", "must be a mapping"),
    ],
)
def test_known_good_errors(entry, match):
    with pytest.raises(ValueError, match=match):
        make_searcher(known_good=[entry])


def test_known_good_on_for_always_off_component_rejected():
    space = _space(coeff_inst={"fixed": 0.0}, delta_inst={"fixed": None})
    with pytest.raises(ValueError, match="always off"):
        make_searcher(space=space, known_good=[KNOWN_GOOD[0]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "maximize"}, "must be 'max', 'min'"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"n_startup_trials": -1}, "n_startup_trials"),
        ({"metric": ["a", "b"], "mode": None}, "must be a str"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_searcher(**kwargs)


# --------------------------------------------------------------------------------------------
# Suggestions
# --------------------------------------------------------------------------------------------


def test_pos_thr_is_searched_like_the_six():
    space = {**SPACE, "pos_thr": {"low": 1e-6, "high": 0.7, "log": True}}
    known = [{**KNOWN_GOOD[0], "pos_thr": 1e-6}]
    searcher = make_searcher(space=space, known_good=known)
    first = searcher.suggest("t0")
    assert first == known[0]
    assert searcher.study.trials[0].params["pos_thr"] == 1e-6
    values = [searcher.suggest(f"t{i}")["pos_thr"] for i in range(1, 6)]
    assert all(1e-6 <= v <= 0.7 for v in values) and len(set(values)) == 5
    with pytest.raises(ValueError, match=r"known_good\[0\]`\['pos_thr'\] is 0.9, but must be in \[1e-06, 0.7\]"):
        make_searcher(space=space, known_good=[{**KNOWN_GOOD[0], "pos_thr": 0.9}]).suggest("x")


def test_state_saved_before_pos_thr_restores_with_its_default(tmp_path):
    searcher = make_searcher(journal_path=tmp_path / "optuna.journal")
    searcher.suggest("t0")
    state = searcher.get_state()
    del state["space"]["pos_thr"]  # as written by the six-parameter searcher
    fresh = make_searcher(journal_path=tmp_path / "optuna.journal")
    fresh.set_state(state)
    assert fresh.suggest("t1")["pos_thr"] == 0.0


def test_known_good_enqueued_first():
    searcher = make_searcher(known_good=KNOWN_GOOD)
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    # pos_thr is not in SPACE: fixed at its default (0), and every config names it
    assert first == {**KNOWN_GOOD[0], "pos_thr": 0.0}
    assert second == {**KNOWN_GOOD[1], "coeff_inst": 0.0, "delta_inst": None, "pos_thr": 0.0}
    trials = searcher.study.trials
    assert [t.user_attrs.get("rspose:known_good") for t in trials] == [0, 1, None]
    assert trials[1].params["inst_on"] is False and "delta_inst" not in trials[1].params
    assert third not in (first, second)


def test_suggestions_map_off_components_and_fixed_values():
    searcher = make_searcher(n_startup_trials=50)
    configs = [searcher.suggest(f"t{i}") for i in range(40)]
    for config in configs:
        assert list(config) == list(PARAM_NAMES)
        assert config["coeff_rank"] == 1.0 and 0.1 <= config["delta_rank"] <= 1.0
        for c in ("sort", "inst"):
            assert (config[f"coeff_{c}"] == 0.0) == (config[f"delta_{c}"] is None)
    for c in ("sort", "inst"):
        offs = {config[f"coeff_{c}"] == 0.0 for config in configs}
        assert offs == {True, False}, f"{c} should be switched both on and off"
    params = set().union(*(t.params for t in searcher.study.trials))
    assert "coeff_rank" not in params and "rank_on" not in params  # fixed / not switchable
    assert {"sort_on", "inst_on"} <= params


def test_always_off_component_has_no_parameters():
    space = _space(coeff_inst={"fixed": 0.0}, delta_inst={"fixed": None})
    searcher = make_searcher(space=space)
    for i in range(5):
        config = searcher.suggest(f"t{i}")
        assert config["coeff_inst"] == 0.0 and config["delta_inst"] is None
    assert not any(k.endswith("inst") or k == "inst_on" for t in searcher.study.trials for k in t.params)


def test_coefficient_range_from_zero_can_be_off():
    space = _space(coeff_inst={"low": 0.0, "high": 3.0})
    searcher = make_searcher(space=space, known_good=[{**KNOWN_GOOD[0], "coeff_inst": 0.0, "delta_inst": None}])
    config = searcher.suggest("t0")
    assert config["coeff_inst"] == 0.0 and config["delta_inst"] is None
    assert "delta_inst" not in searcher.study.trials[0].params and "inst_on" not in searcher.study.trials[0].params
    other = searcher.suggest("t1")
    assert other["coeff_inst"] > 0.0 and other["delta_inst"] is not None


def test_shipped_presets_map_onto_the_searcher():
    spaces = pytest.importorskip("rspose_tune.spaces")
    for name in spaces.list_presets():
        preset = spaces.load_preset(name)
        searcher = make_searcher(space=preset.params, known_good=preset.known_good, mode=preset.mode,
                                 max_epochs=preset.budget.max_epochs)
        configs = [searcher.suggest(f"t{i}") for i in range(len(preset.known_good) + 2)]
        assert configs[: len(preset.known_good)] == [dict(k) for k in preset.known_good], name
        for config in configs:
            for c in ("rank", "sort", "inst"):
                off = config[f"coeff_{c}"] == 0.0
                assert preset.params[f"coeff_{c}"].contains(config[f"coeff_{c}"]), (name, config)
                assert off == (config[f"delta_{c}"] is None), (name, config)
                assert off or preset.params[f"delta_{c}"].contains(config[f"delta_{c}"]), (name, config)


def test_object_specs_equal_mapping_specs():
    from rspose_tune.spaces import ParamSpec

    objects = {name: ParamSpec(name=name, **spec) for name, spec in SPACE.items()}
    a, b = make_searcher(space=objects), make_searcher()
    assert [a.suggest(f"t{i}") for i in range(5)] == [b.suggest(f"t{i}") for i in range(5)]


def test_serialised_specs_equal_mapping_specs():
    """A replay table's metadata holds the preset's ParamSpecs as dicts, ``name`` included."""
    from dataclasses import asdict

    from rspose_tune.spaces import load_preset

    params = load_preset("demo").params
    a, b = make_searcher(space={n: asdict(s) for n, s in params.items()}), make_searcher(space=params)
    assert [a.suggest(f"t{i}") for i in range(5)] == [b.suggest(f"t{i}") for i in range(5)]
    with pytest.raises(ValueError, match=r"`params.delta_rank` has unknown key\(s\) \['name'\]"):
        make_searcher(space={n: {**asdict(s), "name": "other"} for n, s in params.items()})


def test_seed_changes_proposals():
    same = [make_searcher(seed=1).suggest("t") for _ in range(2)]
    other = make_searcher(seed=2).suggest("t")
    assert same[0] == same[1] and other != same[0]


def test_n_startup_trials_changes_proposals():
    def run(n_startup):
        searcher = make_searcher(n_startup_trials=n_startup, seed=3)
        for i in range(6):
            drive(searcher, f"t{i}", MAX_T)
        return searcher.suggest("next")

    assert run(2) != run(20)


def test_duplicate_trial_id_rejected():
    searcher = make_searcher()
    searcher.suggest("t0")
    with pytest.raises(ValueError, match="already suggested"):
        searcher.suggest("t0")


# --------------------------------------------------------------------------------------------
# Pruning semantics (fakes)
# --------------------------------------------------------------------------------------------


def test_states_complete_pruned_fail():
    searcher = make_searcher()
    full = drive(searcher, "full", MAX_T)
    early = drive(searcher, "early", 2)
    drive(searcher, "boom", 3, error=True)
    drive(searcher, "never", 0)
    study = searcher.study
    t_full, t_early, t_boom, t_never = (trial_of(study, k) for k in ("full", "early", "boom", "never"))
    assert t_full.state == TrialState.COMPLETE
    assert t_full.value == pytest.approx(curve(full, MAX_T))
    assert sorted(t_full.intermediate_values) == [1, 2, 3, 4]  # epoch 4 came via on_trial_complete
    assert t_early.state == TrialState.PRUNED
    assert t_early.intermediate_values == pytest.approx({1: curve(early, 1), 2: curve(early, 2)})
    assert t_early.user_attrs["rspose:last_epoch"] == 2
    assert t_boom.state == TrialState.FAIL and "error" in t_boom.user_attrs["rspose:fail_reason"]
    assert sorted(t_boom.intermediate_values) == [1, 2]
    assert t_never.state == TrialState.FAIL and "before reporting" in t_never.user_attrs["rspose:fail_reason"]


def test_full_budget_with_nan_metric_fails():
    searcher = make_searcher()
    searcher.suggest("t")
    searcher.on_trial_result("t", {"epoch": 1, "metric": 0.5})
    searcher.on_trial_complete("t", result={"epoch": MAX_T, "metric": math.nan})
    trial = trial_of(searcher.study, "t")
    assert trial.state == TrialState.FAIL and "no finite" in trial.user_attrs["rspose:fail_reason"]


def test_mode_min_completes_with_direction_minimize():
    searcher = make_searcher(mode="min")
    drive(searcher, "t", MAX_T)
    assert searcher.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert trial_of(searcher.study, "t").state == TrialState.COMPLETE


def test_retried_trial_rereports_without_duplicates_and_complete_is_idempotent():
    searcher = make_searcher()
    searcher.suggest("t")
    for epoch, value in [(1, 0.1), (2, 0.2), (2, 0.99), (1, 0.98), (3, 0.3)]:  # retry from epoch-1 checkpoint
        searcher.on_trial_result("t", {"epoch": epoch, "metric": value})
    searcher.on_trial_complete("t", result={"epoch": 4, "metric": 0.4})
    searcher.on_trial_complete("t", result={"epoch": 4, "metric": 0.4})  # repeated notification
    trials = searcher.study.trials
    assert len(trials) == 1
    assert trials[0].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == 0.4


def test_result_without_epoch_is_not_reported(caplog):
    searcher = make_searcher()
    searcher.suggest("t")
    with caplog.at_level(logging.WARNING, logger="rspose_tune.searcher"):
        searcher.on_trial_result("t", {"metric": 0.5})
    assert "no integer 'epoch'" in caplog.text
    assert searcher.study.trials[0].intermediate_values == {}


def test_unknown_trial_ignored_with_warning(caplog):
    searcher = make_searcher()
    with caplog.at_level(logging.WARNING, logger="rspose_tune.searcher"):
        searcher.on_trial_result("ghost", {"epoch": 1, "metric": 0.5})
        searcher.on_trial_complete("ghost", result={"epoch": 1, "metric": 0.5})
    assert caplog.text.count("'ghost'") == 1
    assert searcher.study.trials == []


# --------------------------------------------------------------------------------------------
# metric / mode from tune.TuneConfig
# --------------------------------------------------------------------------------------------


def test_metric_and_mode_from_set_search_properties():
    searcher = PruningAwareOptunaSearch(SPACE, max_epochs=MAX_T)
    with pytest.raises(ValueError, match="needs `metric` and `mode`"):
        searcher.suggest("t0")
    assert searcher.set_search_properties("metric", "min", {"backbone": "demo"})
    searcher.suggest("t0")
    assert searcher.metric == "metric" and searcher.study.direction.name == "MINIMIZE"


def test_set_search_properties_conflicts_and_domains():
    from ray import tune

    searcher = make_searcher()
    assert searcher.set_search_properties("metric", "max", {})
    with pytest.raises(ValueError, match="conflicts with"):
        searcher.set_search_properties("loss", None, {"x": 1})
    with pytest.raises(ValueError, match="conflicts with"):
        searcher.set_search_properties(None, "min", {"x": 1})
    assert not searcher.set_search_properties(None, None, {"delta_rank": tune.uniform(0, 1)})
    fresh = PruningAwareOptunaSearch(SPACE, max_epochs=MAX_T, metric="metric")
    with pytest.raises(ValueError, match="must be 'max' or 'min'"):
        fresh.set_search_properties(None, "maximize", {"x": 1})


# --------------------------------------------------------------------------------------------
# Persistence and resume (fakes)
# --------------------------------------------------------------------------------------------


def _journal_study(path: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name="rspose", storage=storage)


def _first_session(tmp_path: Path):
    journal = tmp_path / "run" / JOURNAL_FILE_NAME
    searcher = make_searcher(journal_path=journal, known_good=KNOWN_GOOD)
    configs = {}
    for i, epochs in enumerate([MAX_T, 1, MAX_T, 2, 3]):
        configs[f"t{i}"] = drive(searcher, f"t{i}", epochs)
    configs["run"] = searcher.suggest("run")  # running at epoch 2 when the driver dies
    for epoch in (1, 2):
        searcher.on_trial_result("run", {"epoch": epoch, "metric": curve(configs["run"], epoch)})
    configs["pend"] = searcher.suggest("pend")  # suggested, never started
    state_file = tmp_path / "searcher-state.json"
    searcher.save(str(state_file))
    return journal, state_file, configs


def test_save_writes_versioned_json(tmp_path):
    _, state_file, _ = _first_session(tmp_path)
    state = json.loads(state_file.read_text())
    assert state["format"] == "rspose_tune.PruningAwareOptunaSearch" and state["version"] == STATE_VERSION
    assert state["pending"] == ["pend", "run"]
    assert state["trials"]["run"]["last_epoch"] == 2 and state["trials"]["t1"]["state"] == "pruned"
    assert state["known_good_used"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_restore_keeps_history_fails_interrupted_and_does_not_repeat(tmp_path):
    journal, state_file, old = _first_session(tmp_path)
    restored = make_searcher(journal_path=journal, known_good=KNOWN_GOOD)
    restored.restore(str(state_file))
    study = restored.study
    assert len(study.trials) == 7
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert trial_of(study, "run").state == TrialState.FAIL and trial_of(study, "pend").state == TrialState.FAIL

    new = [restored.suggest(f"n{i}") for i in range(5)]  # no known-good repeats, no replayed samples
    old_configs = list(old.values())
    assert not any(config in old_configs for config in new)

    # Ray resumes "run" from its epoch-1 checkpoint: a new Optuna trial continues it.
    restored.on_trial_result("run", {"epoch": 2, "metric": 0.52})
    restored.on_trial_complete("run", result={"epoch": MAX_T, "metric": 0.7})
    rerun = next(t for t in _journal_study(journal).trials if t.user_attrs.get("rspose:rerun_of") is not None)
    assert rerun.user_attrs["rspose:rerun_of"] == trial_of(study, "run").number
    assert rerun.user_attrs["rspose:ray_trial_id"] == "run"
    assert rerun.params == trial_of(study, "run").params
    assert rerun.intermediate_values == pytest.approx({1: curve(old["run"], 1), 2: 0.52, 4: 0.7})
    assert rerun.state == TrialState.COMPLETE

    for i in range(5):  # finish the new ones; nothing may stay RUNNING
        restored.on_trial_complete(f"n{i}", result={"epoch": 1, "metric": 0.1})
    restored.on_trial_complete("pend", error=True)
    assert not _journal_study(journal).get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.parametrize("rows_given", [True, False])
def test_a_rerun_takes_epochs_the_journal_lost_from_the_rows(tmp_path, rows_given):
    """The driver died after epoch 2's row and before the next snapshot: the journal it left holds
    epoch 1 only; the trial resumes from its epoch-2 checkpoint (it has a row) and reports epoch 3.
    With the rows' metrics the Optuna trial that continues it has epochs 1-3, as the rows do; without
    them (the soak's ``journal`` failure) it skips epoch 2."""
    journal = tmp_path / "run" / JOURNAL_FILE_NAME
    searcher = make_searcher(journal_path=journal)
    drive(searcher, "a", MAX_T)
    config = searcher.suggest("run")
    searcher.on_trial_result("run", {"epoch": 1, "metric": curve(config, 1)})
    state_file = tmp_path / "searcher-state.json"
    searcher.save(str(state_file))  # Ray's last experiment snapshot
    snapshot = journal.read_bytes()
    searcher.on_trial_result("run", {"epoch": 2, "metric": curve(config, 2)})  # its row is written; then the kill
    journal.write_bytes(snapshot)  # what the storage holds: the journal of the snapshot
    restored = make_searcher(journal_path=journal)
    restored.restore(str(state_file))
    if rows_given:
        restored.use_recorded_metrics({"a": {e: curve(trial_of(restored.study, "a").params, e) for e in (1, 2, 3)},
                                       "run": {1: curve(config, 1), 2: curve(config, 2), 3: float("nan")}})
    restored.on_trial_result("run", {"epoch": 3, "metric": 0.61})
    restored.on_trial_complete("run", result={"epoch": MAX_T, "metric": 0.7})
    rerun = next(t for t in _journal_study(journal).trials if t.user_attrs.get("rspose:rerun_of") is not None)
    want = {1: curve(config, 1), 2: curve(config, 2), 3: 0.61, MAX_T: 0.7}
    if not rows_given:
        del want[2]
    assert rerun.intermediate_values == pytest.approx(want) and rerun.state == TrialState.COMPLETE


def test_reopening_journal_without_state_file_keeps_history(tmp_path):
    journal, _, old = _first_session(tmp_path)
    again = make_searcher(journal_path=journal, known_good=KNOWN_GOOD)  # e.g. the driver died before a checkpoint
    new = again.suggest("n0")
    assert new not in list(old.values())
    trials = again.study.trials
    assert len(trials) == 8 and trials[-1].user_attrs.get("rspose:known_good") is None
    assert trial_of(again.study, "run").state == TrialState.FAIL


def test_restore_from_stale_state_merges_newer_journal(tmp_path):
    journal = tmp_path / JOURNAL_FILE_NAME
    searcher = make_searcher(journal_path=journal)
    drive(searcher, "a", MAX_T)
    searcher.suggest("b")
    stale = tmp_path / "stale.json"
    searcher.save(str(stale))  # periodic checkpoint; the journal moves on
    searcher.on_trial_result("b", {"epoch": 1, "metric": 0.3})
    searcher.on_trial_complete("b", result={"epoch": 2, "metric": 0.4})
    drive(searcher, "c", 1)
    restored = make_searcher(journal_path=journal)
    restored.restore(str(stale))
    assert trial_of(restored.study, "b").state == TrialState.PRUNED
    assert restored.get_state()["trials"]["c"]["state"] == "pruned"
    restored.on_trial_complete("b", result={"epoch": 2, "metric": 0.4})  # Ray repeats: ignored
    assert len(restored.study.trials) == 3


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(version=STATE_VERSION + 1), "has version"),
        (lambda s: s.update(format="other"), "Not a PruningAwareOptunaSearch state"),
        (lambda s: s.update(max_epochs=99), "max_epochs=99"),
        (lambda s: s["space"]["delta_rank"].update(high=2.0), "space="),
        (lambda s: s.update(mode="min"), "mode='min'"),
        (lambda s: s["trials"]["t0"].update(number=42), "has no such trial"),
    ],
)
def test_restore_rejects_incompatible_state(tmp_path, mutate, match):
    journal, state_file, _ = _first_session(tmp_path)
    state = json.loads(state_file.read_text())
    mutate(state)
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=match):
        make_searcher(journal_path=journal, known_good=KNOWN_GOOD).restore(str(state_file))


def test_restore_rejects_non_json_and_missing_journal(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a PruningAwareOptunaSearch state file"):
        make_searcher().restore(str(bad))
    memory = make_searcher()
    drive(memory, "t", 1)
    memory.save(str(tmp_path / "mem.json"))
    with pytest.raises(ValueError, match="in-memory study"):
        make_searcher().restore(str(tmp_path / "mem.json"))


def test_restore_uses_journal_path_from_state(tmp_path):
    journal, state_file, _ = _first_session(tmp_path)
    restored = make_searcher(known_good=KNOWN_GOOD)  # no journal_path: taken from the state
    restored.restore(str(state_file))
    assert restored.journal_path == str(journal) and len(restored.study.trials) == 7


def test_pickle_roundtrip_before_and_during_search(tmp_path):
    journal = tmp_path / JOURNAL_FILE_NAME
    fresh = pickle.loads(pickle.dumps(make_searcher(journal_path=journal)))  # as in Ray's tuner.pkl
    drive(fresh, "a", MAX_T)
    fresh.suggest("b")
    clone = pickle.loads(pickle.dumps(fresh))
    assert trial_of(clone.study, "b").state == TrialState.FAIL  # reopened by a new "driver"
    assert clone.suggest("c") != fresh.get_state()["trials"]["a"]["params"]

    lazy = pickle.loads(pickle.dumps(clone))  # first event is a result of a resumed trial
    lazy.on_trial_result("c", {"epoch": 1, "metric": 0.2})
    lazy.on_trial_complete("c", result={"epoch": MAX_T, "metric": 0.9})
    rerun = [t for t in lazy.study.trials if t.user_attrs.get("rspose:rerun_of") == trial_of(lazy.study, "c").number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE and rerun[0].value == 0.9


def test_tuner_pkl_of_the_single_module_searcher_loads():
    """A ResumableConcurrencyLimiter(PruningAwareOptunaSearch) pickled by rspose_tune 986a56e, when the
    searcher was the module rspose_tune/searcher.py (as in a run's tuner.pkl), still loads and proposes
    what a new searcher of the same settings proposes; new pickles name the same path."""
    from rspose_tune.searcher import ResumableConcurrencyLimiter

    data = (Path(__file__).parent / "data" / "tuner_searcher_986a56e.pkl").read_bytes()
    assert "'rspose_tune.searcher'" in _pickled_strings(data)  # the class's path then
    alg = pickle.loads(data)
    assert isinstance(alg, ResumableConcurrencyLimiter) and isinstance(alg.searcher, PruningAwareOptunaSearch)
    kg = [{"delta_rank": 0.5, "coeff_rank": 1.0, "delta_sort": 0.5, "coeff_sort": None, "delta_inst": 1.0,
           "coeff_inst": 1.0}]
    same = make_searcher(known_good=kg, seed=3)
    assert [alg.searcher.suggest(t) for t in "abc"] == [same.suggest(t) for t in "abc"]
    assert "'rspose_tune.searcher'" in _pickled_strings(pickle.dumps(alg))
    assert "rspose_tune.searcher._search" not in _pickled_strings(pickle.dumps(alg))


def _pickled_strings(data: bytes) -> str:
    import io
    import pickletools

    out = io.StringIO()
    pickletools.dis(data, out=out)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Real Ray Tune + ASHA
# --------------------------------------------------------------------------------------------


def _trainable(max_t: int, sleep_s: float = 0.0):
    """A fast function trainable (a closure, so Ray ships it by value)."""

    def trainable(config):
        import time

        from ray import tune

        for epoch in range(1, max_t + 1):
            if sleep_s:
                time.sleep(sleep_s)
            tune.report({"epoch": epoch, "metric": curve(config, epoch)})

    return trainable


def _tuner(searcher, storage: Path, name: str, num_samples: int, callbacks=(), max_concurrent: int = 2):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    return tune.Tuner(
        _trainable(MAX_T, sleep_s=0.2 if callbacks else 0.0),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=MAX_T, grace_period=1, reduction_factor=2),
            num_samples=num_samples,
            metric="metric",
            mode="max",
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0, callbacks=list(callbacks)),
    )


@pytest.mark.slow
def test_asha_run_tells_optuna_pruned_and_complete(local_ray, tmp_path):
    journal = tmp_path / "run" / JOURNAL_FILE_NAME
    searcher = make_searcher(journal_path=journal, known_good=KNOWN_GOOD)
    results = _tuner(searcher, tmp_path, "asha", num_samples=10).fit()
    assert results.num_errors == 0
    last_epoch = {r.metrics["trial_id"]: r.metrics["epoch"] for r in results}

    study = _journal_study(journal)  # what optuna-dashboard sees
    assert len(study.trials) == 10
    states = {t.state for t in study.trials}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in study.trials:
        reached = last_epoch[trial.user_attrs["rspose:ray_trial_id"]]
        assert sorted(trial.intermediate_values) == list(range(1, reached + 1))
        assert (trial.state == TrialState.COMPLETE) == (reached == MAX_T)
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(trial.intermediate_values[MAX_T])
    assert [t.user_attrs.get("rspose:known_good") for t in study.trials[:2]] == [0, 1]


@pytest.mark.slow
def test_stock_optuna_search_marks_asha_stopped_trials_complete(local_ray, tmp_path):
    """Why PruningAwareOptunaSearch exists: Ray's OptunaSearch tells TPE low-fidelity COMPLETEs."""
    from ray.tune.search.optuna import OptunaSearch

    dists = {
        "delta_rank": optuna.distributions.FloatDistribution(0.1, 1.0),
        "coeff_sort": optuna.distributions.FloatDistribution(0.0, 4.0),
    }
    stock = OptunaSearch(space=dists, metric="metric", mode="max", seed=0)
    results = _tuner(stock, tmp_path, "stock", num_samples=8).fit()
    epochs = [r.metrics["epoch"] for r in results]
    assert min(epochs) < MAX_T == max(epochs)  # ASHA did stop some trials early
    trials = stock._ot_study.trials
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert any(max(t.intermediate_values) < MAX_T for t in trials)  # 1-epoch scores as COMPLETE


class _InterruptOnce(Callback):
    """Sends SIGINT (Tune checkpoints and stops, like a killed driver) after 3 finished trials, once."""

    def __init__(self, marker: Path):
        self.marker, self.done = marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        if self.done == 3 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_tuner_restore_resumes_study_without_repeats(local_ray, tmp_path):
    from ray import tune

    journal = tmp_path / "run" / JOURNAL_FILE_NAME
    searcher = make_searcher(journal_path=journal, known_good=KNOWN_GOOD)
    tuner = _tuner(searcher, tmp_path, "resume", num_samples=8, callbacks=[_InterruptOnce(tmp_path / "fired")])
    tuner.fit()  # interrupted
    before = {t.number: t for t in _journal_study(journal).trials}
    assert 3 <= len(before) < 8
    interrupted = [t for t in before.values() if t.state == TrialState.RUNNING]

    results = tune.Tuner.restore(str(tmp_path / "resume"), trainable=_trainable(MAX_T), resume_unfinished=True).fit()
    assert results.num_errors == 0 and len(results) == 8
    study = _journal_study(journal)
    trials = study.trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    for number, old in before.items():  # history kept
        assert trials[number].params == old.params
        if old.state != TrialState.RUNNING:
            assert trials[number].state == old.state
    for old in interrupted:
        assert trials[old.number].state == TrialState.FAIL
    assert interrupted, "a trial was running when the driver stopped"
    reruns = [t for t in trials if "rspose:rerun_of" in t.user_attrs]  # Ray resumed them
    assert sorted(t.user_attrs["rspose:rerun_of"] for t in reruns) == [t.number for t in interrupted]
    for rerun in reruns:
        assert rerun.params == trials[rerun.user_attrs["rspose:rerun_of"]].params
        assert rerun.state in (TrialState.COMPLETE, TrialState.PRUNED)
    fresh = [t for t in trials if t.number not in before and "rspose:rerun_of" not in t.user_attrs]
    assert fresh, "the restored search proposed new trials"
    assert not any(t.params == old.params for t in fresh for old in before.values())
    # every Ray trial has exactly one live (non-FAIL) Optuna record, none left RUNNING
    ray_ids = {r.metrics["trial_id"] for r in results}
    finished = {t.user_attrs["rspose:ray_trial_id"] for t in trials if t.state != TrialState.FAIL}
    assert finished <= ray_ids


def test_unknown_sampler_is_refused_with_the_choices():
    from rspose_tune.searcher import PruningAwareOptunaSearch

    with pytest.raises(ValueError, match=r"`sampler` is 'cmaes', but must be one of \['tpe', 'random', 'gp'\]"):
        PruningAwareOptunaSearch(SPACE, max_epochs=4, metric="m", mode="max", sampler="cmaes")


def test_one_set_of_sampler_names_for_the_searcher_and_the_start_up_rule():
    from rspose_tune.searcher import SAMPLERS, startup_trials

    assert SAMPLERS == ("tpe", "random", "gp")
    assert [startup_trials(30, s) for s in SAMPLERS] == [10, 30, 10]
    with pytest.raises(ValueError, match=r"`sampler` is 'cmaes', but must be one of \['tpe', 'random', 'gp'\]"):
        startup_trials(30, "cmaes")


def test_sampler_names_are_read_without_optuna_or_ray():
    """The search's parser reads SAMPLERS at start; the searcher's Optuna and Ray load on first use."""
    from tests.conftest import _run

    code = """
        import sys
        from rspose_tune.searcher import SAMPLERS, TPE_OPTIONS, startup_trials
        light = sorted(m for m in ("optuna", "ray") if m in sys.modules)
        from rspose_tune.searcher import PruningAwareOptunaSearch, ResumableConcurrencyLimiter, STATE_VERSION
        print(light, PruningAwareOptunaSearch.__module__, "optuna" in sys.modules, STATE_VERSION)
    """
    assert _run(code) == "[] rspose_tune.searcher True 1"


def test_random_sampler_proposes_what_tpe_start_up_trials_propose(tmp_path):
    """``sampler="random"`` is random search as the CLI's ``--sampler random`` and the replay's random
    policies ran it (TPE with every trial a start-up trial): the same proposals, after a restore too."""
    runs = iter(range(100))

    def proposals(**kwargs):
        journal = tmp_path / f"{next(runs)}.journal"
        searcher = make_searcher(known_good=KNOWN_GOOD[:1], seed=5, journal_path=journal, **kwargs)
        out = [drive(searcher, f"t{i}", 1 + i % MAX_T) for i in range(8)]
        clone = pickle.loads(pickle.dumps(searcher))  # a new driver: the seed derived from the history
        return out + [clone.suggest("again")]

    assert proposals(sampler="random") == proposals(sampler="tpe", n_startup_trials=2**31 - 1)
    assert proposals(sampler="random") != proposals(sampler="tpe", n_startup_trials=2)


# --------------------------------------------------------------------------------------------
# Warm start (the confirm stage's follow-up search)
# --------------------------------------------------------------------------------------------


def test_searcher_enqueues_warm_start_after_known_good_and_records_the_source():
    from rspose_tune.searcher import TPE_OPTIONS, PruningAwareOptunaSearch

    space = load_preset("demo").params
    kg, b = {**KG, "pos_thr": 1e-6}, {**B, "pos_thr": 0.01}  # the demo searches pos_thr
    searcher = PruningAwareOptunaSearch(space, max_epochs=3, metric="metric", mode="max", known_good=[kg],
                                        warm_start=[{"params": b, "source": "/runs/x trial t1"}])
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    assert first == kg and second == b and third != b
    trials = searcher.study.trials
    assert trials[0].user_attrs["rspose:known_good"] == 0 and "rspose:warm_start" not in trials[0].user_attrs
    assert trials[1].user_attrs["rspose:warm_start"] == "/runs/x trial t1"
    sampler = searcher.study.sampler
    assert TPE_OPTIONS == {"constant_liar": True, "multivariate": False, "n_ei_candidates": 1,
                           "random_fraction": 0.5}  # docs/trust.md
    tpe = sampler._model  # RandomFractionSampler: TPE, and a RandomSampler for every other trial after the start-up
    assert sampler._fraction == 0.5 and isinstance(sampler._random, optuna.samplers.RandomSampler)
    assert tpe._constant_liar and tpe._multivariate is False and tpe._n_ei_candidates == 1
    grouped = PruningAwareOptunaSearch(space, max_epochs=3, metric="metric", mode="max",
                                       tpe_options={"multivariate": True, "group": True})
    assert grouped.study.sampler._multivariate and grouped.study.sampler._group
    with pytest.raises(ValueError, match="unsupported keys"):
        PruningAwareOptunaSearch(space, max_epochs=3, tpe_options={"bogus": 1})
    with pytest.raises(ValueError, match="warm_start"):
        PruningAwareOptunaSearch(space, max_epochs=3, warm_start=[{"params": B}])


# --------------------------------------------------------------------------------------------
# The journal: optuna-dashboard serves it; on s3:// it is uploaded at each save
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_runs_study_on_loopback(tmp_path):
    """Issue 10: the set-up installs optuna-dashboard, and it opens a run's optuna.journal."""
    import json
    import shutil
    import subprocess
    import sys
    import time

    from rspose_tune.searcher import JOURNAL_FILE_NAME, PruningAwareOptunaSearch
    from rspose_tune.spaces import load_preset

    preset = load_preset("demo")
    journal = tmp_path / "run" / JOURNAL_FILE_NAME  # where a search keeps the study
    searcher = PruningAwareOptunaSearch(preset.params, max_epochs=2, metric="metric", mode="max",
                                        known_good=preset.known_good, journal_path=journal)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, "metric": 0.5})
    searcher.on_trial_complete("t1", {"epoch": 2, "metric": 0.6})
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is not installed in this environment (requirements/lock.txt)"
    port = _free_port()
    server = subprocess.Popen([exe, str(journal), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode()[-2000:]
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert body is not None, "optuna-dashboard did not answer on 127.0.0.1"
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["rspose"]
        study = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=10).read())
        assert [t["state"] for t in study["trials"]] == ["Complete"]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_searcher_journal_on_s3_is_uploaded_at_each_save_and_reopened(s3_env, tmp_path, monkeypatch):
    import pickle

    import optuna
    import pyarrow.fs as pafs

    from rspose_tune.searcher import PruningAwareOptunaSearch
    from rspose_tune.spaces import load_preset

    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    preset = load_preset("demo")
    uri = f"s3://{BUCKET}/unit/run/optuna.journal"
    searcher = PruningAwareOptunaSearch(preset.params, max_epochs=2, metric="metric", mode="max", journal_path=uri)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, "metric": 0.5})
    searcher.on_trial_complete("t1", {"epoch": 2, "metric": 0.7})
    searcher.suggest("t2")  # running at the snapshot
    searcher.save(str(tmp_path / "state.json"))  # what Ray calls at an experiment snapshot
    s3, where = pafs.FileSystem.from_uri(uri)
    assert s3.get_file_info(where).type == pafs.FileType.File
    # A new driver (another machine: nothing local) unpickles the searcher from tuner.pkl and restores it.
    again = pickle.loads(pickle.dumps(searcher))
    again.restore(str(tmp_path / "state.json"))
    states = {t.user_attrs["rspose:ray_trial_id"]: t.state for t in again.study.trials}
    assert states == {"t1": optuna.trial.TrialState.COMPLETE, "t2": optuna.trial.TrialState.FAIL}  # t2 interrupted
    assert again.journal_path == uri and searcher._journal_local != again._journal_local
