"""``python -m rspose_tune.report``: the command line (see :mod:`rspose_tune.report`), its plots
of each run, and their upload to an object store."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rspose_tune._asha import asha_rungs
from rspose_tune._flags import add_run_selection
from rspose_tune._numbers import finite_or_none as _number
from rspose_tune.errors import RSPoseTuneError, cli_error
from rspose_tune.spaces import PARAM_NAMES

from ._backbone import backbone_report
from ._importance import _first_metric_name, param_importance
from ._load import RunData, _get, load_runs, storage_argument
from ._stats import rung_fidelity
from ._summary import summarize_trials
from ._table import format_markdown, format_notes, write_csv

__all__ = ["build_parser", "main", "make_plots", "report_runs", "upload_folder"]


def upload_folder(local_dir: Path, target: str) -> list[str]:
    """Copy the files of ``local_dir`` to ``target`` (a URI) with :mod:`pyarrow.fs`; their new paths."""
    from rspose_tune._storage import copy_file, join

    out = []
    for path in sorted(local_dir.iterdir()):
        copy_file(path, join(target, path.name))
        out.append(join(target, path.name))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rspose_tune.report",
        description="Best RSPose loss setting per backbone (Table E.8 shape), search cost, runner-up "
        "noise check and plots, from the Parquet results of rspose_tune.search.",
    )
    add_run_selection(parser, run_help="only these runs (repeatable; put the storage path before --run)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table and notes as Markdown")
    parser.add_argument("--csv", metavar="PATH", help="also write one row per backbone as CSV (empty = off)")
    parser.add_argument("--plots", metavar="DIR", help="write plots to DIR/<run>/ (default <storage>/<run>/report/)")
    parser.add_argument("--no-plots", action="store_true", help="do not write plots")
    return parser


def make_plots(run: RunData, out_dir: Path, best_trial: str | None) -> list[Path]:
    """Write ``curves.png``, ``importance.png`` and ``params.png`` of one run; return the paths."""
    from . import _plots

    out_dir.mkdir(parents=True, exist_ok=True)
    s = run.settings
    summary = summarize_trials(run.frame, s)
    metric = _first_metric_name(run.frame)
    paths = [out_dir / "curves.png", out_dir / "importance.png", out_dir / "params.png"]
    rungs = asha_rungs(s.max_epochs, s.grace_epochs, s.reduction_factor)
    asha = run.spec is None or run.spec.scheduler == "asha"
    fidelity = rung_fidelity(run.frame, rungs, s.max_epochs) if rungs and asha else []
    _plots.plot_curves(run.frame, paths[0], run=run.name, metric_name=metric, max_epochs=s.max_epochs, rungs=rungs,
                       best_trial=best_trial, fidelity=fidelity)
    importance = param_importance(run)
    _plots.plot_importance(importance.values, paths[1], title=f"{run.name}: {importance.method}",
                           xlabel=importance.label)
    log_params = {n: bool(_get(run.meta, f"search_space.params.{n}.log")) for n in PARAM_NAMES}
    ranges = {}
    for n in PARAM_NAMES:
        low, high = (_number(_get(run.meta, f"search_space.params.{n}.{k}")) for k in ("low", "high"))
        ranges[n] = None if low is None or high is None else (low, high)
    _plots.plot_params(summary, paths[2], run=run.name, metric_name=metric, best_trial=best_trial,
                       log_params=log_params, ranges=ranges, max_epochs=s.max_epochs)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_runs(args.storage, args.run, markdown=args.markdown, csv=args.csv, plot_dir=args.plots,
                       plots=not args.no_plots)


def report_runs(storage: str | None = None, runs: Sequence[str] | None = None, *, markdown: str | None = None,
                csv: str | None = None, plot_dir: str | None = None, plots: bool = True) -> int:
    """``python -m rspose_tune.report STORAGE --run RUNS ...`` after parsing: print the table and the
    notes, write the Markdown, CSV and plots asked for; the exit status (2: one ``error:`` line)."""
    from rspose_tune.runspec import is_uri

    try:
        storage, why = storage_argument(storage, runs)
        found = load_runs(storage, runs, why=why)
        backbones = sorted({b for run in found for b in run.frame["backbone"]})
        reports = [backbone_report(b, found) for b in backbones]
    except RSPoseTuneError as exc:
        return cli_error(exc)
    table, notes = format_markdown(reports), format_notes(reports)
    print(f"Runs under {storage}: {', '.join(r.name for r in found)}\n")
    print(table)
    print(notes)
    if markdown:
        path = Path(markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# RSPose loss search: best settings\n\nRuns: {', '.join(r.name for r in found)}\n\n"
                        f"{table}\n{notes}")
        print(f"wrote {path}")
    if csv:
        write_csv(reports, csv)
        print(f"wrote {csv}")
    if plots:
        best_by_run = {(r.best_run, r.best_trial) for r in reports}
        for run in found:
            best = next((t for rn, t in best_by_run if rn == run.name), None)
            target = f"{run.path.rstrip('/')}/report"
            if plot_dir or not is_uri(run.path):
                out_dir = Path(plot_dir) / run.name if plot_dir else Path(target)
                written = [str(p) for p in make_plots(run, out_dir, best)]
            else:  # an object store: plot locally, then upload
                with tempfile.TemporaryDirectory(prefix="rspose_plots_") as tmp:
                    make_plots(run, Path(tmp), best)
                    written = upload_folder(Path(tmp), target)
            for path in written:
                print(f"wrote {path}")
    return 0
