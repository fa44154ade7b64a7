"""The report's text of :mod:`rspose_tune.report`: the Table E.8-shaped Markdown table, the notes
below it (runner-up, confirm stage, baseline, fidelity) and the CSV."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from rspose_tune.spaces import COMPONENT_LABELS, LOSS_PARAMS, component_names, is_off
from rspose_tune.spaces import COMPONENTS as _SPACE_COMPONENTS

from ._backbone import BackboneReport
from ._stats import CONFIDENCE, t_interval

__all__ = ["COMPONENTS", "OFF", "TABLE_HEADER", "format_markdown", "format_notes", "table_rows", "write_csv"]

#: The loss components and their Table E.8 labels (one "δ / c" column each).
COMPONENTS = tuple((c, COMPONENT_LABELS[c]) for c in _SPACE_COMPONENTS)  # (component, its column head)
#: The loss hyperparameters of no component (``pos_thr``): one column each, after the components.
_PLAIN_PARAMS = tuple(p for p in LOSS_PARAMS if p.component is None)
OFF = "–"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    text = f"{value:.{digits}g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _fmt_hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _component_cell(params: Mapping[str, float | None], component: str) -> str:
    delta, coeff_name = component_names(component)
    coeff = params.get(coeff_name)
    if is_off(coeff):
        return OFF
    return f"{_fmt(params.get(delta))} / {_fmt(coeff)}"


TABLE_HEADER = ("Backbone", *(f"{label} δ / c" for _, label in COMPONENTS), *(p.label or p.name for p in _PLAIN_PARAMS),
                "Metric", "AR", "Spearman", "Trials", "Pruned", "GPU-h", "Full-budget GPU-h", "CPU-h", "Runner-up")


def table_rows(reports: Sequence[BackboneReport]) -> list[list[str]]:
    """The cells of the Table E.8-shaped table (see :data:`TABLE_HEADER`)."""
    rows = []
    for r in reports:
        if r.best_trial is None:
            comps = ["(no completed trial)"] + [""] * (len(COMPONENTS) + len(_PLAIN_PARAMS) - 1)
            metric = f"{r.metric_name or 'metric'}: –"
        else:
            comps = [_component_cell(r.params, c) for c, _ in COMPONENTS]
            comps += [_fmt(r.params.get(p.name)) for p in _PLAIN_PARAMS]
            value, source = r.chosen_metric
            metric = f"{r.metric_name} {_fmt(value, 4)}" + (f" ({source})" if r.chosen_by_confirm else "")
        trials = f"{r.trials}" + (f" ({r.errors} failed)" if r.errors else "")
        trials += f" ({r.running} unfinished)" if r.running else ""
        rows.append([
            r.backbone, *comps, metric, _fmt(r.ar, 4), _fmt(r.spearman, 3), trials, str(r.pruned),
            _fmt_hours(r.gpu_hours), _fmt_hours(r.full_budget_gpu_hours), _fmt_hours(r.cpu_hours), r.noise_flag,
        ])
    return rows


def format_markdown(reports: Sequence[BackboneReport]) -> str:
    """A padded Markdown table (readable as plain text too)."""
    rows = [list(TABLE_HEADER), *table_rows(reports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def format_notes(reports: Sequence[BackboneReport]) -> str:
    """One paragraph per backbone: the selected trial, the runner-up check and caveats."""
    lines = []
    for r in reports:
        if r.best_trial is None:
            lines.append(f"- {r.backbone}: no trial reached the full budget (status completed) in runs "
                         f"{r.runs}; {r.pruned} pruned, {r.errors} failed, {r.running} unfinished.")
        else:
            second = (f"runner-up {r.runner_up_trial} ({_fmt(r.runner_up_metric, 4)}): {r.noise_flag}; "
                      if r.runner_up_trial else "")
            lines.append(f"- {r.backbone}: best trial {r.best_trial} (run {r.best_run}, {r.mode} "
                         f"{r.metric_name} = {_fmt(r.metric, 4)}); {second}{r.noise_note}.")
        if r.gpus_per_trial == 0:
            lines.append(f"  CPU-only trials: 0 GPU-h; {_fmt_hours(r.cpu_hours)} CPU-h spent.")
        lines.extend(_trust_lines(r))
        for note in r.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"


def _trust_lines(r: BackboneReport) -> list[str]:
    lines = []
    if r.confirmed:
        lines.append(f"  Confirm stage ({r.metric_name}, mean and {CONFIDENCE:.0%} Student-t interval over the confirm "
                     "seeds; the search run that picked each setting is left out, its metric is optimistic):")
        for i, c in enumerate(r.confirmed):
            interval = "no interval (1 seed)" if c.low is None else f"[{_fmt(c.low, 4)}, {_fmt(c.high, 4)}]"
            comps = ", ".join([*(f"{label} {_component_cell(c.params, comp)}" for comp, label in COMPONENTS),
                               *(f"{p.name} {_fmt(c.params.get(p.name))}" for p in _PLAIN_PARAMS)])
            lines.append(f"    {'winner   ' if i == 0 else 'runner-up' if i == 1 else '         '} "
                         f"{_fmt(c.mean, 4)} {interval} on seeds {sorted(c.by_seed)} (search {c.search_trial}: "
                         f"{_fmt(c.search_metric, 4)}); {comps}")
        if r.confirm_comparison is not None:
            lines.append(f"    winner - runner-up: {r.confirm_comparison.text()}: {r.confirm_verdict}.")
        else:
            lines.append(f"    {r.confirm_verdict}.")
    if r.baseline_by_seed:
        mean, low, high = t_interval(list(r.baseline_by_seed.values()))
        interval = "" if low is None else f" [{_fmt(low, 4)}, {_fmt(high, 4)}]"
        lines.append(f"  Stock-loss baseline (the base config's own loss): {_fmt(mean, 4)}{interval} on seeds "
                     f"{sorted(r.baseline_by_seed)}.")
        if r.baseline_delta is not None:
            better = r.baseline_delta.distinguishable
            word = ("" if better is None else
                    " (distinguishable from 0)" if better else " (NOT distinguishable from 0)")
            lines.append(f"  Δ {r.metric_name} chosen setting - baseline: {r.baseline_delta.text()}{word}.")
    lines.extend("  " + line for line in r.fidelity_notes)
    return lines


def write_csv(reports: Sequence[BackboneReport], path: str | os.PathLike[str]) -> None:
    frame = pd.DataFrame([r.record() for r in reports])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
