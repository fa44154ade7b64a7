"""``tools/replay_best_fate.py`` (issue 26): every replay is counted once, and ``candidate`` is what the
replayed confirm stage sees."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from rspose_tune.replay import DEMO_TABLE, POLICIES, ReplaySettings, confirm, load_table, replay
from rspose_tune.replay._table import _space_of_preset
from rspose_tune.spaces import load_preset

TOOL = Path(__file__).resolve().parents[2] / "tools" / "replay_best_fate.py"


def test_each_replay_has_one_fate_and_candidates_match_the_confirm_stage(capsys):
    spec = importlib.util.spec_from_file_location("replay_best_fate", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # the live search's space (issue 26: all-on), whose searches make the best a candidate (not vacuous)
    assert tool.main(["--seeds", "6", "--budget-epochs", "640", "--region-of", "19", "--search-space", "demo"]) == 0
    out = capsys.readouterr().out
    fates = re.findall(r"(asha-\w+)\s+never (\d+), stopped (\d+), full, not top 3 (\d+), candidate (\d+)", out)
    assert [f[0] for f in fates] == ["asha-tpe", "asha-random"]
    assert all(sum(map(int, f[1:])) == 6 for f in fates) and all(int(f[4]) > 0 for f in fates)  # not vacuous
    assert out.count("region of setting 19 (1 settings)") == 2  # one table: the region is the setting itself
    table = load_table([DEMO_TABLE])  # independently: the confirm stage's candidates hold the best that often
    settings = ReplaySettings(budget_epochs=640, n_startup_trials=32,
                              search_space=_space_of_preset(load_preset("demo")))
    for name, *_, candidate in fates:
        hits = sum(table.best_index in confirm(table, replay(table, POLICIES[name], seed=s, settings=settings), 3, 3).candidates
                   for s in range(6))
        assert hits == int(candidate), name


def test_tpe_option_reaches_the_replayed_searcher(monkeypatch, capsys):
    """``--tpe-option random_fraction=0`` replays the TPE of before issue 26's fourth round (no random share)."""
    from rspose_tune.searcher import _random_fraction

    spec = importlib.util.spec_from_file_location("replay_best_fate", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    made = []
    real = _random_fraction.RandomFractionSampler.__init__

    def spy(self, *args, **kwargs):
        made.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(_random_fraction.RandomFractionSampler, "__init__", spy)
    base = ["--seeds", "1", "--budget-epochs", "60", "--search-space", "demo"]
    assert tool.main(base) == 0 and made  # today's options: the random fraction
    made.clear()
    assert tool.main([*base, "--tpe-option", "random_fraction=0"]) == 0 and not made
    with pytest.raises(SystemExit) as exc:
        tool.main([*base, "--tpe-option", "random_fraction=2"])
    assert exc.value.code == 2
    assert "random_fraction must be a number in [0, 1)" in capsys.readouterr().err
