"""rspose_tune.replay._simulator: the simulated controller and the policies on synthetic tables; a slow
test runs the same fixed sequence of trials through a real Ray Tune controller and through the
replay and compares ASHA's decisions."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from rspose_tune.replay import POLICIES, ReplaySettings, incumbent_at, replay, summarize, table_from_frame
from rspose_tune.replay._simulator import DEFAULT_POLICIES, make_scheduler, simulate
from tests.replay.conftest import MAX_EPOCHS, SPACE, SPACE_ON, _curve_rows, _grid_settings, _setting


@pytest.mark.parametrize("policy", DEFAULT_POLICIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_policy_with_enough_budget_finds_the_best(known_table, policy, seed):
    settings = ReplaySettings(budget_epochs=60 * MAX_EPOCHS, workers=2, grace_epochs=1, reduction_factor=2)
    trace = replay(known_table, POLICIES[policy], seed, settings)
    assert incumbent_at(trace, trace.spent_epochs)[1] == known_table.best_index
    summary = summarize(known_table, [trace], settings.budget_epochs, target=0.01)
    assert summary.rows[-1]["regret"][0] == pytest.approx(0.0)
    assert summary.reached == 1


@pytest.mark.parametrize("policy", [name for name, p in POLICIES.items() if p.scheduler != "pasha"])
@pytest.mark.parametrize("budget", [0, MAX_EPOCHS - 1, 2 * MAX_EPOCHS - 1])
def test_a_policy_without_budget_finds_nothing(known_table, policy, budget):
    """Too few epochs for any trial to reach the full budget (4 workers share them). (Not the
    PASHA-style policy: its answer comes from its top level, below the full budget; tests/test_pasha.py.)"""
    settings = ReplaySettings(budget_epochs=budget, workers=4, grace_epochs=1, reduction_factor=2)
    trace = replay(known_table, POLICIES[policy], 0, settings)
    assert trace.incumbents == [] and trace.spent_epochs <= budget
    if budget == 0:
        assert trace.trials == [] and trace.events == []
    summary = summarize(known_table, [trace], budget, target=0.01)
    assert summary.rows[-1]["found"] == 0 and math.isinf(summary.rows[-1]["regret"][0])
    assert summary.reached == 0


def _fingerprint(trace):
    return ([(t.config, t.setting, t.curve, t.last_epoch, t.start_s, t.end_s) for t in trace.trials],
            trace.decisions, trace.incumbents, trace.events)


@pytest.mark.parametrize("policy", ["asha-tpe", "full-random"])
def test_same_seed_same_replay(mixed_table, policy):
    settings = ReplaySettings(budget_epochs=30 * MAX_EPOCHS, workers=3, grace_epochs=1, reduction_factor=2)
    first = replay(mixed_table, POLICIES[policy], 7, settings)
    np.random.seed(123)  # Ray's ASHA draws its bracket from numpy's global RNG: must not matter
    again = replay(mixed_table, POLICIES[policy], 7, settings)
    other = replay(mixed_table, POLICIES[policy], 8, settings)
    assert _fingerprint(first) == _fingerprint(again)
    assert _fingerprint(first)[0] != _fingerprint(other)[0]


def test_budget_and_workers_bound_the_replay(known_table):
    one = replay(known_table, POLICIES["full-random"], 0, ReplaySettings(budget_epochs=5 * MAX_EPOCHS, workers=1))
    assert len(one.trials) == 5 and one.spent_epochs == 20
    assert all(b.start_s == pytest.approx(a.end_s) for a, b in zip(one.trials, one.trials[1:]))  # sequential
    many = replay(known_table, POLICIES["full-random"], 0, ReplaySettings(budget_epochs=5 * MAX_EPOCHS, workers=5))
    assert [t.start_s for t in many.trials[:5]] == [0.0] * 5
    assert all(t.start_s > 0 for t in many.trials[5:]) and many.spent_epochs == 20
    assert many.clock_s < one.clock_s / 3  # five at once


def test_asha_stops_early_and_tpe_differs_from_random_after_startup(known_table):
    settings = ReplaySettings(budget_epochs=40 * MAX_EPOCHS, workers=1, grace_epochs=1, reduction_factor=2,
                              n_startup_trials=4)
    asha = replay(known_table, POLICIES["asha-tpe"], 0, settings)
    assert any(t.stopped for t in asha.trials)
    assert all(t.last_epoch in (1, 2, MAX_EPOCHS) for t in asha.trials)  # ASHA rungs 1, 2 (then the end)
    tpe = replay(known_table, POLICIES["full-tpe"], 0, settings)
    rnd = replay(known_table, POLICIES["full-random"], 0, settings)
    assert [t.config for t in tpe.trials[:4]] == [t.config for t in rnd.trials[:4]]  # same random start-up
    assert [t.config for t in tpe.trials[4:]] != [t.config for t in rnd.trials[4:]]


def test_only_full_budget_trials_are_found():
    """Curves that fall with training: a stopped trial's early metric beats every final one."""
    settings = _grid_settings()
    rows = []
    for i, setting in enumerate(settings):
        for r in _curve_rows(f"s{i:02d}", setting, 0.3 + 0.02 * i):
            rows.append({**r, "metric": (0.3 + 0.02 * i) * (1 + 2 * 0.5 ** r["epoch"])})
    table = table_from_frame(pd.DataFrame(rows), source="falling", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)
    rs = ReplaySettings(budget_epochs=30 * MAX_EPOCHS, workers=4, grace_epochs=1, reduction_factor=2)
    trace = replay(table, POLICIES["asha-random"], 0, rs)
    assert any(t.stopped for t in trace.trials) and trace.incumbents
    for _, clock, metric, setting in trace.incumbents:
        ends = [t for t in trace.trials if t.end_s == clock and t.setting == setting]
        assert ends and all(t.last_epoch == MAX_EPOCHS and not t.stopped for t in ends)
        assert metric == pytest.approx(table.curves[setting][0].metric[-1])


def test_known_good_is_asked_first(known_table):
    known_table.known_good = [dict(known_table.settings[3])]
    settings = ReplaySettings(budget_epochs=3 * MAX_EPOCHS, workers=1, known_good=True)
    trace = replay(known_table, POLICIES["full-tpe"], 0, settings)
    assert trace.trials[0].setting == 3 and trace.trials[0].exact
    without = replay(known_table, POLICIES["full-tpe"], 0, ReplaySettings(budget_epochs=3 * MAX_EPOCHS, workers=1))
    assert not without.trials[0].exact


@pytest.mark.parametrize(
    ("field", "value"),
    [("budget_epochs", -1), ("workers", 0), ("grace_epochs", 0), ("grace_epochs", MAX_EPOCHS + 1),
     ("reduction_factor", 1), ("n_startup_trials", -1), ("workers", 2.0)],
)
def test_settings_are_checked(known_table, field, value):
    settings = ReplaySettings(**{"budget_epochs": 10, field: value})
    with pytest.raises(ValueError, match=f"`{field}` is {value!r}"):
        replay(known_table, POLICIES["asha-tpe"], 0, settings)


def test_each_option_has_one_rule_for_check_and_the_cli(known_table):
    """Issue 24: ``ReplaySettings.check`` repeated the CLI's rules; both now read ``option_rule``, and
    check raises the package's ``ReplayError`` (one ``error:`` line in a CLI), naming a value's source."""
    from rspose_tune.errors import RSPoseTuneError
    from rspose_tune.replay._simulator import option_rule

    assert option_rule("workers", 0) == "an integer >= 1" and option_rule("workers", 1) is None
    assert option_rule("grace_epochs", 5) is None and option_rule("grace_epochs", 5, max_epochs=4) is not None
    with pytest.raises(RSPoseTuneError, match=r"The value of `workers` is 0, but must be an integer >= 1\.$"):
        ReplaySettings(budget_epochs=1, workers=0).check(4)
    with pytest.raises(RSPoseTuneError, match=r"^t.parquet: grace_epochs is 5, but must be an integer in \[1, 4\]"):
        ReplaySettings(budget_epochs=1, grace_epochs=5).check(4, sources={"grace_epochs": "t.parquet: grace_epochs"})
    assert ReplaySettings(budget_epochs=1).check(4) is None  # n_startup_trials None: the default rule, not an error


class _FixedSearcher:
    """Proposes a fixed list of configs (then FINISHED); for feeding the same trials to two controllers."""

    @staticmethod
    def make(configs):
        from ray.tune.search import Searcher

        class FixedSearcher(Searcher):
            def __init__(self):
                super().__init__(metric="metric", mode="max")
                self.configs = [dict(c) for c in configs]
                self.given = 0

            def suggest(self, trial_id):
                if self.given >= len(self.configs):
                    return Searcher.FINISHED
                self.given += 1
                return dict(self.configs[self.given - 1])

            def on_trial_complete(self, trial_id, result=None, error=False):
                pass

        return FixedSearcher()


def _stairs_table():
    """Constant curves over 4 epochs (values known), one curve per setting."""
    values = [0.5, 0.4, 0.6, 0.45, 0.7, 0.3, 0.55, 0.65]
    settings = [_setting(0.1 + 0.1 * i, 1.0, 1.0, 1.0, 1.0) for i in range(len(values))]
    rows = []
    for i, (v, s) in enumerate(zip(values, settings)):
        for r in _curve_rows(f"t{i}", s, v):
            rows.append({**r, "metric": v + 0.01 * r["epoch"] * (i % 3 - 1)})  # order changes with epochs
    return table_from_frame(pd.DataFrame(rows), source="stairs", max_epochs=4, mode="max", space=SPACE), settings


def test_replayed_asha_decides_as_asha_is_defined():
    """Sequential trials, grace 1, rf 2 (rungs 1, 2; 4 = the end): stop when below the rung's median."""
    table, settings = _stairs_table()
    rs = ReplaySettings(budget_epochs=1000, workers=1, grace_epochs=1, reduction_factor=2)
    trace = simulate(table, make_scheduler(POLICIES["asha-tpe"], table, rs), _FixedSearcher.make(settings),
                     settings=rs, seed=0)
    rungs: dict[int, list[float]] = {1: [], 2: []}
    expected = []
    for i in range(len(settings)):
        curve = table.curves[i][0]
        stop = 4
        for e in (1, 2):
            value = curve.metric[e - 1]
            if rungs[e] and value < np.percentile(rungs[e], 50):
                rungs[e].append(value)
                stop = e
                break
            rungs[e].append(value)
        expected.append(stop)
    assert [t.last_epoch for t in trace.trials] == expected
    assert 1 in expected and 2 in expected and 4 in expected  # the example exercises every outcome


@pytest.mark.slow
def test_replayed_asha_matches_live_ray_scheduler(local_ray, tmp_path):
    """The same trials (configs, curves, order: W=1) through Ray's real controller and the replay."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    table, settings = _stairs_table()
    configs = [{**s, "curve": list(table.curves[i][0].metric)} for i, s in enumerate(settings)]

    def trainable(config):
        for epoch, metric in enumerate(config["curve"], start=1):
            tune.report({"epoch": epoch, "metric": metric})

    def asha(rs):
        return make_scheduler(POLICIES["asha-tpe"], table, rs)

    for grace, factor in ((1, 2), (2, 2), (1, 3)):
        rs = ReplaySettings(budget_epochs=1000, workers=1, grace_epochs=grace, reduction_factor=factor)
        trace = simulate(table, asha(rs), _FixedSearcher.make(configs), settings=rs, seed=0)
        grid = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(_FixedSearcher.make(configs), max_concurrent=1),
                                        scheduler=asha(rs), num_samples=len(configs)),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name=f"live-{grace}-{factor}", verbose=0),
        ).fit()
        live = {r.config["delta_rank"]: r.metrics["epoch"] for r in grid}
        replayed = {t.config["delta_rank"]: t.last_epoch for t in trace.trials}
        assert replayed == live, (grace, factor)
        assert set(live.values()) != {4}, "the example must make ASHA stop some trials"


@pytest.mark.parametrize("workers", [1, 3])
def test_start_up_proposals_under_concurrency_are_counted(known_table, workers):
    """Ray #52535: TPE proposes at random until n_startup_trials trials have *ended*, so W workers
    start n + W - 1 random trials (full budget: W at once, then one per ended trial)."""
    settings = ReplaySettings(budget_epochs=40 * MAX_EPOCHS, workers=workers, n_startup_trials=4)
    trace = replay(known_table, POLICIES["full-tpe"], 0, settings)
    assert sum(t.startup for t in trace.trials) == 4 + workers - 1
    assert [t.startup for t in trace.trials[: 4 + workers - 1]] == [True] * (4 + workers - 1)
    assert all(t.startup for t in replay(known_table, POLICIES["full-random"], 0, settings).trials)
    summary = summarize(known_table, [trace], settings.budget_epochs, 0.01)
    assert summary.startup == 4 + workers - 1


def test_start_up_trials_default_to_the_live_search_rule(known_table):
    """Issue 24: ReplaySettings had its own default of 10; now the searcher's rule for one trial per
    recorded setting (16 settings: 5), the default the CLI also reaches."""
    from rspose_tune.searcher import startup_trials

    settings = ReplaySettings(budget_epochs=12 * MAX_EPOCHS, workers=1)
    assert settings.for_table(known_table).n_startup_trials == startup_trials(len(known_table.settings)) == 5
    assert ReplaySettings(budget_epochs=1, n_startup_trials=7).for_table(known_table).n_startup_trials == 7
    trace = replay(known_table, POLICIES["full-tpe"], 0, settings)
    assert len(trace.trials) == 12 and sum(t.startup for t in trace.trials) == 5


def test_a_replay_searches_on_one_training_seed(known_table):
    trace = replay(known_table, POLICIES["asha-random"], 3, ReplaySettings(budget_epochs=40, workers=2))
    assert trace.search_seed in (0, 1)
    assert {t.curve.rsplit("seed", 1)[1] for t in trace.trials} == {str(trace.search_seed)}


def test_gp_policy_proposes_with_optunas_gp_sampler(known_table):
    import optuna

    from rspose_tune.replay._simulator import make_searcher

    settings = ReplaySettings(budget_epochs=6 * MAX_EPOCHS, workers=1, n_startup_trials=3, grace_epochs=1)
    limiter = make_searcher(POLICIES["full-gp"], known_table, settings, seed=0)
    limiter.suggest("probe")
    assert isinstance(limiter.searcher._open_study().sampler, optuna.samplers.GPSampler)
    trace = replay(known_table, POLICIES["full-gp"], 0, settings)
    assert len(trace.trials) == 6 and len(trace.incumbents) >= 1  # 3 random start-up trials, then 3 from the GP


def test_search_space_is_what_the_searcher_proposes_from():
    """Issue 26: ``ReplaySettings.search_space`` replaces the table's space for proposals only: here
    pos_thr fixed at 0.5 in every proposal, each still answered by a recorded setting of the table."""
    from rspose_tune.replay import DEMO_TABLE, load_table

    table = load_table([DEMO_TABLE])
    space = {**table.space, "pos_thr": {"fixed": 0.5}}
    settings = ReplaySettings(budget_epochs=60, workers=2, grace_epochs=2, reduction_factor=3, n_startup_trials=3,
                              search_space=space)
    trace = replay(table, POLICIES["asha-random"], 0, settings)
    assert trace.trials and {r.config["pos_thr"] for r in trace.trials} == {0.5}
    assert all(0 <= r.setting < len(table.settings) for r in trace.trials)
    own = replay(table, POLICIES["asha-random"], 0, dataclasses.replace(settings, search_space=None))
    assert len({r.config["pos_thr"] for r in own.trials}) > 1  # the table's space searches it


def test_repeat_curves_other_seeds_gives_a_nearby_proposal_the_settings_next_seed():
    """A proposal matched to an already tried setting: ``same`` replays the search seed's curve again;
    ``other-seeds`` the next recorded seed's (cycling), unless the proposal is the setting itself."""
    settings = [_setting(0.2, 1.0, 1.0, 1.0, 1.0), _setting(0.9, 1.0, 1.0, 1.0, 1.0)]
    rows = []
    for i, setting in enumerate(settings):
        for seed in range(3):
            rows += _curve_rows(f"s{i}-seed{seed}", setting, 0.5 + 0.1 * i + 0.01 * seed)
    table = table_from_frame(pd.DataFrame(rows), source="seeds", max_epochs=MAX_EPOCHS, mode="max", space=SPACE_ON)
    near = dict(settings[0], delta_rank=0.21)  # answered by setting 0, not exactly
    proposals = [settings[0], near, near, near, settings[0], settings[1]]

    def seeds_replayed(repeat_curves):
        rs = ReplaySettings(budget_epochs=1000, workers=1, grace_epochs=1, reduction_factor=2,
                            repeat_curves=repeat_curves)
        trace = simulate(table, make_scheduler(POLICIES["full-tpe"], table, rs), _FixedSearcher.make(proposals),
                         settings=rs, seed=0)
        by_id = {c.trial_id: c.seed for cs in table.curves for c in cs}
        return trace.search_seed, [(t.setting, by_id[t.curve]) for t in trace.trials]

    search_seed, same = seeds_replayed("same")
    index0 = same[0][0]
    assert [s for _, s in same] == [search_seed] * 6 and [i for i, _ in same[:5]] == [index0] * 5
    _, fresh = seeds_replayed("other-seeds")
    from rspose_tune.errors import RSPoseTuneError

    cycle = [(search_seed + k) % 3 for k in range(4)]
    assert [s for _, s in fresh] == [search_seed, cycle[1], cycle[2], cycle[3], search_seed, search_seed]
    with pytest.raises(RSPoseTuneError, match="repeat_curves"):
        ReplaySettings(budget_epochs=1, repeat_curves="fresh").check(4)
