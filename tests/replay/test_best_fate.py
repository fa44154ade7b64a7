"""``tools/replay_best_fate.py`` (issue 26): every replay is counted once, and ``candidate`` is what the
replayed confirm stage sees."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

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
