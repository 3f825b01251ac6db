"""``performance_report``: one self-contained HTML page of the work a block of code ran on FaaS.

The name and shape of ``distributed.performance_report``::

    with dask_faas.performance_report("report.html"):
        dask.compute(x, scheduler=ex)
        list(ex.map(f, range(100)))

While the block runs, every invocation record and every ``ComputeReport`` the process produces is
collected (``records.collecting``: the records ride in the functions' responses, so collecting costs
no storage request). On exit the page is written, whether the block succeeded or raised: Bokeh plots
with Bokeh's JavaScript inlined (``bokeh.resources.INLINE``), so the page opens offline and fetches
nothing when viewed. It shows

- the invocation timeline: one bar per invocation from its start to its end on the function's clock
  (the client's submit to the answer's arrival when the function's times are missing), coloured by
  task prefix, hatched for retries, backups, failures, lost and superseded deliveries, with the
  client's submit-to-receive span drawn under it; hovering shows call, attempt, tasks, outcome and
  the platform's request id;
- concurrency over time, the histogram of durations, cold and warm starts, bytes moved by prefix,
  storage requests by kind, GB-seconds and estimated cost, and a table of every compute's
  ``ComputeReport``.

Bokeh is the optional ``report`` extra (``pip install dask-faas[report]``), imported on entry so that
a missing extra fails before the work starts, not after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import html
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import records
from .plot import EDGES, intervals, prefix_colors

if TYPE_CHECKING:
    import pandas

    from .scheduler import ComputeReport

REPORT_EXTRA = "pip install dask-faas[report]"
TITLE = "dask-faas performance report"
WIDTH = 1300

# Bokeh's names for the hatches of the timeline's marks (plot.MARKS)
HATCHES = {
    "error": "diagonal_cross",
    "lost": "dot",
    "superseded": "left_diagonal_line",
    "backup": "right_diagonal_line",
    "retry": "horizontal_line",
    "": "blank",
}


def require_bokeh() -> None:
    """Import bokeh, or raise an ImportError naming the extra that installs it."""
    try:
        import bokeh  # noqa: F401
    except ImportError as e:
        raise ImportError(f"dask_faas.performance_report needs bokeh: {REPORT_EXTRA}") from e


def report_path(filename: str | os.PathLike[str]) -> Path:
    """``filename`` as a path, or FileNotFoundError naming its directory when that does not exist."""
    path = Path(filename)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the performance report's directory {str(path.parent)!r} does not exist")
    return path


@contextlib.contextmanager
def performance_report(filename: str | os.PathLike[str] = "dask-faas-report.html") -> Iterator[None]:
    """Write an HTML page of every FaaS invocation and compute run inside the ``with`` block.

    Parameters
    ----------
    filename : str or os.PathLike
        The page to write on exit (replaced atomically when it exists).

    Raises
    ------
    ImportError
        bokeh is not installed (``pip install dask-faas[report]``); raised on entry.
    FileNotFoundError
        The directory of ``filename`` does not exist; raised on entry.

    Examples
    --------
    >>> with dask_faas.performance_report("report.html"):  # doctest: +SKIP
    ...     dask.compute(x, scheduler=ex)
    """
    require_bokeh()
    report_path(filename)  # a page that could not be written fails before the work, not after it
    began = time.time()
    try:
        with records.collecting() as collected:
            yield
    finally:  # also when the block raised: the page shows what ran up to the error
        write(records.frame(list(collected.invocations)), list(collected.computes), filename, began=began)


def write(
    frame: pandas.DataFrame,
    computes: Sequence[ComputeReport],
    filename: str | os.PathLike[str],
    *,
    began: float | None = None,
) -> Path:
    """Write the report page of ``frame`` (invocation records) and ``computes`` to ``filename``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Invocation records, one row each (``records.frame``).
    computes : sequence of ComputeReport
        The computes to tabulate.
    filename : str or os.PathLike
        Where to write; written to a temporary file beside it first, then renamed.
    began : float, optional
        Epoch seconds at which the reported block began (shown in the header).

    Returns
    -------
    pathlib.Path
        The page written.
    """
    path = report_path(filename)
    page = render(frame, computes, began=began)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def render(frame: pandas.DataFrame, computes: Sequence[ComputeReport], *, began: float | None = None) -> str:
    """The report page as one HTML string (Bokeh's JavaScript inlined)."""
    require_bokeh()
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.resources import INLINE

    bars = intervals(frame)
    half = WIDTH // 2 - 10
    layout = column(
        header(bars, computes, began),
        timeline_figure(bars),
        marks_legend(),
        concurrency_figure(bars),
        row(duration_figure(bars, half), cold_start_figure(bars, half)),
        row(bytes_figure(bars, half), storage_figure(computes, half)),
        row(cost_figure(bars, half), cost_summary(bars, computes)),
        compute_table(computes),
    )
    return file_html(layout, INLINE, title=TITLE)


# -- the parts of the page ------------------------------------------------------------------------


def header(bars: pandas.DataFrame, computes: Sequence[ComputeReport], began: float | None) -> Any:
    """The page's title and a one-paragraph summary."""
    from bokeh.models import Div

    when = (
        datetime.datetime.fromtimestamp(began, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if began is not None
        else ""
    )
    span = float(bars["end"].max()) if len(bars) else 0.0
    marks = Counter(bars["mark"])
    noted = ", ".join(
        f"{marks[m]} {m}" for m in ("retry", "backup", "error", "lost", "superseded") if marks[m]
    )
    jobs = ", ".join(sorted({str(j) for j in bars["job"]})) or "none"
    platforms = ", ".join(sorted({str(p) for p in bars["platform"]})) or "none"
    text = (
        f"<h2>{html.escape(TITLE)}</h2><p>{html.escape(when)}<br>"
        f"<b>{len(bars)}</b> invocations ({html.escape(noted or 'no retries, backups or failures')}) "
        f"in <b>{len(computes)}</b> computes over {span:.2f} s; platform {html.escape(platforms)}; "
        f"jobs {html.escape(jobs)}</p>"
    )
    return Div(text=text, width=WIDTH)


def tasks_label(tasks: Any, limit: int = 3) -> str:
    """The first task keys of an invocation, and how many more it ran."""
    keys = [str(t) for t in tasks]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def timeline_figure(bars: pandas.DataFrame) -> Any:
    """One bar per invocation (the ColumnDataSource named ``timeline``), coloured by task prefix."""
    from bokeh.models import ColumnDataSource, HoverTool, Range1d
    from bokeh.plotting import figure

    colors = prefix_colors(bars["prefix"])
    text = lambda column: ["" if v is None else str(v) for v in bars[column]]  # noqa: E731
    source = ColumnDataSource(
        name="timeline",
        data={
            "row": bars["row"].to_numpy(),
            "start": bars["start"].to_numpy(),
            "end": bars["end"].to_numpy(),
            "submitted": bars["submitted_s"].to_numpy(),
            "received": bars["received_s"].to_numpy(),
            "duration": bars["duration"].to_numpy(),
            "clock": text("clock"),
            "call": text("call"),
            "attempt": bars["attempt"].astype(int).to_numpy(),
            "tasks": [tasks_label(t) for t in bars["tasks"]],
            "prefix": text("prefix"),
            "outcome": text("outcome"),
            "mark": text("mark"),
            "request_id": text("request_id"),
            "cold": text("cold"),
            "error": text("error"),
            "color": [colors[str(p)] for p in bars["prefix"]],
            "edge": [EDGES.get(m, "#ffffff") for m in bars["mark"]],
            "hatch": [HATCHES[m] for m in bars["mark"]],
        },
    )
    n = len(bars)
    fig = figure(
        title=f"Invocation timeline: {n} invocations, one bar each (start to end; thin line: the client's "
        "submit to receive)",
        width=WIDTH,
        height=max(260, min(900, 90 + 12 * n)),
        y_range=Range1d(n - 0.5 if n else 0.5, -0.5),
        x_axis_label="seconds since the first submit",
        y_axis_label="invocation",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
    )
    fig.segment(x0="submitted", x1="received", y0="row", y1="row", source=source, color="#888888")
    bar = fig.hbar(
        y="row",
        left="start",
        right="end",
        height=0.8,
        source=source,
        fill_color="color",
        line_color="edge",
        hatch_pattern="hatch",
        hatch_color="#000000",
        hatch_alpha=0.6,
        legend_field="prefix",
    )
    fig.add_tools(
        HoverTool(
            renderers=[bar],
            tooltips=[
                ("call", "@call (attempt @attempt)"),
                ("tasks", "@tasks"),
                ("outcome", "@outcome @mark"),
                ("request id", "@request_id"),
                ("time", "@start{0.000} to @end{0.000} s (@clock clock), ran @duration{0.000} s"),
                ("cold", "@cold"),
                ("error", "@error"),
            ],
        )
    )
    fig.legend.location = "top_right"
    fig.legend.label_text_font_size = "8pt"
    fig.yaxis.visible = n <= 60
    return fig


def marks_legend() -> Any:
    """What the timeline's hatches and outlines mean."""
    from bokeh.models import Div

    meaning = {
        "retry": "a retry (attempt 1 or later)",
        "backup": "a backup of a straggler",
        "error": "the function raised or its answer was refused (red outline)",
        "lost": "no answer: timed out, killed or lost (red outline; its bar ends at the last time known)",
        "superseded": "a duplicate or backup whose result was not taken",
    }
    items = "; ".join(
        f"<i>{HATCHES[m].replace('_', ' ')}</i>: {html.escape(text)}" for m, text in meaning.items()
    )
    return Div(text=f"<p style='font-size:9pt'>Hatches: {items}.</p>", width=WIDTH)


def concurrency_figure(bars: pandas.DataFrame) -> Any:
    """How many invocations ran at each moment (the step line of starts and ends)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    events = sorted([(float(t), 1) for t in bars["start"]] + [(float(t), -1) for t in bars["end"]])
    times, levels, level = [0.0], [0], 0
    for t, step in events:
        level += step
        times.append(t)
        levels.append(level)
    source = ColumnDataSource(name="concurrency", data={"time": times, "running": levels})
    fig = figure(
        title=f"Concurrency: invocations running (peak {max(levels)})",
        width=WIDTH,
        height=220,
        x_axis_label="seconds since the first submit",
        y_axis_label="running",
        tools="xpan,xwheel_zoom,reset,save",
    )
    fig.step(x="time", y="running", source=source, mode="after", line_width=2)
    return fig


def duration_figure(bars: pandas.DataFrame, width: int) -> Any:
    """The histogram of the invocations' durations."""
    import numpy as np
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    durations = bars["duration"].dropna().to_numpy(dtype=float)
    bins = max(1, min(40, int(np.ceil(np.sqrt(len(durations)))) * 2))
    counts, edges = np.histogram(durations, bins=bins) if len(durations) else (np.zeros(0), np.zeros(1))
    source = ColumnDataSource(
        name="durations", data={"count": counts, "left": edges[:-1], "right": edges[1:]}
    )
    median = f", median {np.median(durations):.3f} s" if len(durations) else ""
    fig = figure(
        title=f"Durations (the function's running time) of {len(durations)} of {len(bars)}{median}",
        width=width,
        height=260,
        x_axis_label="seconds",
        y_axis_label="invocations",
        tools="save",
    )
    quads = fig.quad(top="count", bottom=0, left="left", right="right", source=source, line_color="white")
    fig.add_tools(
        HoverTool(renderers=[quads], tooltips=[("seconds", "@left{0.000} to @right{0.000}"), ("n", "@count")])
    )
    return fig


def categories_figure(title: str, name: str, counts: dict[str, float], width: int, unit: str) -> Any:
    """A bar per category (``name`` is the ColumnDataSource's name)."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    labels = list(counts) or ["none"]
    values = [counts.get(label, 0) for label in labels]
    source = ColumnDataSource(name=name, data={"label": labels, "value": values})
    fig = figure(title=title, x_range=labels, width=width, height=260, y_axis_label=unit, tools="save")
    fig.vbar(x="label", top="value", width=0.7, source=source)
    fig.add_tools(HoverTool(tooltips=[("", "@label"), (unit, "@value{0,0.[000]}")]))
    fig.xaxis.major_label_orientation = 0.6 if len(labels) > 5 else 0.0
    return fig


def cold_start_figure(bars: pandas.DataFrame, width: int) -> Any:
    """Cold, warm and unknown starts, counted."""
    kinds = Counter("unknown" if c is None or c != c else ("cold" if c else "warm") for c in bars["cold"])
    counts = {k: kinds[k] for k in ("cold", "warm", "unknown") if kinds[k] or k != "unknown"}
    return categories_figure(
        f"Cold starts: {kinds['cold']} of {len(bars)}", "cold_starts", counts, width, "invocations"
    )


def bytes_figure(bars: pandas.DataFrame, width: int) -> Any:
    """Bytes into and out of the functions, by task prefix."""
    from bokeh.models import ColumnDataSource, NumeralTickFormatter
    from bokeh.plotting import figure

    moved = bars.groupby("prefix", sort=False)[["bytes_in", "bytes_out"]].sum() if len(bars) else None
    prefixes = [str(p) for p in moved.index] if moved is not None else ["none"]
    data = {
        "prefix": prefixes,
        "bytes_in": moved["bytes_in"].to_numpy() if moved is not None else [0],
        "bytes_out": moved["bytes_out"].to_numpy() if moved is not None else [0],
    }
    total_in, total_out = int(sum(data["bytes_in"])), int(sum(data["bytes_out"]))
    fig = figure(
        title=f"Bytes moved: {total_in:,} in, {total_out:,} out",
        x_range=prefixes,
        width=width,
        height=260,
        tools="hover,save",
        tooltips=[("prefix", "@prefix"), ("$name", "@$name{0,0}")],
    )
    fig.vbar_stack(
        ["bytes_in", "bytes_out"],
        x="prefix",
        width=0.7,
        color=["#1f77b4", "#ff7f0e"],
        source=ColumnDataSource(name="bytes", data=data),
        legend_label=["in", "out"],
    )
    fig.yaxis.formatter = NumeralTickFormatter(format="0.0 b")
    fig.xaxis.major_label_orientation = 0.6 if len(prefixes) > 4 else 0.0
    fig.legend.location = "top_left"
    return fig


def storage_figure(computes: Sequence[ComputeReport], width: int) -> Any:
    """Storage requests of the computes, by kind."""
    kinds: Counter[str] = Counter()
    for report in computes:
        kinds.update(report.storage_requests)
    counts = {k: kinds[k] for k in ("put", "get", "head", "list", "delete")} | dict(kinds)
    title = f"Storage requests: {sum(kinds.values()):,} in {len(computes)} computes"
    return categories_figure(title, "storage_requests", counts, width, "requests")


def gb_seconds(bars: pandas.DataFrame) -> pandas.Series:
    """Each invocation's GB-seconds: its memory limit times its running time."""
    return bars["memory_mb"].astype(float) / 1024 * bars["running_s"].astype(float).fillna(0.0)


def cost_figure(bars: pandas.DataFrame, width: int) -> Any:
    """GB-seconds by task prefix (what FaaS platforms bill)."""
    by_prefix = gb_seconds(bars).groupby(bars["prefix"].astype(str), sort=False).sum() if len(bars) else None
    counts = {str(k): float(v) for k, v in by_prefix.items()} if by_prefix is not None else {}
    total = sum(counts.values())
    return categories_figure(f"GB-seconds by prefix: {total:.3f}", "gb_seconds", counts, width, "GB-s")


def cost_summary(bars: pandas.DataFrame, computes: Sequence[ComputeReport]) -> Any:
    """The estimated cost of the computes, and the GB-seconds of all invocations."""
    from bokeh.models import Div

    priced = [report.cost_usd for report in computes if not math.isnan(report.cost_usd)]
    unpriced = len(computes) - len(priced)
    gb_s = sum(report.gb_s for report in computes)
    missing = f"; {unpriced} not priced (no entry in <code>faas.prices</code>)" if unpriced else ""
    text = (
        "<h3>Cost</h3>"
        f"<p>Estimated cost of the {len(computes)} computes: <b>${sum(priced):.6f}</b>{missing} "
        f"({gb_s:.3f} GB-s, their invocations and storage requests, at the <code>faas.prices</code> "
        "table's rates)."
        f"<br>All {len(bars)} invocations ran {float(gb_seconds(bars).sum()):.3f} GB-s "
        "(memory limit &times; running time), map and submit calls included.</p>"
    )
    return Div(text=text, width=WIDTH // 2 - 10)


def report_cell(value: Any) -> str:
    """A ComputeReport value as table text."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:,}" for k, v in value.items() if v) or "-"
    if isinstance(value, float):
        return f"{value:.6f}" if 0 < abs(value) < 0.01 else f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def compute_table(computes: Sequence[ComputeReport]) -> Any:
    """A table with one row per compute, one column per ComputeReport field."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, DataTable, Div, TableColumn

    rows = [dataclasses.asdict(report) for report in computes]
    names = list(rows[0]) if rows else ["tasks"]
    data = {"compute": [str(i + 1) for i in range(len(rows))]}
    data |= {name: [report_cell(r[name]) for r in rows] for name in names}
    columns = [TableColumn(field="compute", title="#", width=30)]
    columns += [TableColumn(field=name, title=name) for name in names]
    table = DataTable(
        source=ColumnDataSource(name="computes", data=data),
        columns=columns,
        width=WIDTH,
        height=min(600, 40 + 28 * max(1, len(rows))),
        index_position=None,
        reorderable=False,  # reordering needs jquery-ui, which Bokeh does not bundle
    )
    return column(Div(text=f"<h3>Computes ({len(rows)}): their ComputeReport</h3>", width=WIDTH), table)
