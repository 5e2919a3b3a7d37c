"""Writing a run's outputs, and the command line: ``python -m resbench.report``."""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from resbench.engine.measure import Result
from resbench.report import accuracy, serving, table_html
from resbench.report import html as page_html
from resbench.report import prior as prior_module
from resbench.report.analysis import MAX_ACCURACY_DROP, headline, results_table, single_stream
from resbench.report.caveats import env_warnings, warnings_for
from resbench.report.compare import (
    FAIL_ON,
    compare_report,
    failing_rows,
    markdown_of,
    shown_table,
)
from resbench.report.loading import (
    ENV_FILE,
    load,
    load_run,
    read_max_accuracy_drop,
    read_max_batch,
    results_frame,
)
from resbench.report.plots import write_plots
from resbench.report.serving_plot import write_latency_plots
from resbench.report.tables import answers_rows, errors, summary_markdown
from resbench.report.tradeoff import PNG as TRADEOFF_PNG
from resbench.report.tradeoff import write_tradeoff

USAGE = """Usage::

    python -m resbench.report results/20261126-220000-cpu
    python -m resbench.report NEW_RUN --compare OLD_RUN
    python -m resbench.report --pytest-benchmark .benchmarks/Linux-.../0001_x.json [--compare OLD]
    python -m resbench.report NEW_RUN --compare OLD_RUN --threshold 5% --fail-on slower  # in CI

Exit codes: 0 written (with --fail-on: and the gate passed); 1 with --fail-on, the gate failed:
a row is slower (significant at p < 0.01 between forks, or with one process a side beyond the A/A
spread of --prior, and beyond --threshold), with --fail-on inconclusive also a row that could not
be told, or no row of the two runs matched (a gate that compared nothing); 1 also when a file could
not be read or written; 2 a usage error (one line on stderr).
"""


def write_report(
    run_dir: Path, title: str | None = None, max_accuracy_drop: float | None = None
) -> dict[str, Path]:
    """results.csv, summary.md, plots/*.png and report.html for a run folder; the paths written.

    ``max_accuracy_drop`` (points): None takes the run's recorded one (``max_accuracy_drop`` in
    run.json's options), else MAX_ACCURACY_DROP.
    """
    run_dir = Path(run_dir)
    env, results, max_batch = load_run(run_dir)
    if max_accuracy_drop is None:
        max_accuracy_drop = accuracy_drop_of(run_dir, results)
    title = title or f"resbench run {run_dir.name}"
    return write_outputs(run_dir, env, results, title, max_batch, max_accuracy_drop)


def accuracy_drop_of(source: Path, results: Sequence[Result]) -> float:
    """The allowed accuracy drop a run folder recorded, else the default (also for a JSON file).

    run.json is read only where a Result was scored on labelled images: elsewhere the bound changes
    nothing, and a report that never needed run.json does not start to fail on it.
    """
    if not any(getattr(r, "top1_accuracy", None) is not None for r in results):
        return MAX_ACCURACY_DROP
    recorded = read_max_accuracy_drop(source) if Path(source).is_dir() else None
    return MAX_ACCURACY_DROP if recorded is None else recorded


def finish_run(run_dir: Path, devices: Sequence[str], budget_s: float = 0.5) -> dict[str, Path]:
    """At a sweep's end: probe each device's memory bandwidth into env.json, then write the report."""
    from resbench import env as env_module
    from resbench.engine import flops

    probes, failed = {}, {}
    for device in devices:
        try:
            probes[device] = flops.measure_bandwidth_gbs(device, budget_s)
        except (RuntimeError, AssertionError) as e:  # a device gone since: the report still comes
            failed[device] = f"{type(e).__name__}: {e}"
    env_module.record(
        Path(run_dir) / ENV_FILE,
        bandwidth_gbs=probes,
        **({"bandwidth_error": failed} if failed else {}),
    )
    return write_report(run_dir)


def write_outputs(
    out_dir: Path,
    env: dict,
    results: Sequence[Result],
    title: str,
    max_batch: Sequence[dict] = (),
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
) -> dict[str, Path]:
    """Every output of a run; ``max_accuracy_drop`` (points) bounds the answers of scored rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "summary": out_dir / "summary.md"}
    results_frame(results).drop(columns=["samples_ms"]).to_csv(paths["csv"], index=False)
    frame = results_table(results, env)
    latency = single_stream(frame)  # the per-batch answers and plots; serving rows: serving's
    summary = summary_markdown(env, results, title, max_batch, max_accuracy_drop)
    plots = write_plots(latency, env, out_dir / "plots")
    plots += write_tradeoff(latency, out_dir / "plots", max_accuracy_drop)
    plots += write_latency_plots(frame, out_dir / "plots")
    if plots:
        summary += (
            "\n## Plots\n\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots) + "\n"
        )
    paths["summary"].write_text(summary)
    groups = list(latency.groupby(["device", "mode"], sort=False))
    opening, shape = serving.opener_lines(frame), serving.shows_shape(frame)
    sections = [("What this machine serves", table_html.items_html(opening))] if opening else []
    sections += [
        (
            f"Answers: {mode} on {device}" + (", single-stream" if shape else ""),
            answers_rows(part, max_accuracy_drop).to_html(index=False, border=0),
        )
        for (device, mode), part in groups
    ]
    for device, part in serving.serving(frame).groupby("device", sort=False):
        table = serving.serving_rows(part).to_html(index=False, border=0)
        legend = f"<p>{html.escape(serving.LEGEND.replace('`', ''))}</p>"
        sections.append((f"Serving on {device}: offline and server", table + legend))
    for (device, mode), part in groups:
        scored = accuracy.accuracy_rows(part, max_accuracy_drop)
        if not scored.empty:
            heading = f"Accuracy: {mode} on {device}, on {accuracy.scored_on(part)}"
            sections.append((heading, scored.to_html(index=False, border=0)))
    figures = page_html.figures_html(frame, env, max_accuracy_drop)
    sections += [("Interactive plots", "\n".join(figures))]
    images = "".join(
        f'<div><img src="plots/{p.name}" alt="{p.stem}"></div>'
        for p in plots
        if not p.name.startswith(("throughput_", "latency_rate_")) and p.name != TRADEOFF_PNG
        # drawn above, interactively
    )
    if images:
        sections.append(("Speed-ups and rooflines", f'<div class="plots">{images}</div>'))
    sections.append(("Every result", table_html.results_table_html(frame)))
    failed = errors(frame)
    if failed:
        sections.append(("Errors", table_html.items_html(failed)))
    warns = [*env_warnings(env), *warnings_for(results, frame, env.get("logical_cores"))]
    text = page_html.page(title, headline(results), warns, sections, env)
    paths["html"] = page_html.write_page(out_dir / "report.html", text)
    for p in plots:
        paths[p.stem] = p
    return paths


def write_comparison(
    out_dir: Path,
    new: tuple[dict, list[Result]],
    old: tuple[dict, list[Result]],
    threshold: float,
    names: tuple[str, str] = ("the new run", "the old run"),
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    prior: prior_module.Prior | None = None,
) -> tuple[dict[str, Path], pd.DataFrame]:
    """compare.md and compare.html for two loaded runs, named ``names`` (new, old), and the
    comparison's table; a row whose top-1 fell by more than ``max_accuracy_drop`` points, or
    significantly, is "less accurate"."""
    out_dir = Path(out_dir)
    (new_env, new_results), (old_env, old_results) = new, old
    report = compare_report(
        new_env, new_results, old_env, old_results, threshold, max_accuracy_drop, prior=prior
    )
    md = out_dir / "compare.md"
    md.write_text(markdown_of(report, names))
    warns, verdict, table = report
    shown = shown_table(table) if not table.empty else table
    columns = [(c, c, None) for c in shown.columns]  # the shown names: interval, forks old/new
    body = table_html.results_table_html(shown, columns) if not table.empty else ""
    title = f"Comparison: {names[0]} against {names[1]}"
    page = page_html.page(title, verdict, warns, [("Matching Configs", body)], new_env)
    html_path = page_html.write_page(out_dir / "compare.html", page)
    return {"compare": md, "compare_html": html_path}, table


def parse_threshold(text: str) -> float:
    """--threshold as a fraction: "5%" -> 0.05, "0.05" -> 0.05; a bare number over 1 ("5") is
    refused, since it could mean 5% or 500%."""
    from resbench.cli import UsageError

    value = text.strip()
    is_percent = value.endswith("%")
    try:
        number = float(value[:-1] if is_percent else value)
    except ValueError:
        raise UsageError(
            f"--threshold takes a percent or a fraction (5% or 0.05); got {text!r}"
        ) from None
    if not math.isfinite(number):
        raise UsageError(f"--threshold must be a finite number; got {text}")
    if number < 0:
        raise UsageError(f"--threshold must be 0 or more; got {text}")
    if not is_percent and number > 1:
        raise UsageError(
            f"--threshold {text} is ambiguous: write {number:g}% for a percent, or a fraction "
            "of 1 or less (0.05 is 5%)"
        )
    return number / 100 if is_percent else number


def build_parser() -> argparse.ArgumentParser:
    from resbench.cli import Parser

    parser = Parser(
        prog="python -m resbench.report",
        description="A run folder -> summary.md, results.csv, plots and report.html; "
        "two runs -> a comparison with significance.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", nargs="?", type=Path, help="run folder (results.jsonl)")
    parser.add_argument("--compare", type=Path, help="an older run folder or pytest-benchmark JSON")
    parser.add_argument(
        "--pytest-benchmark", type=Path, help="a pytest-benchmark JSON saved by `pytest benchmarks`"
    )
    parser.add_argument(
        "--threshold",
        default="5%",
        help="smallest relative change --compare calls faster or slower, and the band within "
        "which it is unchanged: a percent (5%%) or a fraction (0.05); a bare number over 1 is "
        "refused (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        help="with --compare, for CI: exit 1 when any row is slower (significant between "
        "forks, or with one process a side beyond the A/A spread of --prior, and beyond "
        "--threshold); inconclusive: also when any row could not be told. Either way, exit 1 "
        "when no row of the two runs matched",
    )
    parser.add_argument(
        "--prior",
        type=Path,
        metavar="AA_JSON",
        help="the spread between processes that rows with one process a side are tested "
        "against: an A/A JSON from scripts/aa_check.py, best made on the host you compare on "
        f"(default: the shipped {prior_module.SHIPPED.name}, from results/aa-cpu-prior.json)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="points of top-1 a setting may lose against fp32 eager and still be the answer, "
        "where rows were scored on labelled images (default: the run's recorded "
        f"--max-accuracy-drop, else {MAX_ACCURACY_DROP})",
    )
    parser.add_argument("--out", type=Path, help="where to write (default: the run folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from resbench import cli
    from resbench.cli import UsageError, run_cli

    def body() -> int:
        args = build_parser().parse_args(argv)
        source = args.run or args.pytest_benchmark
        if source is None:
            raise UsageError("give a run folder, or --pytest-benchmark FILE.json")
        if args.run and args.pytest_benchmark:
            raise UsageError("give a run folder or --pytest-benchmark, not both")
        threshold = parse_threshold(args.threshold)
        if args.fail_on and not args.compare:
            raise UsageError(f"--fail-on {args.fail_on} needs --compare OLD")
        if args.prior and not args.compare:
            raise UsageError("--prior needs --compare OLD")
        try:
            prior = prior_module.load(args.prior) if args.compare else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.max_accuracy_drop is not None:
            cli.at_least(args.max_accuracy_drop, "--max-accuracy-drop", 0)
        out = Path(args.out or (source if source.is_dir() else source.with_suffix("")))
        env, results = load(source)
        old = load(args.compare) if args.compare else None  # every input read before any write
        max_batch = read_max_batch(source) if source.is_dir() else ()
        drop = args.max_accuracy_drop
        drop = accuracy_drop_of(source, results) if drop is None else drop
        title = f"resbench results: {source.name}"
        paths = write_outputs(out, env, results, title, max_batch, drop)
        plots = cli.plural(len(paths) - 3, "plot")
        print(f"wrote {paths['summary']}, {paths['html']} and {plots}")
        if old is not None:
            names = (source.name, args.compare.name)
            written, table = write_comparison(
                out, (env, results), old, threshold, names, drop, prior
            )
            print(written["compare"].read_text())
            print(f"wrote {written['compare']} and {written['compare_html']}")
            if args.fail_on and table.empty:
                print(
                    f"--fail-on {args.fail_on}: no row of the two runs matched, so nothing was "
                    "checked (see compare.md for what kept them apart)",
                    file=sys.stderr,
                )
                return 1
            failing = failing_rows(table, args.fail_on) if args.fail_on else 0
            if failing:
                what = "slower" if args.fail_on == "slower" else "slower or inconclusive"
                print(
                    f"--fail-on {args.fail_on}: {failing} of {len(table)} rows {what}",
                    file=sys.stderr,
                )
                return 1
        return 0

    return run_cli("resbench.report", body)
