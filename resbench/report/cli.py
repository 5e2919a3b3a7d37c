"""Writing a run's outputs, and the command line: ``python -m resbench.report``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from resbench.measure import Result
from resbench.report import html as page_html
from resbench.report import table_html
from resbench.report.analysis import headline, results_table
from resbench.report.compare import compare_markdown, compare_report, shown_table
from resbench.report.loading import ENV_FILE, load, load_run, read_max_batch, results_frame
from resbench.report.plots import write_plots
from resbench.report.tables import answers_rows, errors, summary_markdown, warnings_for

USAGE = """Usage::

    python -m resbench.report results/20261126-220000-cpu
    python -m resbench.report NEW_RUN --compare OLD_RUN
    python -m resbench.report --pytest-benchmark .benchmarks/Linux-.../0001_x.json [--compare OLD]
"""


def write_report(run_dir: Path, title: str | None = None) -> dict[str, Path]:
    """results.csv, summary.md, plots/*.png and report.html for a run folder; the paths written."""
    run_dir = Path(run_dir)
    env, results, max_batch = load_run(run_dir)
    return write_outputs(run_dir, env, results, title or f"resbench run {run_dir.name}", max_batch)


def finish_run(run_dir: Path, devices: Sequence[str], budget_s: float = 0.5) -> dict[str, Path]:
    """At a sweep's end: probe each device's memory bandwidth into env.json, then write the report."""
    from resbench import env as env_module
    from resbench import flops

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
    out_dir: Path, env: dict, results: Sequence[Result], title: str, max_batch: Sequence[dict] = ()
) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "summary": out_dir / "summary.md"}
    results_frame(results).drop(columns=["samples_ms"]).to_csv(paths["csv"], index=False)
    frame = results_table(results, env)
    summary = summary_markdown(env, results, title, max_batch)
    plots = write_plots(frame, env, out_dir / "plots")
    if plots:
        summary += (
            "\n## Plots\n\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots) + "\n"
        )
    paths["summary"].write_text(summary)
    sections = [
        (f"Answers: {mode} on {device}", answers_rows(part).to_html(index=False, border=0))
        for (device, mode), part in frame.groupby(["device", "mode"], sort=False)
    ]
    sections += [("Interactive plots", "\n".join(page_html.figures_html(frame, env)))]
    images = "".join(
        f'<div><img src="plots/{p.name}" alt="{p.stem}"></div>'
        for p in plots
        if not p.name.startswith("throughput_")  # drawn interactively above
    )
    if images:
        sections.append(("Speed-ups and rooflines", f'<div class="plots">{images}</div>'))
    sections.append(("Every result", table_html.results_table_html(frame)))
    failed = errors(frame)
    if failed:
        sections.append(("Errors", table_html.items_html(failed)))
    text = page_html.page(title, headline(results), warnings_for(results), sections, env)
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
) -> dict[str, Path]:
    """compare.md and compare.html for two loaded runs, named ``names`` (new, old)."""
    out_dir = Path(out_dir)
    (new_env, new_results), (old_env, old_results) = new, old
    text = compare_markdown(new_env, new_results, old_env, old_results, threshold, names)
    md = out_dir / "compare.md"
    md.write_text(text)
    warns, verdict, table = compare_report(new_env, new_results, old_env, old_results, threshold)
    columns = [(c, c, None) for c in table.columns]
    body = table_html.results_table_html(shown_table(table), columns) if not table.empty else ""
    title = f"Comparison: {names[0]} against {names[1]}"
    page = page_html.page(title, verdict, warns, [("Matching Configs", body)], new_env)
    return {"compare": md, "compare_html": page_html.write_page(out_dir / "compare.html", page)}


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
        type=float,
        default=0.05,
        help="smallest relative change --compare flags (default: %(default)s)",
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
        cli.finite(args.threshold, "--threshold")
        if args.threshold < 0:
            raise UsageError(f"--threshold must be 0 or more; got {args.threshold}")
        out = Path(args.out or (source if source.is_dir() else source.with_suffix("")))
        env, results = load(source)
        old = load(args.compare) if args.compare else None  # every input read before any write
        max_batch = read_max_batch(source) if source.is_dir() else ()
        paths = write_outputs(out, env, results, f"resbench results: {source.name}", max_batch)
        print(f"wrote {paths['summary']}, {paths['html']} and {len(paths) - 3} plot(s)")
        if old is not None:
            names = (source.name, args.compare.name)
            written = write_comparison(out, (env, results), old, args.threshold, names)
            print(written["compare"].read_text())
            print(f"wrote {written['compare']} and {written['compare_html']}")
        return 0

    return run_cli("resbench.report", body)
