"""rspose_tune.runspec: the run spec round-trips every preset and the confirm/baseline/warm-start stages,
reads older specs, and rejects broken files naming file and key."""

from __future__ import annotations

import pytest
import yaml

from rspose_tune import runspec
from rspose_tune.spaces import list_presets, load_preset
from tests.conftest import _stage_spec


def _spec(preset, tmp_path, **kw):
    fields = dict(run="r", storage=str(tmp_path), preset=preset, num_trials=4, seed=1, max_epochs=3, grace_epochs=1,
                  reduction_factor=2, gpus_per_trial=0.5, cpus_per_trial=2.0, workers_per_trial=1,
                  dataloader_workers=None, scheduler="asha", sampler="tpe", n_startup_trials=2,
                  created_utc="2026-01-01T00:00:00+00:00", command=("python", "-m", "rspose_tune.search"),
                  versions={"ray": "2.60.0"}, git_revision="abc")
    fields.update(kw)
    return runspec.RunSpec(**fields)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_round_trips_through_the_spec_file(name, tmp_path):
    preset = load_preset(name, data_root=str(tmp_path / "data"), weights="none" if name != "demo" else None)
    spec = _spec(preset, tmp_path)
    path = runspec.write_spec(spec)
    assert path == f"{tmp_path}/r/run_spec.yaml"
    assert runspec.read_spec(str(tmp_path / "r")) == spec
    with pytest.raises(runspec.RunSpecError, match="already exists"):  # written once
        runspec.write_spec(spec)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("seed"), "key `seed` is missing"),
        (lambda d: d.update(version=99), "`version` is 99, but this rspose_tune reads version 1"),
        (lambda d: d["budget"].update(max_epochs="3"), "`budget.max_epochs` is '3', but input should be a valid integer"),
        (lambda d: d["stages"]["confirm"].update(top=-1), "`stages.confirm.top` is -1, but input should be greater than or equal to 0"),
        (lambda d: d["resources"].pop("workers_per_trial"), "key `resources.workers_per_trial` is missing"),
        (lambda d: d["warm_start"].append({"source": 3, "params": {}}), "`warm_start.0.source` is 3, but input should be a valid string"),
        (lambda d: d["preset"]["params"]["delta_rank"].update(low=-1), "`preset` is invalid"),
    ],
)
def test_broken_spec_names_file_and_key(edit, message, tmp_path):
    spec = _spec(load_preset("demo", data_root=str(tmp_path / "data")), tmp_path)
    data = spec.to_dict()
    edit(data)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run_spec.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(runspec.RunSpecError, match="run_spec.yaml") as exc:
        runspec.read_spec(str(tmp_path / "r"))
    assert message in str(exc.value)


def test_spec_written_before_pos_thr_reads_it_as_the_default(tmp_path):
    """A run spec of the six-parameter version: its preset and known-good settings have no pos_thr."""
    spec = _spec(load_preset("vit-b", data_root=str(tmp_path / "data"), weights="none"), tmp_path)
    data = spec.to_dict()
    del data["preset"]["params"]["pos_thr"]
    for entry in data["preset"]["known_good"]:
        del entry["pos_thr"]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run_spec.yaml").write_text(yaml.safe_dump(data))
    old = runspec.read_spec(str(tmp_path / "r"))
    assert old.preset.params["pos_thr"].describe() == "fixed 0" and old.preset.known_good[0]["pos_thr"] == 0.0
    assert old == spec  # the same run: pos_thr 0 is what it trained with


def test_run_spec_round_trips_the_stages_and_reads_old_specs():
    import yaml

    from rspose_tune.runspec import RunSpec

    spec = _stage_spec()
    data = yaml.safe_load(yaml.safe_dump(spec.to_dict()))
    back = RunSpec.from_dict(data, "x")
    assert (back.confirm_top, back.confirm_seeds, back.baseline, back.baseline_seeds) == (2, (1, 2), True, (1, 2))
    assert back.warm_start == spec.warm_start and back.tpe_options == spec.tpe_options
    assert back.preset.confirm == spec.preset.confirm and back.preset.cost == spec.preset.cost
    for key in ("stages", "warm_start"):
        data.pop(key)
    data["sampler"].pop("tpe_options")
    old = RunSpec.from_dict(data, "x")  # a spec written before issue 11
    assert (old.confirm_top, old.baseline, old.warm_start, old.tpe_options) == (0, False, (), {})
    data["stages"] = {"confirm": {"top": -1}}
    with pytest.raises(Exception, match="stages.confirm.top"):
        RunSpec.from_dict(data, "x")


def test_the_trainable_round_trips_and_a_spec_without_it_reads_as_the_default():
    from rspose_tune.runspec import DEFAULT_TRAINABLE, RunSpec

    spec = _stage_spec(trainable="my_pkg.trials:train")
    data = yaml.safe_load(yaml.safe_dump(spec.to_dict()))
    assert data["trainable"] == "my_pkg.trials:train" and RunSpec.from_dict(data, "x") == spec
    data.pop("trainable")
    old = RunSpec.from_dict(data, "x")  # a spec written before --trainable: the trainable it ran
    assert old.trainable == DEFAULT_TRAINABLE == "trainables.mmpose_trainable:train_rspose"
    data["trainable"] = 3
    with pytest.raises(runspec.RunSpecError, match="`trainable` is 3"):
        RunSpec.from_dict(data, "x")
