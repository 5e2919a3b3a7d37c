"""Does resbench time OpenVINO as OpenVINO does? Its rows against benchmark_app on the same file.

    python scripts/serving_check.py --models resnet18,resnet50 --batch-sizes 1 --seconds 10 \
        --out results/serving-cpu [--streams 1,2] [--threads T,...] [--dry-run]

Each row exports the model once through ``resbench.engine.preparation.prepare`` (seeded weights:
every export of a model and batch is the same file, which the row checks by its sha256) and runs, on
that one ONNX file, with the same precision hint and f32 input:

- single-stream (1 stream, T threads): ``measure()`` against ``benchmark_app -api sync -hint none
  -nstreams 1 -nthreads T`` (benchmark_app refuses -nthreads beside -hint latency; with no hint
  the CPU plugin applies its default, LATENCY, which the row records);
- offline (S streams, T threads each): ``measure()`` against ``benchmark_app -api async -hint none
  -nstreams S -nireq S -nthreads S*T``;
- OpenVINO's own pick (unless --no-hint-rows): ``-hint latency -api sync`` and ``-hint
  throughput -api async``, compared with the row of this run at the streams and threads that
  benchmark_app reports it chose, where there is one.

Both sides measure for --seconds (resbench warms up until settled before it; benchmark_app runs
one first inference), one after the other, the order alternating row by row. A row is "within
10%" when resbench / benchmark_app is within 10% of 1 for both the throughput (img/s) and the
median latency. Every row keeps the facts that say why two sides differ: benchmark_app's report
(streams, requests, threads, pinning, precision, hint: its compiled model's properties) beside
the same properties of resbench's compiled model, and the ones that differ. benchmark_app.json
and benchmark_app.md in --out are rewritten after every row, so an interrupted run keeps its rows.
Run it on a quiet machine: both sides share its cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resbench import cli  # noqa: E402
from resbench.engine import scenarios, timing  # noqa: E402
from resbench.engine.devices import default_threads  # noqa: E402
from resbench.engine.measure import Config, Result, measure  # noqa: E402
from resbench.engine.preparation import Prepared, prepare  # noqa: E402
from resbench.engine.runtimes import OPENVINO_HINTS  # noqa: E402
from resbench.env import collect_env  # noqa: E402

PROG = "serving_check"
TOLERANCE = 0.10  # the bar: resbench / benchmark_app within 10% of 1
PRECISIONS = tuple(OPENVINO_HINTS)  # fp32, bf16, int8 (resbench's own quantised export)


def onnx_name(precision: str) -> str:
    """The file in a prepared workdir that OpenVINO's row runs: the int8 row's QDQ export
    (onnxruntime's quantiser, calibrated on resbench's seeded images), else the fp32 export."""
    return "model.int8.onnx" if precision == "int8" else "model.onnx"


SCENARIOS = ("single-stream", "offline")
MACHINE_KEYS = ("cpu", "isa", "logical_cores", "torch", "git_commit", "hostname", "os")
MEASURE = {"peak": False, "score": False}  # no MFU probe, no fp32 eager agreement: not timed
HINTS = {"single-stream": "latency", "offline": "throughput"}
RESULT_FIGURES = (
    "status", "error", "throughput_ips", "latency_ms_median", "latency_ms_p90", "latency_ms_p99",
    "iterations", "requests", "sustained", "effective_precision", "compute_kernel", "warmup_s",
    "measure_s", "foreign_cpu", "noisy", "allocator",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Row:
    """One comparison: a resbench Config's setting, or (hint set) benchmark_app's own pick."""

    model: str
    batch: int
    precision: str
    scenario: str
    streams: int | None = None  # None: a hint row, until benchmark_app says what it picked
    threads: int | None = None  # per stream
    hint: str | None = None  # "latency" / "throughput": benchmark_app chooses streams and threads

    def config(self, streams: int | None = None, threads: int | None = None) -> Config:
        return Config(
            self.model, self.batch, device="cpu", backend="openvino", precision=self.precision,
            scenario=self.scenario, streams=streams or self.streams, threads=threads or self.threads,
        )  # fmt: skip

    @property
    def label(self) -> str:
        how = f"hint-{self.hint}" if self.hint else f"s{self.streams}t{self.threads}"
        return f"{self.model}-b{self.batch}-{self.precision}-{self.scenario}-{how}"


def benchmark_app_path() -> Path:
    """benchmark_app as the openvino wheel installs it, beside this Python."""
    path = Path(sys.executable).parent / "benchmark_app"
    if not path.exists():
        raise cli.UsageError(f"no benchmark_app beside {sys.executable} (pip install openvino)")
    return path


def benchmark_app_command(row: Row, model: Path, seconds: int, report: Path) -> list[str]:
    """The benchmark_app command for ``row`` on ``model``, its report written into ``report``."""
    if row.hint == "latency":
        how = ["-hint", "latency", "-api", "sync"]
    elif row.hint == "throughput":
        how = ["-hint", "throughput", "-api", "async"]
    elif row.scenario == "single-stream":
        how = ["-hint", "none", "-api", "sync", "-nstreams", "1", "-nthreads", str(row.threads)]
    else:
        s = str(row.streams)
        how = ["-hint", "none", "-api", "async", "-nstreams", s, "-nireq", s]
        how += ["-nthreads", str(row.streams * row.threads)]
    return [
        str(benchmark_app_path()), "-m", str(model), "-d", "CPU", *how, "-t", str(seconds),
        "-ip", "f32", "-infer_precision", OPENVINO_HINTS[row.precision],
        "-report_type", "no_counters", "-report_folder", str(report), "-json_stats",
    ]  # fmt: skip


_PROPERTY = re.compile(r"^\[ INFO \]   ([A-Z][A-Z0-9_]*): (.*)$")
_INPUT = re.compile(r"^\[ INFO \]     (\S+) \(node: [^)]*\) : (\w+) / \[([^\]]*)\] / \[([^\]]*)\]")
_LATENCY = re.compile(r"^\[ INFO \]    (Median|Average|Min|Max):\s+([\d.]+) (us|ms)")
_STEP = re.compile(r"^\[Step (\d+)/\d+\]")
_START = re.compile(r"Start inference (a?synchronously)(?:, (\d+) inference requests)?"
                    r"(?: using (\d+) streams)?")  # fmt: skip


def parse_output(text: str) -> dict:
    """benchmark_app's stdout as figures (ms, img/s) and its compiled model's properties (Step 8,
    as it prints them); a figure it did not print is None."""
    out: dict = {"properties": {}, "inputs": {}, "errors": [], "warnings": []}
    step = 0
    latency: dict[str, float] = {}
    for line in text.splitlines():
        if m := _STEP.match(line):
            step = int(m[1])
            if m := _START.search(line):
                out["api"] = "sync" if m[1] == "synchronously" else "async"
                out["infer_requests"] = int(m[2]) if m[2] else None
            continue
        if line.startswith("[ ERROR ]"):
            out["errors"].append(line[len("[ ERROR ] ") :])
        elif line.startswith("[ WARNING ]"):
            out["warnings"].append(line[len("[ WARNING ] ") :])
        elif step == 8 and (m := _PROPERTY.match(line)):
            out["properties"][m[1]] = m[2]
        elif step == 6 and (m := _INPUT.match(line)):
            out["inputs"][m[1]] = {"precision": m[2], "layout": m[3], "shape": m[4]}
        elif m := _LATENCY.match(line):
            latency[m[1].lower()] = float(m[2]) / (1000 if m[3] == "us" else 1)
        elif m := re.match(r"^\[ INFO \] Count:\s+(\d+) iterations", line):
            out["iterations"] = int(m[1])
        elif m := re.match(r"^\[ INFO \] Duration:\s+([\d.]+) ms", line):
            out["duration_ms"] = float(m[1])
        elif m := re.match(r"^\[ INFO \] First inference took ([\d.]+) ms", line):
            out["first_inference_ms"] = float(m[1])
        elif m := re.match(r"^\[ INFO \] Throughput:\s+([\d.]+) FPS", line):
            out["throughput_fps"] = float(m[1])
    for name in ("median", "average", "min", "max"):
        out[f"latency_ms_{name}"] = latency.get(name)
    for name in ("api", "infer_requests", "iterations", "duration_ms", "first_inference_ms"):
        out.setdefault(name, None)
    out.setdefault("throughput_fps", None)
    return out


def picked(parsed: dict) -> tuple[int | None, int | None]:
    """(streams, threads per stream) that benchmark_app's compiled model reports it ran with."""
    props = parsed["properties"]
    try:
        streams, total = int(props["NUM_STREAMS"]), int(props["INFERENCE_NUM_THREADS"])
    except (KeyError, ValueError):
        return None, None
    return streams, max(1, total // max(1, streams))


def run_benchmark_app(row: Row, model: Path, seconds: int, out: Path) -> dict:
    """Run benchmark_app for ``row``; its log is kept in ``out``/benchmark_app-logs."""
    logs = out / "benchmark_app-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bapp-report-") as report:
        cmd = benchmark_app_command(row, model, seconds, Path(report))
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        with timing.ForeignCpu() as busy:  # counts benchmark_app too: its own CPU time is taken off
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        own = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        text = done.stdout + done.stderr
        (logs / f"{row.label}.log").write_text(text)
        found = Path(report) / "benchmark_report.json"
        setup = json.loads(found.read_text()).get("configuration_setup") if found.exists() else None
    return {
        "command": shlex.join(cmd),
        "returncode": done.returncode,
        **parse_output(text),
        "report": setup,
        "foreign_cpu": max(0.0, busy.cores - own / wall),  # other processes' cores, as resbench's
        "log": f"benchmark_app-logs/{row.label}.log",
    }


def compiled_properties(prepared: Prepared) -> dict | None:
    """The properties of the OpenVINO compiled model the Prepared runs (``Prepared.runtime``),
    printed as benchmark_app prints its own (Step 8); None for another runtime."""
    import openvino as ov

    compiled = prepared.runtime
    if not isinstance(compiled, ov.CompiledModel):
        return None
    skip = ov.properties.supported_properties()
    keys = compiled.get_property(skip)
    return {str(k): f"{compiled.get_property(k)}" for k in keys if k != skip}


def file_hash(folder: Path, name: str = "model.onnx") -> str:
    """sha256 of the ONNX export ``name`` and its external data, in name order."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob(name + "*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def resbench_figures(result: Result) -> dict:
    figures = {name: getattr(result, name) for name in RESULT_FIGURES}
    if result.scenario == "offline" and result.status == "ok" and result.requests is None:
        # a measure() from before the offline scenario times one stream and labels it offline
        figures["status"] = "error"
        figures["error"] = "this resbench's measure() does not run the offline scenario yet"
    return figures


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def occupancy(ips: float | None, median_ms: float | None, streams: int, batch: int) -> float | None:
    """img/s x median call / (streams x batch): near 1 when every stream is always in a call."""
    return ips * median_ms / 1e3 / (streams * batch) if ips and median_ms else None


def compare(row: Row, streams: int, threads: int, res: dict | None, bapp: dict) -> dict:
    """Ratios resbench / benchmark_app, the verdict, and the facts that differ between the sides."""
    if bapp["returncode"] != 0 or bapp["throughput_fps"] is None:
        why = "; ".join(bapp["errors"]) or f"benchmark_app exited {bapp['returncode']}"
        return {"ratios": {}, "verdict": f"not compared: {why}", "differences": []}
    if res is None or res["status"] != "ok":
        why = "no resbench row at this setting" if res is None else res["error"] or res["status"]
        return {"ratios": {}, "verdict": f"not compared: {why}", "differences": []}
    median_ips = row.batch * 1e3 / bapp["latency_ms_median"]
    ratios = {
        "throughput": _ratio(res["throughput_ips"], bapp["throughput_fps"]),
        "latency_median": _ratio(res["latency_ms_median"], bapp["latency_ms_median"]),
        # single-stream: resbench's throughput is batch / median, benchmark_app's count / duration
        "throughput_over_median_based": _ratio(res["throughput_ips"], median_ips),
    }
    off = [k for k in ("throughput", "latency_median") if abs(ratios[k] - 1) > TOLERANCE]
    verdict = "within 10%" if not off else "differs: " + ", ".join(off)
    ours, theirs = res.get("compiled_model") or {}, bapp["properties"]
    differences = [
        f"{key}: resbench {ours[key]}, benchmark_app {theirs[key]}"
        for key in sorted(set(ours) & set(theirs))
        if ours[key] != theirs[key] and key != "PERFORMANCE_HINT_NUM_REQUESTS"
    ]
    if not ours:
        differences.append("resbench's compiled model was not reachable: its properties unknown")
    ran = picked(bapp)
    if ran != (streams, threads):
        differences.append(f"benchmark_app ran {ran[0]} streams x {ran[1]} threads, not "
                           f"{streams} x {threads}")  # fmt: skip
    for name, info in bapp["inputs"].items():
        if info["precision"] != "f32":
            differences.append(f"benchmark_app fed input {name} as {info['precision']}, not f32")
    mean = bapp["latency_ms_average"]
    if mean and abs(mean / bapp["latency_ms_median"] - 1) > TOLERANCE:
        differences.append(f"benchmark_app's mean latency {mean:.3f} ms is not its median "
                           f"{bapp['latency_ms_median']:.3f} ms")  # fmt: skip
    if row.scenario == "offline":  # the time a stream spends inside a call, by each side's figures
        busy = [occupancy(f[0], f[1], streams, row.batch) for f in (
            (res["throughput_ips"], res["latency_ms_median"]),
            (bapp["throughput_fps"], bapp["latency_ms_median"]))]  # fmt: skip
        ratios["occupancy"] = dict(zip(("resbench", "benchmark_app"), busy, strict=True))
        if None not in busy and abs(busy[0] / busy[1] - 1) > TOLERANCE:
            differences.append(f"a stream is in a call {busy[0]:.0%} of the time by resbench's "
                               f"figures, {busy[1]:.0%} by benchmark_app's")  # fmt: skip
    if off:  # how long each side sampled: measure() stops once its median is known
        differences.append(
            f"resbench measured {res['measure_s'] or 0:.2f} s ({res['iterations']} calls), "
            f"benchmark_app {(bapp['duration_ms'] or 0) / 1e3:.2f} s ({bapp['iterations']})"
        )
    loaded = [
        (side, figures["foreign_cpu"])
        for side, figures in (("resbench", res), ("benchmark_app", bapp))
        if (figures.get("foreign_cpu") or 0) >= timing.LOAD_MEDIAN_CORES
    ]
    if loaded:  # as the report marks a row "under load"
        verdict += f", under load ({', '.join(side for side, _ in loaded)})"
        differences += [
            f"other processes kept {c:.2f} cores busy while {side} ran" for side, c in loaded
        ]
    return {"ratios": ratios, "verdict": verdict, "differences": differences}


def plan(models, batches, precisions, scenario_list, streams_list, threads_list, hints) -> list:
    """The rows in the order they run; each model and batch's hint rows after its own rows."""
    rows = []
    for model in models:
        for batch in batches:
            for precision in precisions:
                for scenario in scenario_list:
                    counts = [1] if scenario == "single-stream" else streams_list
                    for s in counts:
                        for t in threads_list or [default_threads(s)]:
                            rows.append(Row(model, batch, precision, scenario, s, t))
                if hints:
                    rows += [Row(model, batch, precision, s, hint=HINTS[s]) for s in scenario_list]
    return rows


def write_outputs(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark_app.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "benchmark_app.md").write_text(markdown(record))


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(record: dict) -> str:
    """The rows as a table, the machine and command above it, each row's differences below."""
    m = record["machine"]
    lines = [
        "# resbench against OpenVINO's benchmark_app",
        "",
        f"Machine: {m.get('cpu')}, {m.get('logical_cores')} logical cores; openvino "
        f"{m.get('openvino')}, torch {m.get('torch')}, resbench {m.get('git_commit')}.",
        f"Command: `{record['command']}` ({record['seconds']} s a side; ratios are resbench / "
        "benchmark_app; within 10%: both ratios within 10% of 1).",
        "",
        "| model | batch | precision | scenario | streams x threads | benchmark_app | resbench img/s"
        " | benchmark_app img/s | ratio | resbench median ms | benchmark_app median ms | ratio "
        "| verdict |",
        "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for r in record["rows"]:
        res, bapp, ratios = r["resbench"] or {}, r["benchmark_app"], r["ratios"]
        res = res if res.get("status") == "ok" else {}  # a failed side has no figure to show
        how = f"-hint {r['hint']}" if r["hint"] else f"-api {bapp.get('api') or '?'}"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['precision']} | {r['scenario']} | "
            f"{r['streams']} x {r['threads']} | {how} | {_num(res.get('throughput_ips'))} | "
            f"{_num(bapp.get('throughput_fps'))} | {_num(ratios.get('throughput'), 3)} | "
            f"{_num(res.get('latency_ms_median'), 3)} | {_num(bapp.get('latency_ms_median'), 3)} "
            f"| {_num(ratios.get('latency_median'), 3)} | {r['verdict']} |"
        )
        if r["differences"]:
            label = f"{r['model']} b{r['batch']} {r['precision']} {r['scenario']} {how}"
            notes.append(f"- {label}: " + "; ".join(r["differences"]))
    if notes:
        lines += ["", "What differs between the two sides, as each reports it:", "", *notes]
    return "\n".join(lines) + "\n"


def run_row(row: Row, order: Sequence[str], args, tmp: Path, exports: dict, done: dict) -> dict:
    """Export (or reuse) the row's ONNX file, run both sides in ``order``, compare them."""
    name = onnx_name(row.precision)
    key = (row.model, row.batch, name)
    setting = (row.model, row.batch, row.precision, row.scenario)
    facts, digest = None, None
    if not row.hint or key not in exports:  # a hint row reuses its model's file
        with prepare(row.config(1) if row.hint else row.config()) as p:
            facts = None if row.hint else compiled_properties(p)
            digest = file_hash(p.workdir, name)
            if key not in exports:
                shutil.copytree(p.workdir, tmp / row.label)
                exports[key] = (tmp / row.label / name, digest)
    model, bapp_digest = exports[key]
    res, bapp = None, None
    for side in order:
        if side == "benchmark_app":
            bapp = run_benchmark_app(row, model, args.seconds, args.out)
        elif not row.hint:
            result = measure(row.config(), budget_s=args.seconds, **MEASURE)
            res = resbench_figures(result) | {"compiled_model": facts}
    if row.hint:
        streams, threads = picked(bapp)
        res = done.get((*setting, streams, threads))
    else:
        streams, threads = row.streams, row.threads
        done[(*setting, streams, threads)] = res
    return {
        **dataclasses.asdict(row), "streams": streams, "threads": threads,
        "order": list(order) if not row.hint else ["benchmark_app"],
        "onnx": {"sha256": bapp_digest, "same_file": digest in (None, bapp_digest)},
        "resbench": res, "benchmark_app": bapp,
        **compare(row, streams, threads, res, bapp),
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument(
        "--models", default="resnet18,resnet50", help=cli.models_help("resnet18,resnet50")
    )
    p.add_argument("--batch-sizes", default="1", help="default: %(default)s")
    p.add_argument("--precisions", default="fp32", help=f"{', '.join(PRECISIONS)} (default: fp32)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="default: %(default)s")
    p.add_argument("--streams", default="1,2", help="the offline rows' streams (default: 1,2)")
    p.add_argument("--threads", help="threads per stream, a list (default: the cores shared "
                   "between the streams, as resbench's Config resolves them)")  # fmt: skip
    p.add_argument("--oversubscribe", action="store_true", help="allow streams x threads > cores")
    p.add_argument("--seconds", type=int, default=10, help="each side's measured time, whole "
                   "seconds as benchmark_app's -t takes (default: %(default)s)")  # fmt: skip
    p.add_argument("--no-hint-rows", action="store_true", help="skip benchmark_app's own picks")
    p.add_argument(
        "--out", type=Path, default=Path("results/serving-cpu"), help="default: %(default)s"
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    return p


def body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    models = cli.parse_models(args.models)
    batches = cli.parse_positive_ints(args.batch_sizes, "--batch-sizes")
    precisions = cli.parse_choices(args.precisions, "--precisions", PRECISIONS)
    scenario_list = cli.parse_choices(args.scenarios, "--scenarios", SCENARIOS)
    streams_list = cli.parse_positive_ints(args.streams, "--streams")
    threads_list = cli.parse_positive_ints(args.threads, "--threads") if args.threads else None
    cli.in_range(args.seconds, "--seconds", 1, 3600)
    rows = plan(models, batches, precisions, scenario_list, streams_list, threads_list,
                not args.no_hint_rows)  # fmt: skip
    for row in rows:
        if not row.hint:
            scenarios.check_threads(row.threads, row.streams, oversubscribe=args.oversubscribe)
    bapp_path = benchmark_app_path()
    if args.dry_run:
        for i, row in enumerate(rows):
            bapp = shlex.join(benchmark_app_command(row, Path("MODEL/model.onnx"), args.seconds,
                                                    Path("REPORT")))  # fmt: skip
            res = (
                ""
                if row.hint
                else f"measure({row.config()!r}, budget_s={args.seconds}, **{MEASURE})"
            )
            sides = [s for s in (res, bapp) if s]
            print(f"# {row.label}", *(sides if i % 2 == 0 else sides[::-1]), sep="\n")
        return 0
    env = collect_env()
    record = {
        "command": shlex.join(
            ["python", "scripts/serving_check.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": {k: env.get(k) for k in MACHINE_KEYS}
        | {"openvino": env["runtimes"].get("openvino")},
        "benchmark_app": str(bapp_path),
        "seconds": args.seconds,
        "tolerance": TOLERANCE,
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="serving-check-") as tmp:
        exports: dict[tuple, tuple[Path, str]] = {}  # (model, batch): benchmark_app's file, sha256
        done: dict[tuple, dict] = {}  # a row's setting: its resbench figures, for the hint rows
        try:
            for i, row in enumerate(rows):
                print(f"{PROG}: {i + 1}/{len(rows)} {row.label}", flush=True)
                order = ("resbench", "benchmark_app")[:: 1 if i % 2 == 0 else -1]
                record["rows"].append(run_row(row, order, args, Path(tmp), exports, done))
                write_outputs(args.out, record)
                print(f"{PROG}: {row.label}: {record['rows'][-1]['verdict']}", flush=True)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted; {len(record['rows'])} rows kept in {args.out}")
            return 130
    print(f"{PROG}: wrote {args.out / 'benchmark_app.json'} and {args.out / 'benchmark_app.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_cli(PROG, lambda: body(argv))


if __name__ == "__main__":
    raise SystemExit(main())
