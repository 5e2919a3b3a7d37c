"""The table of every result on report.html (and compare.html): plain HTML and a few lines of
JavaScript to sort it (click a header) and filter it. A column's filter is a choice of that column's
values and matches exactly (batch 1 is not 16, fp32 is not fp32+cl); the search box matches any
text in a row. An error sits in its row's status cell, under a header, with its whole text in the
tooltip.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pandas as pd

from resbench.report.analysis import by_input, finite
from resbench.report.loading import beat_peak
from resbench.report.serving import shows_shape, sustained_text
from resbench.report.text import OVER_PEAK, diff_text, flags

FILTER_COLUMNS = ("model", "batch", "device", "mode", "setting", "status", "scenario", "streams",
                  "threads")  # fmt: skip
SHAPE_COLUMNS = ("scenario", "streams", "threads")

# Sorting: numbers by their data-v value, text by locale. Filtering: a column's select keeps the rows
# whose cell value (data-f) equals its choice exactly; the search box keeps rows holding its text.
TABLE_SCRIPT = """
(function () {
  const table = document.getElementById('results');
  if (!table) return;
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  const key = (row, i) => {
    const cell = row.cells[i];
    const v = cell.dataset.v;
    return v === undefined || v === '' ? null : (isNaN(Number(v)) ? v : Number(v));
  };
  heads.forEach((th, i) => th.addEventListener('click', () => {
    const dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    heads.forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', dir);
    const sign = dir === 'ascending' ? 1 : -1;
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a, i), y = key(b, i);
      if (x === null) return y === null ? 0 : 1;
      if (y === null) return -1;
      if (typeof x === 'number' && typeof y === 'number') return sign * (x - y);
      return sign * String(x).localeCompare(String(y));
    });
    rows.forEach(r => body.appendChild(r));
  }));
  const selects = Array.from(document.querySelectorAll('#filters select'));
  const search = document.getElementById('search');
  const filter = () => {
    let shown = 0;
    const text = search ? search.value.trim().toLowerCase() : '';
    Array.from(body.rows).forEach(row => {
      const keep = selects.every(sel => {
        return sel.value === '' || row.cells[Number(sel.dataset.col)].dataset.f === sel.value;
      }) && (!text || row.textContent.toLowerCase().includes(text));
      row.style.display = keep ? '' : 'none';
      shown += keep;
    });
    document.getElementById('shown').textContent = shown;
  };
  selects.forEach(sel => sel.addEventListener('change', filter));
  if (search) search.addEventListener('input', filter);
})();
"""


# (header, column, format) of the results table; format None: text
TABLE_COLUMNS = [
    ("model", "model", None),
    ("batch", "batch_size", "{:.0f}"),
    ("device", "device", None),
    ("mode", "mode", None),
    ("setting", "setting", None),
    ("status", "status", None),
    # how calls were issued (issue 23): shown where a row is not single-stream, or the rows ran at
    # more than one stream or thread count (serving.shows_shape)
    ("scenario", "scenario", None),
    ("streams", "streams", "{:.0f}"),
    ("threads", "threads", "{:.0f}"),
    ("queue ms", "max_queue_ms", "{:g}"),
    ("p99 bound ms", "target_p99_ms", "{:g}"),
    ("offered req/s", "offered_rate", "{:,.1f}"),
    ("achieved req/s", "achieved_rate", "{:,.1f}"),
    ("sustained", "sustained_text", None),
    ("img/s", "throughput_ips", "{:,.1f}"),
    ("vs fp32", "speedup", "{:.2f}x"),
    ("img/J", "images_per_joule", "{:.2f}"),
    ("median ms", "latency_ms_median", "{:.2f}"),
    ("p99 ms", "latency_ms_p99", "{:.2f}"),
    ("p99.9 ms", "latency_ms_p999", "{:.2f}"),
    ("mean batch", "mean_batch", "{:.2f}"),
    ("max batch", "max_batch", "{:.0f}"),
    ("IQR %", "iqr_fraction", "{:.0%}"),
    ("repeat spread", "repeat_spread", "{:.0%}"),
    ("forks", "forks", "{:.0f}"),
    ("fork spread", "fork_spread", "{:.0%}"),
    ("forks disagree", "forks_disagree", None),  # no headline figure: why
    ("iterations", "iterations", "{:.0f}"),
    ("max abs diff", "max_abs_diff", "{:.2g}"),
    ("top-1 agree", "top1_agreement", "{:.0%}"),
    # scored on labelled images (--eval-data): shown only where a run has them
    ("top-1", "top1_accuracy", "{:.2%}"),
    ("top-5", "top5_accuracy", "{:.2%}"),
    ("drop, points", "accuracy_drop", "{:.2f}"),
    ("McNemar p", "accuracy_drop_p", "{:.2g}"),
    ("KL, nats", "kl_divergence", "{:.2g}"),
    ("one-off s", "one_off_s", "{:.1f}"),
    ("computed in", "effective_precision", None),
    ("kernel", "compute_kernel", None),
    ("kernels", "kernels", None),  # every convolution kernel of one call (PyTorch CPU rows)
    ("reorders", "reorders", "{:.0f}"),
    ("MFU", "mfu", "{:.0%}"),
    ("peak probe", "peak_probe", None),
    ("BW", "bandwidth_fraction", "{:.0%}"),
    ("bound", "bound", None),
    ("peak MB", "peak_memory_mb", "{:,.0f}"),
    ("foreign cores", "foreign_cpu", "{:.2f}"),
    ("got quiet", "quiet_text", None),
    ("quiet wait s", "quiet_wait_s", "{:.1f}"),
]
LONG_TEXT = 32  # characters past which a text cell keeps to one line, its whole text on hover
ERROR_SHOWN = 100  # characters of an error in its status cell; the whole text in its tooltip


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _text_cell(r, col: str) -> str:
    """A text cell: shown text, sort key (data-v) and exact filter value (data-f)."""
    raw = _text(r[col])
    shown, tip = raw, ""
    if col == "setting":
        shown += flags(r)
    if col == "status" and _text(r.get("error")):
        tip = f"{raw}: {r['error']}"  # the error in the labelled status column, not an extra one
        shown = tip if len(tip) <= ERROR_SHOWN else tip[: ERROR_SHOWN - 1] + "\u2026"
    long = not tip and len(shown) > LONG_TEXT
    tip = tip or (raw if long else "")
    title = f' title="{html.escape(tip)}"' if tip else ""
    text = (
        f'<span class="error">{html.escape(shown)}</span>'
        if tip and not long
        else html.escape(shown)
    )
    kind = "text long" if long else "text"
    return (
        f'<td class="{kind}" data-v="{html.escape(shown)}" data-f="{html.escape(raw)}"{title}>'
        f"{text}</td>"
    )


def items_html(lines: Sequence[str]) -> str:
    """A plain list, each line escaped."""
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def _number_cell(r, col: str, form: str) -> str:
    value = r[col]
    number = finite(value)
    broken = bool(r.get("diff_not_finite") or False)  # outputs held NaN or Inf
    if col == "max_abs_diff" and broken:
        text = diff_text(value)  # said, never left blank like an unknown
    elif col == "top1_agreement" and broken:
        number, text = None, "n/a"  # a top-1 over NaN logits is no agreement
    elif col == "mfu" and beat_peak(r.get("peak_exceeded"), value):
        number, text = None, OVER_PEAK  # never above 100%: the row beat its probe's peak
    elif col == "bandwidth_fraction" and r.get("over_roof") is True:
        number, text = None, "over roof"  # the naive byte count does not describe what ran
    elif number is not None:
        text = form.format(number)
    else:
        text = ""
    key = "" if number is None else repr(number)
    return f'<td data-v="{key}" data-f="{html.escape(text)}">{text}</td>'


def _filter_select(header: str, i: int, frame: pd.DataFrame, col: str, form) -> str:
    """A select of the column's distinct values (numbers in order), matched exactly."""
    values = frame[col].dropna().unique()
    if form is None:
        # numbers as text ("1", "16", "128") in number order, then words in alphabetical order
        key = lambda v: (finite(v) is None, finite(v) or 0, v)  # noqa: E731
        options = sorted({_text(v) for v in values} - {""}, key=key)
    else:
        options = list(dict.fromkeys(form.format(v) for v in sorted({float(v) for v in values})))
    items = "".join(f'<option value="{html.escape(o)}">{html.escape(o)}</option>' for o in options)
    return (
        f'<label>{html.escape(header)} <select data-col="{i}"><option value="">all</option>'
        f"{items}</select></label> "
    )


def results_table_html(frame: pd.DataFrame, columns=TABLE_COLUMNS) -> str:
    """A sortable, filterable HTML table of every row of ``frame``."""
    shape = columns is not TABLE_COLUMNS or shows_shape(frame)  # compare's table: as it is given
    frame = by_input(frame, threads=not shape).copy()  # a row per input size (and thread count)
    if "sustained" in frame:
        frame["sustained_text"] = [sustained_text(v) or None for v in frame["sustained"]]
    if "latency_ms_iqr" in frame:
        frame["iqr_fraction"] = frame["latency_ms_iqr"] / frame["latency_ms_median"]
    if "quiet" in frame:
        frame["quiet_text"] = frame["quiet"].map({True: "yes", False: "no"})
    known = {c for c in frame if frame[c].notna().any()}
    if _any(frame, "diff_not_finite"):
        known.add("max_abs_diff")  # NaN there is said, not an unknown
    if _any(frame, "peak_exceeded"):
        known.add("mfu")  # "over peak" is said, not left blank
    if _any(frame, "over_roof"):
        known.add("bandwidth_fraction")  # "over roof" too
    if not shape:
        known -= set(SHAPE_COLUMNS)
    if "max_queue_ms" in frame and not (pd.to_numeric(frame["max_queue_ms"]).fillna(0) > 0).any():
        known.discard("max_queue_ms")  # 0: no batcher window (every row but a server's)
    columns = [c for c in columns if c[1] in known]
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in columns)
    boxes = "".join(
        _filter_select(h, i, frame, col, form)
        for i, (h, col, form) in enumerate(columns)
        if h in FILTER_COLUMNS
    )
    boxes += '<label>search <input id="search" placeholder="any text"></label> '
    body = []
    for _, r in frame.iterrows():
        cells = [
            _text_cell(r, col) if form is None else _number_cell(r, col, form)
            for _, col, form in columns
        ]
        distrusted = (
            bool(flags(r))
            or bool(r.get("diff_not_finite") or False)
            or "under load" in str(r.get("verdict", ""))
        )
        body.append(f"<tr{' class=distrusted' if distrusted else ''}>{''.join(cells)}</tr>")
    return (
        f'<p id="filters">{boxes} showing <span id="shown">{len(frame)}</span> of {len(frame)} '
        f"rows; click a header to sort. Rows in brown: noisy, throttled, under load or with outputs "
        "that were not finite.</p>\n"
        f'<table class="results" id="results"><thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table>"
    )


def _any(frame: pd.DataFrame, col: str) -> bool:
    return col in frame and bool(frame[col].eq(True).any())
