"""Lithops' two plots of a job, as images: the invocation timeline and the histogram of durations.

``timeline(frame, filename)`` draws, from a frame of invocation records (``records.frame``, as
``FaasExecutor.invocations()`` returns it):

- the timeline: one horizontal bar per invocation from its start to its end on the function's clock
  (from the client's submit to the answer's arrival when the function's times are missing), coloured
  by task prefix, hatched when it was a retry, a backup or did not end well; the client's submit and
  receive times are marked on the same row;
- the histogram of the invocations' durations (the function's own measured running time).

matplotlib is imported only when drawing (the ``plot`` extra: ``pip install dask-faas[plot]``), on its
Agg canvas (no display, no pyplot state). ``intervals`` is the pure part, shared with the HTML
performance report: where each bar starts and ends.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

PLOT_EXTRA = "pip install dask-faas[plot]"

# Category10, then Category20's lighter half: distinct enough for a legend of task prefixes
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)  # fmt: skip

# how a bar is marked, by what happened to its invocation (the first that applies wins)
MARKS = ("error", "lost", "superseded", "backup", "retry", "")
HATCHES = {"error": "xx", "lost": "..", "superseded": "\\\\", "backup": "//", "retry": "--", "": ""}
EDGES = {"error": "#b00000", "lost": "#b00000", "superseded": "#555555", "backup": "#000000"}


def prefix_colors(prefixes: Any) -> dict[str, str]:
    """A colour per task prefix, in order of first appearance (the palette repeats past 20)."""
    unique = dict.fromkeys(str(p) for p in prefixes)
    return dict(zip(unique, itertools.cycle(PALETTE), strict=False))


def mark(outcome: str, attempt: int, backup: bool) -> str:
    """What a bar shows besides its prefix: one of ``MARKS``."""
    if outcome in ("error", "lost", "superseded"):
        return outcome
    if backup:
        return "backup"
    return "retry" if attempt > 0 else ""


def intervals(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Where each invocation's bar lies, in seconds since the first submit.

    Parameters
    ----------
    frame : pandas.DataFrame
        Invocation records, one row each (the columns of ``records.FIELDS``).

    Returns
    -------
    pandas.DataFrame
        The rows of ``frame`` in order of their start, with added columns ``start`` and ``end`` (the
        bar: the function's ``started``/``ended`` when both are known, else the client's ``submitted``
        and ``received``; an invocation never answered ends at the latest time in the frame),
        ``clock`` (``"function"`` or ``"client"``: which times the bar shows), ``submitted_s`` and
        ``received_s`` (the client's times, NaN when never answered), ``duration`` (the function's
        ``running_s`` when measured, else ``ended - started``; NaN when neither), ``mark`` (see
        ``mark``) and ``row`` (0, 1, ... in that order).
    """
    import pandas as pd

    out = frame.copy()
    if out.empty:
        for column in ("start", "end", "submitted_s", "received_s", "duration", "row"):
            out[column] = pd.Series(dtype=float)
        out["clock"] = pd.Series(dtype=str)
        out["mark"] = pd.Series(dtype=str)
        return out
    times = out[["submitted", "started", "ended", "received"]].astype(float)
    origin = times["submitted"].min()
    latest = times.max(axis=None)
    on_function = times["started"].notna() & times["ended"].notna()
    start = times["started"].where(on_function, times["submitted"])
    end = times["ended"].where(on_function, times["received"].fillna(latest))
    out["start"] = start - origin
    out["end"] = end.where(end >= start, start) - origin  # a skewed clock never draws a negative bar
    out["clock"] = on_function.map({True: "function", False: "client"})
    out["submitted_s"] = times["submitted"] - origin
    out["received_s"] = times["received"] - origin
    running = out["running_s"].astype(float)
    out["duration"] = running.where(running.notna(), (times["ended"] - times["started"]).clip(lower=0))
    out["mark"] = [
        mark(str(o), int(a), bool(b))
        for o, a, b in zip(out["outcome"], out["attempt"], out["backup"], strict=True)
    ]
    out = out.sort_values(["start", "submitted_s"], kind="stable").reset_index(drop=True)
    out["row"] = range(len(out))
    return out


def matplotlib_figure_class() -> type[Figure]:
    """matplotlib's ``Figure``, or an ImportError naming the extra that installs it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"dask_faas.plot needs matplotlib: {PLOT_EXTRA}") from e
    return Figure


def draw_timeline(ax: Any, bars: pandas.DataFrame) -> None:
    """One bar per invocation on ``ax`` (a matplotlib Axes), client submit/receive marked."""
    from matplotlib.patches import Patch

    colors = prefix_colors(bars["prefix"])
    ax.barh(
        bars["row"],
        bars["end"] - bars["start"],
        left=bars["start"],
        height=0.8,
        color=[colors[str(p)] for p in bars["prefix"]],
        edgecolor=[EDGES.get(m, "none") for m in bars["mark"]],
        hatch=[HATCHES[m] for m in bars["mark"]],
        linewidth=0.8,
    )
    ax.scatter(bars["submitted_s"], bars["row"], marker="|", color="#333333", s=30, label="submitted")
    answered = bars[bars["received_s"].notna()]
    ax.scatter(answered["received_s"], answered["row"], marker="x", color="#333333", s=14, label="received")
    handles = [Patch(facecolor=c, label=p) for p, c in list(colors.items())[:12]]
    handles += [
        Patch(facecolor="white", edgecolor=EDGES.get(m, "#000000"), hatch=HATCHES[m], label=m)
        for m in MARKS
        if m and (bars["mark"] == m).any()
    ]
    scatter_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + scatter_handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"Invocation timeline ({len(bars)} invocations)")
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("invocation")
    ax.invert_yaxis()
    if bars.empty:
        ax.text(0.5, 0.5, "no invocations", transform=ax.transAxes, ha="center")


def draw_histogram(ax: Any, bars: pandas.DataFrame) -> None:
    """The histogram of the invocations' durations on ``ax``."""
    durations = bars["duration"].dropna()
    ax.hist(durations, bins=max(1, min(40, math.ceil(math.sqrt(len(durations))) * 2)), color=PALETTE[0])
    ax.set_title(f"Invocation durations ({len(durations)} of {len(bars)} measured)")
    ax.set_xlabel("seconds (the function's running time)")
    ax.set_ylabel("invocations")
    if durations.empty:
        ax.text(0.5, 0.5, "no invocations", transform=ax.transAxes, ha="center")


def figures(frame: pandas.DataFrame, *, separate: bool = False) -> list[Figure]:
    """The timeline and the duration histogram as matplotlib figures (not saved).

    Parameters
    ----------
    frame : pandas.DataFrame
        Invocation records (``records.frame``).
    separate : bool
        Two figures (timeline, histogram) instead of one with both.

    Returns
    -------
    list of matplotlib.figure.Figure
        One figure whose first axes is the timeline and second the histogram, or two figures.
    """
    figure = matplotlib_figure_class()
    bars = intervals(frame)
    height = min(14.0, 2.5 + 0.12 * len(bars))
    if separate:
        timeline_fig, histogram_fig = figure(figsize=(11, height)), figure(figsize=(11, 4))
        draw_timeline(timeline_fig.add_subplot(), bars)
        draw_histogram(histogram_fig.add_subplot(), bars)
        made = [timeline_fig, histogram_fig]
    else:
        both = figure(figsize=(11, height + 4))
        top, bottom = both.subplots(2, 1, height_ratios=[height, 4])
        draw_timeline(top, bars)
        draw_histogram(bottom, bars)
        made = [both]
    for fig in made:
        fig.set_layout_engine("tight")
    return made


def timeline(
    frame: pandas.DataFrame, filename: str | os.PathLike[str], *, separate: bool = False, dpi: int = 100
) -> list[Path]:
    """Draw the invocation timeline and the duration histogram into an image.

    Parameters
    ----------
    frame : pandas.DataFrame
        Invocation records (``records.frame``; ``FaasExecutor.invocations()``).
    filename : str or os.PathLike
        The image to write (its suffix picks the format: ``.png``, ``.svg``, ``.pdf``).
    separate : bool
        Write two files instead of one: ``<stem>-timeline<suffix>`` and ``<stem>-histogram<suffix>``
        beside ``filename``.
    dpi : int
        Resolution of raster formats.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install dask-faas[plot]``).
    """
    path = Path(filename)
    made = figures(frame, separate=separate)  # raises the ImportError naming the extra
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    targets = (
        [path.with_name(f"{path.stem}-{part}{path.suffix}") for part in ("timeline", "histogram")]
        if separate
        else [path]
    )
    for fig, target in zip(made, targets, strict=True):
        FigureCanvasAgg(fig)
        fig.savefig(target, dpi=dpi)
    return targets
