"""A run folder -> markdown tables, CSV, plots; two runs -> a comparison with significance.

Usage::

    python -m resbench.report results/20261126-220000-cpu
    python -m resbench.report NEW_RUN --compare OLD_RUN
    python -m resbench.report --pytest-benchmark .benchmarks/Linux-.../0001_x.json

The loader takes both resbench runs (``results.jsonl``) and pytest-benchmark JSON files, so one renderer
serves both. Older runs that lack newer Result fields load with those fields empty.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from resbench import runfolder
from resbench.measure import Result
from resbench.runfolder import ENV_FILE, MAX_BATCH_FILE, RESULTS_FILE  # noqa: F401 (their home)

BASELINE_SETTING = "fp32"  # fp32, contiguous, eager
RESULT_FIELDS = [f.name for f in dataclasses.fields(Result)]
_ENV_KEYS_THAT_MATTER = (
    "gpu_names",
    "cpu",
    "torch",
    "cuda",
    "cudnn",
    "torch_threads",
    "logical_cores",
    "float32_matmul_precision",
)


# ----------------------------------------------------------------------------- loading


def read_jsonl(path: Path) -> list[dict]:
    """Every JSON-object line of ``path``; others are skipped with a warning naming file and line."""
    return [row for _, row in runfolder.read_jsonl(Path(path))]


def read_results_file(path: Path) -> list[Result]:
    return runfolder.read_results_file(Path(path))


def read_results(run_dir: Path) -> list[Result]:
    """The run's Results, the latest per Config (a retried error supersedes the old one)."""
    return runfolder.read_results(run_dir)


def read_env(run_dir: Path) -> dict:
    return runfolder.read_env(run_dir)


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    frame = pd.DataFrame([r.to_dict() for r in results], columns=RESULT_FIELDS)
    frame["setting"] = [r.setting for r in results]
    return frame


def load_pytest_benchmark(path: Path) -> tuple[dict, list[Result]]:
    """Results from a pytest-benchmark JSON saved by resbench's benchmarks (their extra_info)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(
            f"{path} is not a pytest-benchmark JSON file (an object with a list of benchmarks); "
            "save one with `pytest benchmarks --benchmark-autosave`"
        )
    results = []
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict):
            continue
        info = dict(bench.get("extra_info") or {})
        if "model" not in info:
            continue  # not one of resbench's benchmarks
        stats = bench.get("stats", {})
        samples_ms = [t * 1e3 for t in stats.get("data", [])]
        median_ms = stats["median"] * 1e3
        iqr_ms = stats.get("iqr", math.nan) * 1e3
        info.update(
            latency_ms_median=median_ms,
            latency_ms_iqr=iqr_ms,
            iterations=stats.get("rounds"),
            throughput_ips=info.get("batch_size", 0) / (median_ms / 1e3),
            noisy=bool(iqr_ms / median_ms > 0.10),
            samples_ms=samples_ms,
        )
        if info.get("gflops_per_step"):
            info["tflops_achieved"] = info["gflops_per_step"] / median_ms  # GFLOP/ms = TFLOP/s
        if samples_ms:  # saved with --benchmark-save-data; else the benchmark's own percentiles
            p10, p90, p99 = np.percentile(samples_ms, [10, 90, 99])
            info.update(latency_ms_p10=p10, latency_ms_p90=p90, latency_ms_p99=p99)
        results.append(Result.from_dict(info))
    if not results:
        raise ValueError(f"{path} holds no resbench benchmark (none has a model in its extra_info)")
    machine = data.get("machine_info", {})
    env = dict(machine.get("resbench", {}))
    env.setdefault("cpu", (machine.get("cpu") or {}).get("brand_raw"))
    env["source"] = f"pytest-benchmark {data.get('version', '')}: {path}"
    return env, results


def load(path: Path) -> tuple[dict, list[Result]]:
    """A run folder, or a pytest-benchmark JSON file."""
    path = Path(path)
    if path.is_dir():
        if not (path / RESULTS_FILE).exists():
            raise ValueError(f"{path} is not a run folder: it has no {RESULTS_FILE}")
        return read_env(path), read_results(path)
    if path.suffix == ".json" and path.exists():
        return load_pytest_benchmark(path)
    raise ValueError(f"{path} is neither a run folder nor a pytest-benchmark .json file")


# ----------------------------------------------------------------------------- tables


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _cell(row: pd.Series) -> str:
    if row["status"] != "ok":
        return str(row["status"])
    text = _fmt(row["throughput_ips"])
    if row.get("noisy") is True:
        text += "~"
    return text


def env_lines(env: dict) -> list[str]:
    if not env:
        return ["- environment: not recorded"]
    gpus = ", ".join(env.get("gpu_names") or []) or "none"
    lines = [
        f"- device(s): GPU {gpus}; CPU {env.get('cpu')} ({env.get('logical_cores')} logical cores, "
        f"{env.get('torch_threads')} torch threads)",
        f"- software: torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"Python {env.get('python')}, resbench {env.get('resbench')} ({env.get('git_commit')})",
    ]
    if env.get("command"):
        lines.append(f"- command: `{env['command']}`")
    if env.get("source"):
        lines.append(f"- source: {env['source']}")
    if env.get("timestamp"):
        lines.append(f"- started: {env['timestamp']}")
    return lines


def throughput_table(frame: pd.DataFrame) -> str:
    """Rows model x batch, a column of images/s per setting; the fastest setting per row in bold."""
    frame = frame.copy()
    frame["cell"] = frame.apply(_cell, axis=1)
    settings = list(dict.fromkeys(frame["setting"]))
    index = ["model", "batch_size"]
    cells = frame.pivot_table(index=index, columns="setting", values="cell", aggfunc="last")
    speed = frame[frame["status"] == "ok"].pivot_table(
        index=index, columns="setting", values="throughput_ips", aggfunc="last"
    )
    cells = cells.reindex(columns=settings).fillna("")
    for key in cells.index:
        if key in speed.index and speed.loc[key].notna().any():
            best = speed.loc[key].idxmax()
            if sum(speed.loc[key].notna()) > 1:
                cells.loc[key, best] = f"**{cells.loc[key, best]}**"
    gflops = frame.groupby(index)["gflops_per_image"].first()
    table = cells.reset_index()
    table.insert(2, "GFLOPs/img", [_fmt(gflops.get(tuple(k)), 2) for k in cells.index])
    table = table.rename(columns={"batch_size": "batch"})
    order = table["model"].map({m: i for i, m in enumerate(dict.fromkeys(frame["model"]))})
    table = table.assign(_o=order).sort_values(["_o", "batch"]).drop(columns="_o")
    return table.to_markdown(index=False, disable_numparse=True)


def detail_table(frame: pd.DataFrame) -> str:
    rows = []
    for _, r in frame.iterrows():
        ok = r["status"] == "ok"
        rows.append(
            {
                "model": r["model"],
                "batch": r["batch_size"],
                "setting": r["setting"],
                "img/s": _fmt(r["throughput_ips"]) if ok else "",
                "median ms": _fmt(r["latency_ms_median"], 2) if ok else "",
                "p99 ms": _fmt(r["latency_ms_p99"], 2) if ok else "",
                "peak MB": _fmt(r["peak_memory_mb"], 0) if ok else "",
                "GFLOPs/step": _fmt(r["gflops_per_step"], 1),
                "TFLOP/s": _fmt(r["tflops_achieved"], 2) if ok else "",
                "MFU": f"{r['mfu']:.0%}"
                if ok and r["mfu"] is not None and math.isfinite(r["mfu"])
                else "",
                "noise": _noise(r) if ok else "",
                "status": r["status"] if ok else f"{r['status']}: {str(r['error'] or '')[:60]}",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _noise(r: pd.Series) -> str:
    notes = []
    if r.get("noisy") is True and r["latency_ms_median"]:
        notes.append(f"IQR {r['latency_ms_iqr'] / r['latency_ms_median']:.0%}")
    foreign = r.get("foreign_cpu")
    if foreign is not None and isinstance(foreign, float) and foreign >= 0.25:
        notes.append(f"{foreign:.1f} cores busy elsewhere")
    return "; ".join(notes)


def summary_markdown(
    env: dict, results: Sequence[Result], title: str, max_batch: Sequence[dict] = ()
) -> str:
    frame = results_frame(results)
    out = [f"# {title}", "", *env_lines(env), ""]
    counts = frame["status"].value_counts().to_dict()
    out.append(
        f"{len(frame)} results: "
        + ", ".join(
            f"{counts.get(s, 0)} {s}" for s in ("ok", "oom", "error", "skipped") if counts.get(s)
        )
    )
    out += [
        "",
        "Images per second (batch / median latency); the fastest setting of each row in **bold**; "
        "`~` marks a noisy measurement (IQR above 10% of the median). Settings: precision, "
        "`cl` = channels_last, `compile` = torch.compile. GFLOPs/img is the forward pass "
        "(a multiply-add counts 2).",
    ]
    for (device, mode), part in frame.groupby(["device", "mode"], sort=False):
        name = part["device_name"].dropna().iloc[0] if part["device_name"].notna().any() else device
        out += ["", f"## {mode} on {device} ({name})", "", throughput_table(part)]
        out += ["", f"### {mode} on {device}: details", "", detail_table(part)]
    if max_batch:
        out += ["", "## Largest batch that fits", ""]
        table = pd.DataFrame(list(max_batch)).drop(columns=["probes"], errors="ignore")
        out.append(table.to_markdown(index=False, disable_numparse=True))
    failed = frame[frame["status"].isin(["error"])]
    if len(failed):
        out += ["", "## Errors", ""]
        out += [
            f"- {r.model} b{r.batch_size} {r.mode} {r.setting}: {r.error}"
            for r in failed.itertuples()
        ]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- plots


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed); every tool plots so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(results: Sequence[Result], plots_dir: Path) -> list[Path]:
    plt = pyplot()

    frame = results_frame(results)
    frame = frame[frame["status"] == "ok"]
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (device, mode), part in frame.groupby(["device", "mode"], sort=False):
        models = list(dict.fromkeys(part["model"]))
        curves = [m for m in models if part.loc[part["model"] == m, "batch_size"].nunique() > 1]
        models = curves or models  # a single point says little on a throughput-vs-batch plot
        cols = min(4, len(models))
        rows = math.ceil(len(models) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
        for ax, model in zip(axes.flat, models, strict=False):
            sub = part[part["model"] == model]
            for setting, line in sub.groupby("setting", sort=False):
                line = line.sort_values("batch_size")
                ax.plot(line["batch_size"], line["throughput_ips"], marker="o", label=setting)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(model, fontsize=10)
            ax.set_xlabel("batch size")
            ax.set_ylabel("images/s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(models) :]:
            ax.axis("off")
        fig.suptitle(f"Throughput, {mode}, {device}")
        fig.tight_layout()
        path = plots_dir / f"throughput_{mode}_{_safe(device)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

        speedups = _speedups(part)
        if not speedups.empty:
            fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(speedups)), 4))
            speedups.plot.bar(ax=ax, rot=0)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_ylabel(f"speedup over {BASELINE_SETTING}")
            ax.set_xlabel("")
            ax.set_title(
                f"Speedup over fp32/contiguous/eager, {mode}, {device}\n"
                "(geometric mean over batch sizes)",
                fontsize=10,
            )
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = plots_dir / f"speedup_{mode}_{_safe(device)}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


def _speedups(part: pd.DataFrame) -> pd.DataFrame:
    """Per model, the geometric mean over batch sizes of each setting's speedup over the baseline."""
    table = part.pivot_table(
        index=["model", "batch_size"], columns="setting", values="throughput_ips", aggfunc="last"
    )
    if BASELINE_SETTING not in table.columns or len(table.columns) < 2:
        return pd.DataFrame()
    table = table.reindex(columns=list(dict.fromkeys(part["setting"])))
    ratio = table.div(table[BASELINE_SETTING], axis=0).drop(columns=BASELINE_SETTING)
    return np.exp(np.log(ratio).groupby(level="model", sort=False).mean()).dropna(how="all")


def _safe(text: str) -> str:
    return text.replace(":", "")


# ----------------------------------------------------------------------------- compare


def compare(
    new: Sequence[Result],
    old: Sequence[Result],
    threshold: float = 0.05,
    alpha: float = 0.01,
) -> pd.DataFrame:
    """Match Results by Config; speedup = old median / new median; flag significant changes.

    A change is flagged only when it exceeds ``threshold`` and a Mann-Whitney U test on the raw
    samples rejects "same distribution" at ``alpha``.
    """
    from scipy.stats import mannwhitneyu

    old_by_key = {r.key(): r for r in old if r.status == "ok"}
    rows = []
    for r in new:
        base = old_by_key.get(r.key())
        if r.status != "ok" or base is None:
            continue
        speedup = base.latency_ms_median / r.latency_ms_median
        p = math.nan
        if len(r.samples_ms) >= 3 and len(base.samples_ms) >= 3:
            p = float(mannwhitneyu(r.samples_ms, base.samples_ms, alternative="two-sided").pvalue)
        significant = not math.isnan(p) and p < alpha
        if abs(speedup - 1) > threshold and significant:
            verdict = "faster" if speedup > 1 else "slower"
        else:
            verdict = "unchanged"
        rows.append(
            {
                "model": r.model,
                "batch": r.batch_size,
                "mode": r.mode,
                "setting": r.setting,
                "device": r.device,
                "old ms": base.latency_ms_median,
                "new ms": r.latency_ms_median,
                "speedup": speedup,
                "p": p,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def env_differences(a: dict, b: dict) -> list[str]:
    return [
        f"{key}: {b.get(key)!r} -> {a.get(key)!r}"
        for key in _ENV_KEYS_THAT_MATTER
        if key in a and key in b and a.get(key) != b.get(key)
    ]


def compare_markdown(
    new_env: dict, new: Sequence[Result], old_env: dict, old: Sequence[Result], threshold: float
) -> str:
    table = compare(new, old, threshold)
    out = ["# Comparison", ""]
    diffs = env_differences(new_env, old_env)
    if diffs:
        out += ["**Warning: the environments differ**, so differences may not be the code's:", ""]
        out += [f"- {d}" for d in diffs] + [""]
    if table.empty:
        return "\n".join([*out, "No Config was measured successfully in both runs."]) + "\n"
    counts = table["verdict"].value_counts().to_dict()
    geo = float(np.exp(np.log(table["speedup"]).mean()))
    out.append(
        f"**Verdict: {counts.get('faster', 0)} faster, {counts.get('slower', 0)} slower, "
        f"{counts.get('unchanged', 0)} unchanged** of {len(table)} matching Configs "
        f"(threshold {threshold:.0%}, Mann-Whitney U p < 0.01); geometric-mean speedup {geo:.3f}x."
    )
    shown = table.assign(
        **{
            "old ms": table["old ms"].map(lambda v: _fmt(v, 3)),
            "new ms": table["new ms"].map(lambda v: _fmt(v, 3)),
            "speedup": table["speedup"].map(lambda v: f"{v:.3f}x"),
            "p": table["p"].map(lambda v: "" if math.isnan(v) else f"{v:.2g}"),
        }
    )
    out += ["", shown.to_markdown(index=False, disable_numparse=True)]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- writing


def write_report(run_dir: Path, title: str | None = None) -> dict[str, Path]:
    """results.csv, summary.md and plots/*.png for a run folder; returns the paths written."""
    run_dir = Path(run_dir)
    env, results = read_env(run_dir), read_results(run_dir)
    path = run_dir / MAX_BATCH_FILE
    max_batch = json.loads(path.read_text()) if path.exists() else ()
    return write_outputs(run_dir, env, results, title or f"resbench run {run_dir.name}", max_batch)


def write_outputs(
    out_dir: Path, env: dict, results: Sequence[Result], title: str, max_batch: Sequence[dict] = ()
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "results.csv", "summary": out_dir / "summary.md"}
    frame = results_frame(results).drop(columns=["samples_ms"])
    frame.to_csv(paths["csv"], index=False)
    summary = summary_markdown(env, results, title, max_batch)
    plots = write_plots(results, out_dir / "plots")
    if plots:
        summary += (
            "\n## Plots\n\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots) + "\n"
        )
    paths["summary"].write_text(summary)
    for p in plots:
        paths[p.stem] = p
    return paths


def build_parser() -> argparse.ArgumentParser:
    from resbench.cli import Parser

    parser = Parser(prog="python -m resbench.report", description=__doc__.split("\n\n")[0])
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
        env, results = load(source)
        out = args.out or (source if source.is_dir() else source.with_suffix(""))
        paths = write_outputs(Path(out), env, results, f"resbench results: {source.name}")
        print(f"wrote {paths['summary']} and {len(paths) - 2} plot(s)")
        if args.compare:
            old_env, old = load(args.compare)
            text = compare_markdown(env, results, old_env, old, args.threshold)
            path = Path(out) / "compare.md"
            path.write_text(text)
            print(text)
            print(f"wrote {path}")
        return 0

    return run_cli("resbench.report", body)


if __name__ == "__main__":
    raise SystemExit(main())
