"""PNG plots for :mod:`rspose_tune.report` (matplotlib, Agg canvas; pyplot's global state is unused).

- :func:`plot_curves`: every trial's metric per epoch, by final status (confirm-stage and
  stock-loss baseline trials in their own colours), ASHA rungs marked with their fidelity
  (Spearman ρ between the rung's metric and the final one, DeepCAVE's bands).
- :func:`plot_importance`: one bar per hyperparameter (Optuna importance or the fallback).
- :func:`plot_params`: the metric against each loss hyperparameter (:data:`PARAM_NAMES`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import pandas as pd

__all__ = ["STAGE_STYLE", "STATUS_STYLE", "plot_curves", "plot_importance", "plot_params"]

from rspose_tune.spaces import PARAM_NAMES, loss_param
#: Line style of a trial by its final status: (colour, linestyle, linewidth, alpha, legend label).
STATUS_STYLE = {
    "completed": ("tab:blue", "-", 1.6, 0.9, "completed (full budget)"),
    "pruned": ("tab:orange", "--", 1.0, 0.6, "pruned by ASHA"),
    "error": ("tab:red", ":", 1.2, 0.8, "error"),
    "running": ("tab:gray", "-.", 1.0, 0.6, "unfinished"),
}
#: Trials of the stages after the search: (colour, linestyle, linewidth, alpha, legend label).
STAGE_STYLE = {
    "confirm": ("tab:green", "-", 1.2, 0.8, "confirm (full budget, other seeds)"),
    "baseline": ("tab:purple", "-", 1.6, 0.9, "baseline (stock loss)"),
}
#: Rung line colour by DeepCAVE band of its fidelity ρ.
_BAND_COLOUR = {"very strong": "tab:green", "strong": "tab:olive", "moderate": "tab:orange", "weak": "tab:red"}
_DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike[str]) -> None:
    fig.savefig(os.fspath(path), format="png")


def plot_curves(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    run: str,
    metric_name: str,
    max_epochs: int | None,
    rungs: Sequence[int],
    best_trial: str | None = None,
    fidelity: Sequence = (),
) -> None:
    """Metric per epoch of every trial (``frame``: result rows), coloured by final status.

    ``fidelity``: :class:`rspose_tune.report.RungFidelity` per rung (``rung``, ``rho``, ``band``,
    ``n``): each rung's label shows ρ and its band, the line is coloured by the band, and a
    footnote gives the selection-bias caveat.
    """
    from matplotlib.lines import Line2D

    fig = _figure(8.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    counts: dict[str, int] = {}
    for trial_id, group in frame.groupby("trial_id", sort=True):
        group = group.sort_values("epoch")
        status = str(group["status"].iloc[-1])
        stage = group["stage"].iloc[-1] if "stage" in group else None
        kind = stage if stage in STAGE_STYLE else status
        counts[kind] = counts.get(kind, 0) + 1
        points = group[group["metric"].notna()]
        if points.empty:
            continue
        colour, style, width, alpha, _ = STAGE_STYLE.get(kind) or STATUS_STYLE.get(status, STATUS_STYLE["running"])
        z = 1 if status == "completed" else 2  # short pruned curves on top, else they hide
        ax.plot(points["epoch"], points["metric"], color=colour, linestyle=style, linewidth=width, alpha=alpha,
                marker="o" if len(points) < 3 else None, markersize=3, zorder=z)
        if status in ("pruned", "error"):
            ax.plot(points["epoch"].iloc[-1], points["metric"].iloc[-1], marker="x" if status == "error" else "o",
                    color=colour, markersize=4, alpha=alpha, linestyle="none", zorder=z)
    handles = [Line2D([], [], color=style[0], linestyle=style[1], linewidth=style[2], label=f"{style[4]} ({counts[s]})") for s, style in {**STATUS_STYLE, **STAGE_STYLE}.items()
               if counts.get(s)]
    if best_trial is not None and best_trial in set(frame["trial_id"]):
        best = frame[(frame["trial_id"] == best_trial) & frame["metric"].notna()].sort_values("epoch")
        ax.plot(best["epoch"], best["metric"], color="black", linewidth=2.6, zorder=3)
        handles.append(Line2D([], [], color="black", linewidth=2.6, label=f"best: {best_trial}"))
    fid = {int(f.rung): f for f in fidelity}
    for rung in rungs:
        f = fid.get(int(rung))
        colour = _BAND_COLOUR.get(f.band, "0.45") if f is not None else "0.45"
        ax.axvline(rung, color=colour, linestyle=(0, (1, 2)), linewidth=1.2 if f is not None else 1.0, zorder=0)
        label = f"rung {rung}"
        if f is not None:
            label += f"\nρ={f.rho:.2f} {f.band}\n(n={f.n})" if f.rho is not None else f"\nρ n/a (n={f.n})"
        ax.annotate(label, (rung, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10), va="top",
                    textcoords="offset points", fontsize=7, color=colour if f is not None else "0.35",
                    bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1.0), zorder=5)
    if rungs:
        handles.append(Line2D([], [], color="0.45", linestyle=(0, (1, 2)), label=f"ASHA rungs {list(rungs)}"))
    if max_epochs:
        ax.axvline(max_epochs, color="0.2", linestyle="-", linewidth=0.8, zorder=0)
        handles.append(Line2D([], [], color="0.2", linewidth=0.8, label=f"max_epochs {max_epochs}"))
        ax.set_xlim(0, max_epochs * 1.03)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_name)
    rung_note = "" if rungs else " (ASHA rungs unknown: no budget in metadata)"
    ax.set_title(f"{run}: {metric_name} per epoch, {sum(counts.values())} trials{rung_note}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.85)
    if fid:
        fig.text(0.01, 0.005, "ρ: Spearman(metric at rung, final metric) over the full-budget search trials; "
                 "bands ≥0.7 very strong, ≥0.4 strong, ≥0.3 moderate, else weak.\nBiased sample: only trials "
                 "ASHA promoted reach the full budget.", fontsize=6.5, color="0.3", va="bottom")
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    _save(fig, path)


def plot_importance(
    values: Mapping[str, float], path: str | os.PathLike[str], *, title: str, xlabel: str
) -> None:
    """Horizontal bars, most important on top; NaN (fixed or undefined) shown as ``n/a``."""
    import textwrap

    items = sorted(values.items(), key=lambda kv: (-kv[1] if math.isfinite(kv[1]) else 1.0, kv[0]))
    fig = _figure(7.0, 1.2 + 0.45 * max(len(items), 1))
    ax = fig.add_subplot(1, 1, 1)
    names = [k for k, _ in items][::-1]
    widths = [(v if math.isfinite(v) else 0.0) for _, v in items][::-1]
    bars = ax.barh(names, widths, color="tab:blue")
    for bar, (_, value) in zip(bars, items[::-1]):
        text = f"{value:.2f}" if math.isfinite(value) else "n/a (fixed or constant)"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + text, va="center", fontsize=8)
    ax.set_xlim(0, max([w for w in widths if w > 0] + [0.5]) * 1.35)
    ax.set_xlabel(xlabel)
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_params(
    trials: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    run: str,
    metric_name: str,
    best_trial: str | None = None,
    log_params: Mapping[str, bool] | None = None,
    ranges: Mapping[str, tuple[float, float] | None] | None = None,
    max_epochs: int | None = None,
) -> None:
    """One panel per loss hyperparameter (:data:`PARAM_NAMES`, 4 a row): each trial's last metric
    against it.

    ``trials``: one row per trial (:func:`rspose_tune.report.summarize_trials`). Completed
    trials are filled, pruned/unfinished ones hollow; the colour is the epoch the metric comes
    from (a pruned trial's metric is from fewer epochs, so compare like colours). An off
    coefficient is drawn at 0; an off delta is left out (counted in the panel title). With
    ``ranges`` (the search range of each parameter) the x-axis spans the whole range; log-scale
    ranges use a symlog axis (linear below the range's low end, so 0 = off still shows).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    cols = 4
    rows = -(-len(PARAM_NAMES) // cols)
    fig = _figure(13.5, 3.3 * rows)
    log_params, ranges = dict(log_params or {}), dict(ranges or {})
    shown = trials[trials["metric"].notna()]
    epochs = shown["last_epoch"].astype(float)
    top = float(max_epochs or (epochs.max() if len(epochs) else 1.0))
    norm = Normalize(vmin=0.0, vmax=max(top, 1.0))
    cmap = colormaps["viridis"]
    done = (shown["status"] == "completed").to_numpy()
    axes = []
    for i, name in enumerate(PARAM_NAMES):
        ax = fig.add_subplot(rows, cols, i + 1)
        axes.append(ax)
        x_all = trials[name].astype(float)
        if loss_param(name).kind == "coeff":
            x_all = x_all.fillna(0.0)
        x = x_all[shown.index]
        ok = x.notna().to_numpy()
        colours = cmap(norm(epochs.to_numpy()))
        for filled in (False, True):
            sel = ok & (done == filled)
            if not sel.any():
                continue
            style = dict(color=colours[sel], edgecolors="0.2", linewidths=0.4) if filled else dict(
                facecolors="none", edgecolors=colours[sel], linewidths=1.1)
            ax.scatter(x[sel], shown["metric"][sel], s=30 if filled else 24, zorder=2 if filled else 1, **style)
        if best_trial is not None:
            sel = ((shown["trial_id"] == best_trial) & x.notna()).to_numpy()
            if sel.any():
                ax.scatter(x[sel], shown["metric"][sel], marker="*", s=200, color="red", edgecolors="black",
                           linewidths=0.6, zorder=3)
        values = set(x_all.dropna())
        _set_param_axis(ax, ranges.get(name), bool(log_params.get(name)), has_zero=bool((x_all == 0).any()))
        off = int(x_all.isna().sum())
        title = name
        if len(values) == 1:
            title += f" (fixed {values.pop():g})"
        if off:
            title += f" ({off} off, not shown)"
        if loss_param(name).kind == "coeff" and (x_all == 0).any():
            title += " (0 = off)"
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if i % cols == 0:
            ax.set_ylabel(metric_name, fontsize=9)
    handles = []
    if done.any():
        handles.append(Line2D([], [], marker="o", linestyle="none", color=cmap(1.0), markeredgecolor="0.2",
                              label="completed (final)"))
    if (~done).any():
        handles.append(Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor=cmap(0.3),
                              label="pruned / unfinished (last epoch reached)"))
    if best_trial is not None and (shown["trial_id"] == best_trial).any():
        handles.append(Line2D([], [], marker="*", linestyle="none", color="red", markeredgecolor="black",
                              markersize=12, label="best"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    title = f"{run}: {metric_name} vs each loss hyperparameter ({len(trials)} trials; colour = epoch of the metric)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 0.93, 0.96))
    cax = fig.add_axes((0.94, 0.12, 0.012, 0.76))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label("epoch", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    _save(fig, path)


_NICE_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def _set_param_axis(ax, span: tuple[float, float] | None, log: bool, *, has_zero: bool) -> None:
    """x-axis over the search range ``span``; symlog for log ranges; readable plain tick labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if span is None:
        return
    low, high = float(span[0]), float(span[1])
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return
    if log and low > 0:
        ax.set_xscale("symlog", linthresh=low, linscale=0.3 if has_zero else 0.05)
        ticks = [v for v in _NICE_TICKS if low <= v <= high]
        ticks = sorted({low, *ticks, high} | ({0.0} if has_zero else set()))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim((-0.3 * low if has_zero else low / 1.15), high * 1.15)
    else:
        pad = 0.04 * (high - low)
        ax.set_xlim((min(low, 0.0) if has_zero else low) - pad, high + pad)
