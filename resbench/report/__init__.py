"""A run folder -> answers, markdown tables, CSV, plots and report.html; two runs -> a comparison.

Usage: ``python -m resbench.report RUN [--compare OLD] [--max-accuracy-drop POINTS]`` (see
``--help``). Modules, each importing only those before it: ``loading`` (runs and pytest-benchmark
JSON -> Results), ``analysis`` (speed-ups, answers, the roofline, the accuracy picks and Pareto
front), ``load`` (the load rule, its warning and the answers it withholds), ``text`` (how numbers
and rows are written), ``caveats`` (every warning a summary and page open with), ``accuracy`` (the answers and
table of rows scored on labelled images), ``tables`` (markdown), ``plots`` (PNG), ``tradeoff``
(images/s against accuracy drop, PNG), ``serving`` (offline and server rows: what a machine
serves, their table, the latency curves' points), ``serving_plot`` (p99 against offered rate, PNG
and Plotly), ``table_html`` (the page's table of every result), ``html`` (report.html),
``significance`` (the moderated t on fork medians and the verdicts), ``accuracy_compare`` (a
scored row's top-1 change between runs), ``prior`` (one process a
side: the A/A spread between processes), ``matching`` (which rows of two runs pair up, and why the
others do not), ``fingerprint`` (what differs between two runs' machines), ``serving_compare``
(what a pair of serving rows is judged on), ``compare`` (two runs), ``cli`` (writing outputs,
``main``).
"""

from __future__ import annotations

from resbench.report.analysis import (
    BASELINE_SETTING,
    LOAD_ANY_CORES,
    LOAD_MEDIAN_CORES,
    MAX_ACCURACY_DROP,
    accuracy_picks,
    answers,
    headline,
    pareto_front,
    roofline,
    speedups_per_batch,
    with_speedups,
)
from resbench.report.cli import (
    build_parser,
    finish_run,
    main,
    write_comparison,
    write_outputs,
    write_report,
)
from resbench.report.compare import compare, compare_markdown
from resbench.report.load import load_warning, run_load
from resbench.report.loading import (
    ENV_FILE,
    MAX_BATCH_FILE,
    RESULTS_FILE,
    load,
    load_pytest_benchmark,
    load_run,
    read_env,
    read_jsonl,
    read_max_accuracy_drop,
    read_results,
    read_results_file,
    results_frame,
)
from resbench.report.plots import colours, pyplot
from resbench.report.tables import summary_markdown

__all__ = [
    "BASELINE_SETTING",
    "ENV_FILE",
    "LOAD_ANY_CORES",
    "LOAD_MEDIAN_CORES",
    "MAX_ACCURACY_DROP",
    "MAX_BATCH_FILE",
    "RESULTS_FILE",
    "accuracy_picks",
    "answers",
    "build_parser",
    "colours",
    "compare",
    "compare_markdown",
    "finish_run",
    "headline",
    "load",
    "load_pytest_benchmark",
    "load_run",
    "load_warning",
    "main",
    "pareto_front",
    "pyplot",
    "read_env",
    "read_jsonl",
    "read_max_accuracy_drop",
    "read_results",
    "read_results_file",
    "results_frame",
    "roofline",
    "run_load",
    "speedups_per_batch",
    "summary_markdown",
    "with_speedups",
    "write_comparison",
    "write_outputs",
    "write_report",
]
