"""A trial resumed from the checkpoint of its last epoch reports that epoch's result again (soak
defect: a trial that finished between Ray's last experiment snapshot and a driver kill ended with
its stale epoch-3 result, PRUNED in the journal while its rows said completed; docs/soak.md)."""

from __future__ import annotations

from types import SimpleNamespace

PARAMS = {"delta_rank": 0.5, "coeff_rank": 1.0, "delta_sort": 0.5, "coeff_sort": 1.0, "delta_inst": 0.5,
          "coeff_inst": 1.0, "pos_thr": 0.5}


def _trial(monkeypatch, tmp_path, checkpoint, max_epochs):
    import pyarrow.fs as pafs
    from ray import tune

    import rspose_tune.training as training
    import trainables.mmpose_trainable as mt

    storage = SimpleNamespace(trial_working_directory=str(tmp_path / "work"), trial_fs_path=str(tmp_path / "store"),
                              storage_filesystem=pafs.LocalFileSystem(), experiment_fs_path=str(tmp_path))
    context = SimpleNamespace(get_trial_id=lambda: "t1", get_storage=lambda: storage,
                              get_trial_resources=lambda: SimpleNamespace(bundles=[{"CPU": 1}]))
    seen = {"reports": [], "trained": False}
    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(tune, "report", lambda result, checkpoint=None: seen["reports"].append(dict(result)))
    monkeypatch.setattr(mt, "_ensure_generated_data", lambda preset: None)
    monkeypatch.setattr(mt, "prepare_trial_config",
                        lambda *a, **k: SimpleNamespace(train_cfg=SimpleNamespace(max_epochs=max_epochs)))
    monkeypatch.setattr(training, "train_rank", lambda *a, **k: seen.update(trained=True))
    return seen


def _checkpoint(tmp_path, epoch, result):
    """A checkpoint as the trainable's report writes it (``tune_report``): manifest and result."""
    from ray import tune

    from rspose_tune.training import CHECKPOINT_FILE, write_manifest
    from trainables.mmpose_trainable import tune_report

    folder = tmp_path / f"ckpt{epoch}"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"weights")
    write_manifest(folder, trial_id="t1", epoch=epoch)
    reported = []
    orig = tune.report
    tune.report = lambda result, checkpoint=None: reported.append(checkpoint)
    try:
        tune_report(result, str(folder))
    finally:
        tune.report = orig
    assert reported and reported[0] is not None
    return tune.Checkpoint.from_directory(str(folder))


def test_a_trial_resumed_after_its_last_epoch_reports_that_epochs_result_again(tmp_path, monkeypatch):
    result = {"epoch": 4, "metric": 0.25, "metric_name": "coco/AP", "coco/AP": 0.25, "loss": 1.5}
    checkpoint = _checkpoint(tmp_path, 4, result)
    seen = _trial(monkeypatch, tmp_path, checkpoint, max_epochs=4)
    from trainables.mmpose_trainable import train_rspose

    train_rspose(dict(PARAMS), preset=SimpleNamespace(metric="coco/AP"))
    assert not seen["trained"]
    assert len(seen["reports"]) == 1
    again = seen["reports"][0]
    assert {k: again[k] for k in result} == result  # the recorded epoch-4 result, not Ray's stale one


def test_a_trial_resumed_before_its_last_epoch_trains_and_reports_nothing_old(tmp_path, monkeypatch):
    checkpoint = _checkpoint(tmp_path, 3, {"epoch": 3, "metric": 0.2})
    seen = _trial(monkeypatch, tmp_path, checkpoint, max_epochs=4)
    from trainables.mmpose_trainable import train_rspose

    train_rspose(dict(PARAMS), preset=SimpleNamespace(metric="coco/AP"))
    assert seen["trained"] and seen["reports"] == []


def test_the_searcher_completes_a_trial_that_reports_its_final_epoch_after_a_restore():
    """What the re-report fixes, through the searcher: told the stale epoch-3 result only it says
    PRUNED; with epoch 4 reported again it says COMPLETE with epoch 4's value."""
    from optuna.trial import TrialState

    from rspose_tune.searcher import PruningAwareOptunaSearch

    space = {"delta_rank": {"low": 0.1, "high": 1.0, "log": False, "allow_off": False},
             "coeff_rank": {"fixed": 1.0}, "delta_sort": {"fixed": 0.5}, "coeff_sort": {"fixed": 1.0},
             "delta_inst": {"fixed": 0.5}, "coeff_inst": {"fixed": 1.0}, "pos_thr": {"fixed": 0.5}}
    states = {}
    for again in (False, True):
        s = PruningAwareOptunaSearch(space, max_epochs=4, metric="metric", mode="max")
        s.suggest("t1")
        for epoch in (1, 2, 3):
            s.on_trial_result("t1", {"epoch": epoch, "metric": 0.1 * epoch})
        if again:
            s.on_trial_result("t1", {"epoch": 4, "metric": 0.25})
            last = {"epoch": 4, "metric": 0.25}
        else:
            last = {"epoch": 3, "metric": 0.3}
        s.on_trial_complete("t1", result=last)
        states[again] = s.study.get_trials()[0]
    assert states[False].state == TrialState.PRUNED
    assert states[True].state == TrialState.COMPLETE and states[True].value == 0.25
