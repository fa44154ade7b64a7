"""``python -m rspose_tune.bench soak``: a demo search on a real Ray cluster under repeated faults,
then every record checked from the storage alone.

Everything runs on 127.0.0.1 and is started here, each as one process group that is stopped by
its id at the end: moto's standalone S3 server (the run's storage, ``s3://soak/runs``), a
``ray start --head`` node and ``--workers`` worker nodes (token authentication, as docs/cluster.md
says; one trial per node), and the search (``python -m rspose_tune.search --backbone demo
--address ...``, ASHA, ``--confirm-top``, ``--baseline``). During the search, on a schedule from
the flags (times in seconds from the search's start, each jittered by ``--seed``; with ``--clock
rows``, in result rows the run's storage holds instead, not jittered):

- a worker node's raylet SIGKILLed and the node started again with the same command, every
  ``--node-kill-every`` seconds, ``--node-kills`` times (round robin over the workers);
- the S3 server stopped (SIGSTOP) for ``--outage-s`` seconds and continued (its data kept);
- the driver SIGKILLed once at ``--driver-kill-at`` and the search run again with ``--resume``.

Then the checks (:func:`check_run`), each from what the storage holds: the Parquet rows
(:mod:`rspose_tune.results`), each trial's folder (``trial.json``, the resolved config, its MMPose
logs and ``vis_data/``, its checkpoints' manifests), the Optuna journal, the stages' rows, and
``report``/``export`` run on it. One line per check; exit 1 if any fails; ``--json PATH`` writes
the schedule, every figure and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rspose_tune.errors import RSPoseTuneError

from ._cluster import Node, S3Server, free_port, processes, ray_bin, wait_for_nodes

__all__ = ["Check", "Fault", "check_run", "main", "schedule", "schedule_of"]

BUCKET = "soak"
RUN = "soak"
#: The Optuna study name the search uses (rspose_tune.search).
STUDY = "rspose"


class SoakUsageError(RSPoseTuneError, ValueError):
    """A bad ``bench soak`` flag: one ``error:`` line, exit 2."""


#: What a fault's time counts: seconds since the search started, or the result rows in its storage.
CLOCKS = ("seconds", "rows")


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``kind`` (``node``, ``outage``, ``driver``) at ``at_s`` on the soak's
    clock (seconds after the search started, or with ``--clock rows`` the number of result rows the
    run's storage holds); ``node`` names the worker (0-based) of a node kill."""

    kind: str
    at_s: float
    node: int | None = None


def schedule(*, node_kills: int, node_kill_first: float, node_kill_every: float, workers: int, outage_at: float | None,
             driver_kill_at: float | None, seed: int, jitter: float = 0.1) -> list[Fault]:
    """The faults in time order; each time is moved by up to ``jitter`` x its interval (seeded;
    ``jitter=0``: the times as given, the ``--clock rows`` schedule)."""
    rng = random.Random(seed)
    faults = [Fault("node", round(node_kill_first + k * node_kill_every
                                  + rng.uniform(-jitter, jitter) * node_kill_every, 1), k % workers)
              for k in range(node_kills)]
    if outage_at is not None:
        faults.append(Fault("outage", round(outage_at * (1 + rng.uniform(-jitter, jitter)), 1)))
    if driver_kill_at is not None:
        faults.append(Fault("driver", round(driver_kill_at * (1 + rng.uniform(-jitter, jitter)), 1)))
    return sorted(faults, key=lambda f: f.at_s)


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name:13s} {self.summary}"


# --------------------------------------------------------------------------------------------
# Reading the storage
# --------------------------------------------------------------------------------------------

@dataclass
class TrialFolder:
    """What a trial's storage folder holds."""

    files: set[str]
    attempts: list[dict[str, Any]]  # per MMPose work folder (one per attempt), in time order
    checkpoint_epochs: set[int]
    meta: dict[str, Any] | None


def _read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def read_trial_folder(fs, folder: str) -> TrialFolder:
    """The files of ``folder`` (relative), per attempt (MMPose's ``mmpose/<stamp>/``: its log and
    ``vis_data/scalars.json``) the epochs trained and validated, its checkpoints' epochs."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    files = {i.path[len(folder) + 1:] for i in infos if i.type == pafs.FileType.File}
    attempts = []
    for stamp in sorted({f.split("/")[1] for f in files if re.fullmatch(r"mmpose/[^/]+/.+", f)}):
        scalars = f"mmpose/{stamp}/vis_data/scalars.json"
        lines = [json.loads(line) for line in _read(fs, f"{folder}/{scalars}").decode().splitlines()
                 if line.strip()] if scalars in files else []
        attempts.append({"stamp": stamp, "log": f"mmpose/{stamp}/{stamp}.log" in files, "vis_data": scalars in files,
                         "trained": sorted({int(x["epoch"]) for x in lines if "epoch" in x}),
                         "validated": [int(x["step"]) for x in lines if "epoch" not in x and "step" in x]})
    epochs = set()
    for rel in files:
        if re.fullmatch(r"checkpoint_[^/]+/rspose_checkpoint\.json", rel):
            epochs.add(int(json.loads(_read(fs, f"{folder}/{rel}"))["epoch"]))
    meta = None
    if "trial.json" in files:
        meta = json.loads(_read(fs, f"{folder}/trial.json"))
    return TrialFolder(files, attempts, epochs, meta)


def _journal_trials(fs, run_path: str) -> list:
    """The Optuna study's trials, read from the journal in the storage (a local copy)."""
    import optuna

    from rspose_tune._layout import JOURNAL_FILE

    with tempfile.TemporaryDirectory(prefix="soak_journal_") as tmp:
        local = Path(tmp) / JOURNAL_FILE
        with fs.open_input_stream(f"{run_path}/{JOURNAL_FILE}") as src:
            local.write_bytes(src.read())
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(local)))
        return optuna.load_study(study_name=STUDY, storage=storage).trials


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def check_run(run_uri: str, *, num_trials: int, max_epochs: int, rungs: list[int], confirm_top: int,
              confirm_seeds: int, baseline_seeds: int, kills: int,
              run_cli: Callable[[list[str]], subprocess.CompletedProcess] | None = None) -> list[Check]:
    """Every check of a finished run at ``run_uri`` (``kills``: node and driver kills injected, each
    of which may cost one trained epoch of a trial it interrupted)."""
    from rspose_tune._stages import STAGE_EXPERIMENT
    from rspose_tune._storage import filesystem
    from rspose_tune.results import read_results

    fs, run_path = filesystem(run_uri)
    rows = read_results(run_uri)
    checks: list[Check] = []
    last = rows.sort_values("epoch").groupby("trial_id").last()
    stage = last["stage"].fillna("search")
    search_ids = sorted(last.index[stage == "search"])

    # 1. how trials ended
    counts = {s: int((last["status"] == s).sum()) for s in ("completed", "pruned", "error", "running")}
    bad_pruned = sorted(t for t in last.index[last["status"] == "pruned"] if int(last.loc[t, "epoch"]) not in rungs)
    ok = (counts["error"] == 0 and counts["running"] == 0 and len(search_ids) == num_trials and not bad_pruned
          and (last.loc[last["status"] == "completed", "epoch"] == max_epochs).all())
    checks.append(Check("trials", ok, f"{len(search_ids)}/{num_trials} search trials; completed {counts['completed']}, "
                        f"pruned {counts['pruned']}, errored {counts['error']}, unfinished {counts['running']}"
                        + (f"; pruned off a rung: {bad_pruned}" if bad_pruned else ""),
                        {**counts, "search_trials": len(search_ids), "pruned_off_rung": bad_pruned}))

    # 2-5: each trial's folder against its rows
    dupes = rows[rows.duplicated(["trial_id", "epoch"], keep=False)]
    lost: dict[str, list[int]] = {}
    twice: dict[str, list[int]] = {}
    incomplete: dict[str, list[str]] = {}
    restarts = redone = beyond = 0
    for trial_id in last.index:
        epochs = set(int(e) for e in rows.loc[rows["trial_id"] == trial_id, "epoch"])
        final = int(last.loc[trial_id, "epoch"])
        under = "" if stage[trial_id] == "search" else f"/{STAGE_EXPERIMENT}"
        folder = read_trial_folder(fs, f"{run_path}{under}/trial_{trial_id}")
        validated = [e for a in folder.attempts for e in a["validated"]]
        seen = set(validated) | folder.checkpoint_epochs
        missing = sorted(e for e in seen | set(range(1, final + 1)) if e <= final and e not in epochs)
        if missing:
            lost[trial_id] = missing
        beyond += len({e for e in seen if e > final})  # trained after the result that stopped it
        extra = sorted(e for e in set(validated) if validated.count(e) > 1)
        trial_restarts = max(len(folder.attempts) - 1, 0)
        restarts += trial_restarts
        redone += len(validated) - len(set(validated))
        if len(validated) - len(set(validated)) > trial_restarts:  # more than one epoch per restart
            twice[trial_id] = extra
        problems = [name for name in ("resolved_config.py", "trial.json") if name not in folder.files]
        if not folder.attempts:
            problems.append("no MMPose log")
        elif not all(a["log"] for a in folder.attempts):
            problems.append(f"{sum(not a['log'] for a in folder.attempts)} MMPose work folders without their log")
        else:
            uncovered = sorted(set(range(1, final + 1)) - set(validated))
            if uncovered:
                problems.append(f"logs lack epochs {uncovered}")
            if not any(a["vis_data"] for a in folder.attempts if final in a["validated"]):
                problems.append("no vis_data/ beside the log of its last epoch")
        if problems:
            incomplete[trial_id] = problems
    checks.append(Check("rows lost", not lost, f"{sum(map(len, lost.values()))} epochs seen in logs or checkpoints "
                        f"without a Parquet row ({beyond} epochs trained past a trial's last row, not counted)"
                        + (f": {lost}" if lost else ""), {"lost": lost, "epochs_past_last_row": beyond}))
    checks.append(Check("rows doubled", dupes.empty, f"{len(dupes)} rows share a (trial, epoch)"
                        + (f": {sorted(set(dupes['trial_id']))}" if len(dupes) else ""),
                        {"duplicated_rows": len(dupes)}))
    checks.append(Check("epochs twice", not twice, f"{redone} epochs validated twice over {restarts} trial restarts "
                        f"(at most one per restart allowed; {kills} kills injected)"
                        + (f"; more than allowed: {twice}" if twice else ""),
                        {"epochs_redone": redone, "trial_restarts": restarts, "over_budget": twice}))
    checks.append(Check("trial folders", not incomplete, f"{len(last) - len(incomplete)}/{len(last)} complete "
                        "(resolved config, trial.json, MMPose logs of every epoch, vis_data/)"
                        + (f"; incomplete: {incomplete}" if incomplete else ""), {"incomplete": incomplete}))

    # 6. the Optuna journal against the rows
    problems = []
    try:
        trials = _journal_trials(fs, run_path)
    except (OSError, KeyError, ValueError) as exc:
        trials, problems = [], [f"journal unreadable: {exc}"]
    by_ray: dict[str, Any] = {}
    for t in trials:
        ray_id = t.user_attrs.get("rspose:ray_trial_id")
        if ray_id is not None and (ray_id not in by_ray or t.number > by_ray[ray_id].number):
            by_ray[ray_id] = t
    # A trial the searcher suggested just before a driver kill, which Ray's older snapshot did not
    # hold, is FAIL in the journal with no value and no rows: nothing was learned, nothing is lost.
    unrun = sorted(r for r, t in by_ray.items() if r not in search_ids and t.state.name == "FAIL"
                   and not t.intermediate_values)
    if trials and sorted(set(by_ray) - set(unrun)) != search_ids:
        problems.append(f"journal trials {sorted((set(by_ray) - set(unrun)) ^ set(search_ids))} differ from the rows'")
    states = {"completed": "COMPLETE", "pruned": "PRUNED"}
    for trial_id in set(by_ray) & set(search_ids):
        t, row = by_ray[trial_id], last.loc[trial_id]
        if t.state.name != states.get(row["status"]):
            problems.append(f"{trial_id}: journal {t.state.name}, rows {row['status']}")
            continue
        mine = rows[rows["trial_id"] == trial_id].set_index("epoch")["metric"]
        if {int(k): round(v, 12) for k, v in t.intermediate_values.items()} != {
                int(k): round(v, 12) for k, v in mine.items()}:
            problems.append(f"{trial_id}: intermediate values differ from the rows' metrics")
        if t.state.name == "COMPLETE" and round(t.value, 12) != round(float(row["metric"]), 12):
            problems.append(f"{trial_id}: value {t.value} vs final row {row['metric']}")
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    if running:
        problems.append(f"Optuna trials still RUNNING: {running}")
    checks.append(Check("journal", not problems, f"{len(by_ray)} Ray trials in {len(trials)} Optuna trials "
                        f"({len(unrun)} suggested but never run: FAIL, no rows); states, values and intermediate "
                        "values " + ("agree with the rows" if not problems else f"disagree: {problems[:5]}"),
                        {"optuna_trials": len(trials), "never_run": unrun, "problems": problems}))

    # 7. the stages
    confirm = last[stage == "confirm"]
    baseline = last[stage == "baseline"]
    want_confirm, want_baseline = confirm_top * confirm_seeds, baseline_seeds
    ok = (len(confirm) == want_confirm and len(baseline) == want_baseline
          and (confirm["status"] == "completed").all() and (baseline["status"] == "completed").all())
    checks.append(Check("stages", ok, f"confirm {len(confirm)}/{want_confirm}, baseline {len(baseline)}/{want_baseline} "
                        "trials, all completed" if ok else f"confirm {len(confirm)}/{want_confirm}, baseline "
                        f"{len(baseline)}/{want_baseline}; statuses {sorted(set(confirm['status']) | set(baseline['status']))}",
                        {"confirm_trials": len(confirm), "baseline_trials": len(baseline)}))

    # 8. report and export on the result
    if run_cli is not None:
        out = []
        for args in (["rspose_tune.report", run_uri, "--no-plots"],
                     ["rspose_tune.export", run_uri, "--backbone", "demo", "--out",
                      str(Path(tempfile.mkdtemp(prefix="soak_export_")) / "demo_rspose.py")]):
            proc = run_cli(args)
            if proc.returncode != 0:
                out.append(f"{args[0]} exit {proc.returncode}: {(proc.stderr or '').strip()[-300:]}")
        checks.append(Check("report/export", not out, "both ran" if not out else "; ".join(out), {"failures": out}))
    return checks


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rspose_tune.bench soak", description=__doc__.split("\n")[0])
    p.add_argument("--num-trials", type=int, default=50)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--grace-epochs", type=int, default=1)
    p.add_argument("--reduction-factor", type=int, default=2)
    p.add_argument("--confirm-top", type=int, default=2)
    p.add_argument("--confirm-seeds", type=int, default=2, help="seeds of the confirm stage and the baseline (>= 2)")
    p.add_argument("--workers", type=int, default=1, help="worker nodes beside the head (each holds one trial)")
    p.add_argument("--train-images", type=int, default=48, help="demo training images (the trials' length)")
    p.add_argument("--node-kills", type=int, default=3)
    p.add_argument("--node-kill-first", type=float, default=60.0, help="seconds after the search starts")
    p.add_argument("--node-kill-every", type=float, default=120.0)
    p.add_argument("--outage-at", type=float, default=150.0, help="seconds after the search starts; <0: none")
    p.add_argument("--outage-s", type=float, default=30.0)
    p.add_argument("--driver-kill-at", type=float, default=240.0, help="seconds after the search starts; <0: none")
    p.add_argument("--clock", choices=CLOCKS, default="seconds",
                   help="what the fault times count: seconds after the search started (jittered by --seed), or "
                        "the result rows in the run's storage (exact: a short search is hit at the same point "
                        "on any machine)")
    p.add_argument("--seed", type=int, default=0, help="the search's seed and the schedule's jitter")
    p.add_argument("--timeout-s", type=float, default=7200.0, help="give up (and fail) after this long")
    p.add_argument("--work-dir", default=None, help="keep everything here (default: a temporary folder, removed)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the schedule and every figure here")
    return p


def _validate(args: argparse.Namespace) -> None:
    for name in ("num_trials", "max_epochs", "grace_epochs", "workers", "train_images"):
        if getattr(args, name) < 1:
            raise SoakUsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("node_kills", "confirm_top"):
        if getattr(args, name) < 0:
            raise SoakUsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.confirm_seeds < 2:
        raise SoakUsageError(f"--confirm-seeds must be >= 2 (the search's rule), got {args.confirm_seeds}")
    if args.node_kill_every <= 0 or args.outage_s <= 0:
        raise SoakUsageError("--node-kill-every and --outage-s must be > 0")
    if args.json is not None and Path(args.json).is_dir():
        raise SoakUsageError(f"--json {args.json!r} is a folder, not a file")


def schedule_of(args: argparse.Namespace) -> list[Fault]:
    """The :func:`schedule` the parsed flags ask for (``<0``: no outage, no driver kill; ``--clock
    rows``: no jitter)."""
    return schedule(node_kills=args.node_kills, node_kill_first=args.node_kill_first,
                    node_kill_every=args.node_kill_every, workers=args.workers,
                    outage_at=args.outage_at if args.outage_at >= 0 else None,
                    driver_kill_at=args.driver_kill_at if args.driver_kill_at >= 0 else None, seed=args.seed,
                    jitter=0.0 if args.clock == "rows" else 0.1)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _validate(args)
    faults = schedule_of(args)
    base = Path(args.work_dir).absolute() if args.work_dir else Path(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, faults, base)
    t0 = time.monotonic()
    try:
        soak.run()
        checks = soak.check()
        soak.keep_storage()
    finally:
        leftovers = soak.stop()
    checks.append(Check("faults", soak.injected_all(), soak.faults_summary(), {"injected": soak.injected}))
    checks.append(Check("cleanup", not leftovers, f"{len(leftovers)} processes of the soak left after its stop"
                        + (f": {leftovers}" if leftovers else ""), {"leftover_pids": leftovers}))
    wall = time.monotonic() - t0
    for check in checks:
        print(check.line())
    print(f"soak: {sum(c.ok for c in checks)}/{len(checks)} checks passed in {wall:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "argv": sys.argv[1:] if argv is None else list(argv), "schedule": [asdict(f) for f in faults],
            "injected": soak.injected, "wall_s": round(wall, 1), "search_runs": soak.search_runs,
            "checks": {c.name: {"ok": c.ok, "summary": c.summary, **c.figures} for c in checks}},
            indent=1, default=str))
    if not args.work_dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if all(c.ok for c in checks) else 1


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            break
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return pids


class Soak:
    """The servers, the search and the fault loop of one soak (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, faults: list[Fault], base: Path):
        self.args, self.faults, self.base = args, faults, base
        self.injected: list[dict[str, Any]] = []
        self.search_runs: list[dict[str, Any]] = []
        self.s3 = S3Server(base / "s3.log")
        self.nodes: list[Node] = []
        self.search: subprocess.Popen | None = None
        self.search_pids: list[int] = []
        self.ray_base: Path | None = None
        venv_bin = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
        env.update(RAY_AUTH_MODE="token", PATH=venv_bin + os.pathsep + env.get("PATH", ""), OMP_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1")
        self.env = env
        self.storage = f"s3://{BUCKET}/runs"

    # ------------------------------------------------------------ start and stop
    def _start_cluster(self) -> None:
        # Short paths: Ray's unix sockets live under each node's temp folder (108-byte limit).
        self.ray_base = Path(tempfile.mkdtemp(prefix="sk", dir="/tmp"))
        homes = [self.ray_base / f"home{i}" for i in range(1 + self.args.workers)]
        for home in homes:
            (home / ".ray").mkdir(parents=True, exist_ok=True)
        subprocess.run([ray_bin(), "get-auth-token", "--generate"], env={**self.env, "HOME": str(homes[0])},
                       check=True, capture_output=True, timeout=60)
        for home in homes[1:]:  # "copy the head's ~/.ray/auth_token to each worker node"
            shutil.copy(homes[0] / ".ray" / "auth_token", home / ".ray" / "auth_token")
        self.address = f"127.0.0.1:{free_port()}"
        extra = ("--num-cpus=1", "--num-gpus=0")
        head = Node(f"{ray_bin()} start --head --port={self.address.split(':')[1]} --include-dashboard=false",
                    home=homes[0], temp=self.ray_base / "n0", env=self.env, log=self.base / "node0.log", extra=extra)
        self.nodes = [head] + [Node(f"{ray_bin()} start --address={self.address}", home=homes[i],
                                    temp=self.ray_base / f"n{i}", env=self.env, log=self.base / f"node{i}.log", extra=extra)
                               for i in range(1, 1 + self.args.workers)]
        self.head_env = {**self.env, "HOME": str(homes[0])}
        head.start()
        wait_for_nodes(self.address, self.head_env, 1)
        for node in self.nodes[1:]:
            node.start()
        wait_for_nodes(self.address, self.head_env, len(self.nodes))

    def _search_command(self, resume: bool) -> list[str]:
        common = [sys.executable, "-m", "rspose_tune.search", "--address", self.address, "--storage", self.storage,
                  "--name", RUN, "--no-dashboard", "--no-report", "--verbose", "0"]
        if resume:
            return common + ["--resume"]
        a = self.args
        return common + ["--backbone", "demo", "--data-root", str(self.data), "--num-trials", str(a.num_trials),
                         "--max-epochs", str(a.max_epochs), "--grace-epochs", str(a.grace_epochs),
                         "--reduction-factor", str(a.reduction_factor), "--scheduler", "asha",
                         "--cpus-per-trial", "1", "--confirm-top", str(a.confirm_top),
                         "--confirm-seeds", str(a.confirm_seeds), "--baseline",
                         "--seed", str(a.seed)]

    def _start_search(self, resume: bool) -> None:
        log = self.base / f"search{len(self.search_runs)}.log"
        with open(log, "wb") as out:
            self.search = subprocess.Popen(self._search_command(resume), env={**self.env, **self.s3.env,
                                                                               "HOME": str(self.ray_base / "home0")},
                                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           cwd=self.base, start_new_session=True)
        self.search_pids.append(self.search.pid)
        self.search_runs.append({"resume": resume, "log": str(log), "started_s": round(self._now(), 1)})

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _rows(self) -> int:
        """The result rows the run's storage holds (every stage's, one file per trial and epoch)."""
        from rspose_tune._storage import filesystem
        from rspose_tune.results import row_files, rows_root

        fs, path = filesystem(f"{self.storage}/{RUN}")
        return len(row_files(fs, rows_root(path)))

    def _clock(self, now: float) -> float:
        """Where the fault schedule stands: ``now`` (seconds), or the rows written so far."""
        return now if self.args.clock == "seconds" else self._rows()

    def run(self) -> None:
        from rspose_tune.demo_data import generate_demo_dataset

        self.data = generate_demo_dataset(self.base / "data", n_train=self.args.train_images, n_val=12)
        self.s3.start()
        self.s3.create_bucket(BUCKET)
        os.environ.update(self.s3.env)  # the checks read the bucket from this process
        self._start_cluster()
        self.t0 = time.monotonic()
        self._start_search(resume=False)
        pending = list(self.faults)
        outage_end: float | None = None
        while True:
            now = self._now()
            if outage_end is not None and now >= outage_end:
                self.s3.resume()
                self.injected[-1]["ended_s"] = round(now, 1)
                outage_end = None
            code = self.search.poll()
            if code is not None:
                self.search_runs[-1].update(exit=code, ended_s=round(now, 1))
                break
            clock = self._clock(now) if pending and outage_end is None else None  # no listing while S3 is out
            if clock is not None and clock >= pending[0].at_s:
                fault = pending.pop(0)
                record = {**asdict(fault), "injected_s": round(now, 1)}
                if self.args.clock == "rows":
                    record["rows"] = clock
                if fault.kind == "node":
                    self._kill_node(self.nodes[1 + fault.node], record)
                elif fault.kind == "outage":
                    self.s3.pause()
                    outage_end = now + self.args.outage_s
                elif fault.kind == "driver":
                    os.killpg(self.search.pid, signal.SIGKILL)
                    self.search.wait(timeout=60)
                    self.search_runs[-1].update(exit=self.search.returncode, ended_s=round(self._now(), 1))
                    self._start_search(resume=True)
                self.injected.append(record)
                continue
            if now > self.args.timeout_s:
                self.search_runs[-1]["timed_out"] = True
                break
            time.sleep(1.0)
        if outage_end is not None:
            self.s3.resume()
        self.not_injected = [asdict(f) for f in pending]

    def _kill_node(self, node: Node, record: dict[str, Any]) -> None:
        """SIGKILL the node's raylet by pid, let its ``ray start --block`` exit, start it again."""
        try:
            os.kill(node.raylet()["pid"], signal.SIGKILL)
        except ValueError:  # no raylet: the node is not up
            record["skipped"] = "no raylet"
            return
        node.proc.wait(timeout=60)
        node.stop()
        node.start()
        wait_for_nodes(self.address, self.head_env, len(self.nodes), timeout_s=120)
        record["restarted_s"] = round(self._now(), 1)

    def injected_all(self) -> bool:
        return not getattr(self, "not_injected", [None]) and not any("skipped" in r for r in self.injected)

    def faults_summary(self) -> str:
        kinds = [r["kind"] for r in self.injected if "skipped" not in r]
        text = (f"{kinds.count('node')} node kills, {kinds.count('outage')} storage outages of "
                f"{self.args.outage_s:.0f} s, {kinds.count('driver')} driver kills injected")
        missed = getattr(self, "not_injected", None)
        if missed is None:
            return text + "; the soak did not run"
        if missed or any("skipped" in r for r in self.injected):
            text += f"; not injected (the search ended or a node was down): {missed + [r for r in self.injected if 'skipped' in r]}"
        return text

    def check(self) -> list[Check]:
        from rspose_tune._asha import asha_rungs

        a = self.args
        last = self.search_runs[-1]
        ok = last.get("exit") == 0
        search = Check("search", ok, f"{len(self.search_runs)} search runs (last exit {last.get('exit')})"
                       + ("" if ok else f"; log tail: {Path(last['log']).read_text()[-1500:]}"),
                       {"runs": self.search_runs})
        try:
            checks = check_run(f"{self.storage}/{RUN}", num_trials=a.num_trials, max_epochs=a.max_epochs,
                               rungs=asha_rungs(a.max_epochs, a.grace_epochs, a.reduction_factor),
                               confirm_top=a.confirm_top, confirm_seeds=a.confirm_seeds,
                               baseline_seeds=a.confirm_seeds, kills=sum(r["kind"] != "outage" for r in self.injected), run_cli=self._cli)
        except (OSError, ValueError, KeyError) as exc:  # e.g. no rows at all: the soak failed
            checks = [Check("storage", False, f"could not read the run: {type(exc).__name__}: {exc}")]
        return [search, *checks]

    def keep_storage(self) -> None:
        """With ``--work-dir``: the bucket's run copied to ``<work-dir>/storage/`` (moto keeps it in memory)."""
        import pyarrow.fs as pafs

        from rspose_tune._storage import filesystem

        if self.args.work_dir and self.s3.proc is not None and self.s3.proc.poll() is None:
            fs, path = filesystem(f"{self.storage}/{RUN}")
            pafs.copy_files(path, str(self.base / "storage"), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())

    def _cli(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *args], env={**self.env, **self.s3.env}, capture_output=True,
                              text=True, timeout=600, cwd=self.base)

    def stop(self) -> list[str]:
        """Stop what this soak started, by process group; the pids of any that outlived it."""
        groups = []
        for pid in self.search_pids:  # every search run's group (a driver's children too)
            groups.append(pid)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.search is not None and self.search.poll() is None:
            self.search.wait(timeout=60)
        for node in reversed(self.nodes):
            node.stop()
            groups.append(node.proc.pid if node.proc else -1)
        self.s3.stop()
        groups.append(self.s3.proc.pid if self.s3.proc else -1)
        mine = _ancestors()  # this process and what started it (their command lines may name the folder)

        folders = [str(self.base)] + ([str(self.ray_base)] if self.ray_base else [])

        def left() -> list[str]:
            return sorted(f"{p['pid']} {p['name']}" for p in processes() if p["pid"] not in mine and (
                p["pgid"] in groups or any(f in part for part in p["cmdline"] for f in folders)))

        deadline = time.monotonic() + 15  # processes of a killed group may take a moment to exit
        while left() and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.ray_base is not None and not self.args.work_dir:
            shutil.rmtree(self.ray_base, ignore_errors=True)
        return left()
