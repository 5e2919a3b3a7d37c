"""Does ``report --compare`` hold across processes? An A/A check and a power check over fresh sweeps.

    python scripts/aa_check.py --out results/aa-cpu.json [--sweeps 8] [--strict] [SWEEP FLAGS...]

K fresh sweeps of one grid (default the issue's 12 Configs: small_resnet20, small_resnet56 and
resnet18; batch 1 and 8; fp32 and fp32+cl) with the sweep's default settings, alternating plain
and slowed: a slowed sweep runs with ``RESBENCH_INJECT_SLOWDOWN=--slowdown`` (0.25: every timed
step sleeps a quarter of its own duration, a real 25% slowdown; ``resbench.engine.measure.slowed``).
Then ``report.compare`` on every pair:

- plain x plain pairs are A/A (identical code): the false-positive rate is the fraction of their
  rows called "faster" or "slower". The issue's target: at most 5%.
- slowed (new) x plain (old) pairs measure power: the fraction of rows called "slower", overall
  and per row. The target: at least 90%. A slowed row called "unchanged" is a defect (counted in
  ``unchanged_under_slowdown``); "inconclusive" is the honest answer when the forks do not suffice.

Flags this script does not know go to every sweep (``--forks 4``, ``--budget 0.5``, ``--device
cuda``, ``--models resnet50 --batch-sizes 128 --settings bf16+cl`` for a GPU-bound grid). The JSON
(``--out``) holds the machine, the command, the grid, the forks, the verdict counts per pair, the
false-positive rate, the power and the inconclusive counts. With ``--strict`` the exit code is 1
when the A/A rate is over 5% or the power under 90% (or either could not be measured); else
missing a target is only reported.

The JSON also records ``one_process_prior``: the spread between processes of identical code, by row
time, fitted on every plain sweep's fork medians (``resbench.report.prior``), which ``report
--compare --prior THIS.json`` tests rows with one process a side against. ``one_process_check``
says what that gives: every A/A and slowed pair compared again with one process a side (each
row's first fork), its false-positive rate and power. ``--reuse --runs A B`` reads several
campaigns' folders: the prior pools them (each row's spread about its own campaign's mean), the
pairs stay within a campaign.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resbench import report  # noqa: E402
from resbench.engine.measure import SLOWDOWN_ENV, Result  # noqa: E402
from resbench.report import prior as prior_module  # noqa: E402
from resbench.report.cli import parse_threshold  # noqa: E402
from resbench.report.compare import VERDICTS  # noqa: E402
from resbench.report.significance import fork_medians  # noqa: E402

GRID = {
    "models": "small_resnet20,small_resnet56,resnet18",
    "batch_sizes": "1,8",
    "settings": "fp32,fp32+cl",
}
MAX_FALSE_POSITIVES = 0.05
MIN_POWER = 0.9
MACHINE_KEYS = ("cpu", "logical_cores", "torch_threads", "gpu_names", "torch", "cuda", "hostname")
EXIT_MISSED = 1  # --strict: a target was missed (2 stays a usage error)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Other flags are passed to every sweep.",
        allow_abbrev=False,  # a sweep flag is never taken for an abbreviation of this script's
    )
    p.add_argument("--sweeps", type=int, default=8, help="fresh sweeps, alternately plain and "
                   "slowed, the first plain (default: %(default)s: 6 A/A pairs, 16 power pairs)")  # fmt: skip
    p.add_argument("--slowdown", type=float, default=0.25, help="the slowed sweeps' "
                   f"{SLOWDOWN_ENV} (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--threshold", default="5%", help="report --compare's --threshold (default: 5%%)"
    )
    p.add_argument("--models", default=GRID["models"], help="default: %(default)s")
    p.add_argument("--batch-sizes", default=GRID["batch_sizes"], help="default: %(default)s")
    p.add_argument("--settings", default=GRID["settings"], help="default: %(default)s")
    p.add_argument("--runs", type=Path, nargs="+", help="where the sweeps' run folders go "
                   "(default: a new temporary folder); each sweep gets NN-plain or NN-slowed in it;"
                   " with --reuse, one or more campaigns' folders")  # fmt: skip
    p.add_argument("--reuse", action="store_true", help="summarise the sweeps already in --runs "
                   "(NN-plain, NN-slowed) instead of running new ones")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("aa-check.json"), help="the JSON written")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p


def row_label(r: Result) -> str:
    return f"{r.model} b{r.batch_size} {r.mode} {r.setting} {r.device}"


def _counts(table) -> dict[str, int]:
    verdicts = table["verdict"] if not table.empty else []
    counts = {v: sum(1 for x in verdicts if x.startswith(v)) for v in VERDICTS}
    counts["under load"] = sum(1 for x in verdicts if "under load" in x)
    return counts


def campaign(name: str) -> str:
    """The campaign a sweep's name belongs to ("results/aa-cpu-runs/00-plain" -> its folder)."""
    return str(Path(name).parent)


def pairs_of(plain: Sequence, slowed: Sequence) -> list[tuple[str, tuple, tuple]]:
    """(kind, old, new) of every A/A pair (plain i < j) and power pair (slowed new, plain old),
    within each campaign."""
    jobs = [("aa", a, b) for a, b in itertools.combinations(plain, 2)]
    jobs += [("power", p, s) for s in slowed for p in plain]
    return [job for job in jobs if campaign(job[1][0]) == campaign(job[2][0])]


def one_process(results: Sequence[Result]) -> list[Result]:
    """Each row as if measured in one process: its first fork's median alone."""
    out = []
    for r in results:
        medians = fork_medians(r)
        if r.status == "ok" and medians:
            one = {"forks": 1, "fork_medians_ms": [medians[0]], "latency_ms_median": medians[0]}
            out.append(dataclasses.replace(r, **one))
    return out


def fit_prior(plain: Sequence[tuple[str, Sequence[Result]]], host: str) -> prior_module.Prior:
    """The one-process prior from the plain sweeps, each row's spread within its campaign."""
    names = sorted({campaign(n) for n, _ in plain})
    groups = []
    for name in names:
        groups += prior_module.groups_of([(n, r) for n, r in plain if campaign(n) == name])
    return prior_module.fit(groups, source=", ".join(names), host=host)


def one_process_check(
    plain: Sequence, slowed: Sequence, threshold: float, prior: prior_module.Prior
) -> dict:
    """Every pair compared again with one process a side: how often the prior calls an A/A row
    changed (false positives) and a slowed row slower (power)."""
    seen = {"aa": [0, 0], "power": [0, 0]}  # [rows, called changed / slower]
    for kind, (_, old), (_, new) in pairs_of(plain, slowed):
        table = report.compare(one_process(new), one_process(old), threshold, prior=prior)
        verdicts = list(table["verdict"]) if not table.empty else []
        seen[kind][0] += len(verdicts)
        called = ("faster", "slower") if kind == "aa" else ("slower",)
        seen[kind][1] += sum(v.startswith(called) for v in verdicts)
    (aa_rows, aa_hit), (power_rows, power_hit) = seen["aa"], seen["power"]
    return {
        "aa_rows": aa_rows,
        "aa_changed": aa_hit,
        "false_positive_rate": aa_hit / aa_rows if aa_rows else None,
        "power_rows": power_rows,
        "power_flagged": power_hit,
        "power": power_hit / power_rows if power_rows else None,
        "note": "in-sample: the pairs are of the sweeps the prior was fitted on",
    }


def summarise(
    plain: Sequence[tuple[str, Sequence[Result]]],
    slowed: Sequence[tuple[str, Sequence[Result]]],
    threshold: float,
    prior: prior_module.Prior | None = None,
) -> dict:
    """Verdict counts per pair, the A/A false-positive rate and the power, from named runs.

    Every plain pair (i < j) is compared as new = j against old = i; every slowed run as new
    against every plain run as old, within a campaign. Rates are None where no row was compared.
    """
    pairs, per_row = [], {}
    gate = {"aa": [0, 0], "power": [0, 0]}  # [pairs, pairs where --fail-on slower would exit 1]
    aa = {"rows": 0, "changed": 0, "inconclusive": 0}
    power = {"rows": 0, "slower": 0, "inconclusive": 0, "unchanged": 0, "faster": 0}
    for kind, (old_name, old), (new_name, new) in pairs_of(plain, slowed):
        table = report.compare(new, old, threshold, prior=prior)
        counts = _counts(table)
        pairs.append({"kind": kind, "new": new_name, "old": old_name, "rows": len(table), **counts})
        gate[kind][0] += 1
        gate[kind][1] += counts["slower"] > 0
        if kind == "aa":
            aa["rows"] += len(table)
            aa["changed"] += counts["faster"] + counts["slower"]
            aa["inconclusive"] += counts["inconclusive"]
            continue
        for key in ("slower", "inconclusive", "unchanged", "faster"):
            power[key] += counts[key]
        power["rows"] += len(table)
        for _, row in table.iterrows():
            label = f"{row['model']} b{row['batch']} {row['mode']} {row['setting']} {row['device']}"
            seen = per_row.setdefault(label, {"pairs": 0, "slower": 0, "verdicts": {}})
            seen["pairs"] += 1
            seen["slower"] += row["verdict"].startswith("slower")
            verdict = row["verdict"].split(",")[0]
            seen["verdicts"][verdict] = seen["verdicts"].get(verdict, 0) + 1
    for seen in per_row.values():
        seen["power"] = seen["slower"] / seen["pairs"]
    return {
        "pairs": pairs,
        "aa_rows": aa["rows"],
        "aa_changed": aa["changed"],
        "false_positive_rate": aa["changed"] / aa["rows"] if aa["rows"] else None,
        "power_rows": power["rows"],
        "power_flagged": power["slower"],
        "power": power["slower"] / power["rows"] if power["rows"] else None,
        "power_per_row": per_row,
        "inconclusive": {"aa": aa["inconclusive"], "power": power["inconclusive"]},
        # the CI gate's view: a pair "fails" when any of its rows is slower
        "fail_on_slower": {kind: {"pairs": n, "exit_1": hit} for kind, (n, hit) in gate.items()},
        "unchanged_under_slowdown": power["unchanged"],
        "faster_under_slowdown": power["faster"],
    }


def missed(summary: dict) -> list[str]:
    """The targets a summary misses, in words (empty: both met)."""
    out = []
    rate, power = summary["false_positive_rate"], summary["power"]
    if rate is None:
        out.append("no A/A pair (fewer than two plain sweeps): the false-positive rate is unknown")
    elif rate > MAX_FALSE_POSITIVES:
        out.append(f"A/A false positives {rate:.1%} > {MAX_FALSE_POSITIVES:.0%}")
    if power is None:
        out.append("no slowed sweep: the power is unknown")
    elif power < MIN_POWER:
        out.append(f"power {power:.1%} < {MIN_POWER:.0%}")
    return out


def sweep_command(args, extra: Sequence[str], out: Path) -> list[str]:
    return [
        sys.executable, "-m", "resbench.sweep", "--models", args.models, "--batch-sizes",
        args.batch_sizes, "--settings", args.settings, "--no-progress", *extra, "--out", str(out),
    ]  # fmt: skip


def run_sweeps(args, extra: Sequence[str], runs: Path) -> tuple[list, list, dict]:
    """The K sweeps, one after another: (plain runs, slowed runs, the first run's env)."""
    plain, slowed, env = [], [], {}
    for i in range(args.sweeps):
        kind = "plain" if i % 2 == 0 else "slowed"
        out = runs / f"{i:02d}-{kind}"
        environ = dict(os.environ)
        environ.pop(SLOWDOWN_ENV, None)
        if kind == "slowed":
            environ[SLOWDOWN_ENV] = str(args.slowdown)
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), environ.get("PYTHONPATH")])
        )
        print(f"aa_check: sweep {i + 1}/{args.sweeps} ({kind}) -> {out}", flush=True)
        done = subprocess.run(sweep_command(args, extra, out), env=environ, cwd=ROOT, check=False)
        if done.returncode not in (0, 4):  # 4: some Configs ended in error; the rest compare
            raise SystemExit(f"aa_check: the sweep into {out} exited {done.returncode}")
        run_env, results = report.load(out)
        env = env or run_env
        (plain if kind == "plain" else slowed).append((str(out), results))
    return plain, slowed, env


def read_sweeps(folders: Sequence[Path]) -> tuple[list, list, dict]:
    """The sweeps earlier aa_checks left in ``folders`` (NN-plain, NN-slowed), in order, each
    named by its path (its campaign is its folder)."""
    plain, slowed, env = [], [], {}
    for runs in folders:
        for out in sorted(p for p in runs.iterdir() if p.is_dir() and "-" in p.name):
            run_env, results = report.load(out)
            env = env or run_env
            (slowed if out.name.endswith("-slowed") else plain).append((str(out), results))
    return plain, slowed, env


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    try:
        threshold = parse_threshold(args.threshold)
    except ValueError as exc:
        print(f"aa_check: error: {exc}", file=sys.stderr)
        return 2
    if args.sweeps < 2 or args.slowdown <= 0:
        print("aa_check: error: --sweeps must be 2 or more, --slowdown above 0", file=sys.stderr)
        return 2
    if args.reuse:
        if args.runs is None:
            print("aa_check: error: --reuse needs --runs FOLDER", file=sys.stderr)
            return 2
        missing = [str(r) for r in args.runs if not r.is_dir()]
        if missing:
            print(f"aa_check: error: --runs: no such folder: {', '.join(missing)}", file=sys.stderr)
            return 2
        folders = args.runs
        plain, slowed, env = read_sweeps(folders)
    else:
        if args.runs is not None and len(args.runs) > 1:
            print("aa_check: error: new sweeps go in one --runs folder", file=sys.stderr)
            return 2
        folders = args.runs or [Path(tempfile.mkdtemp(prefix="aa-check-"))]
        folders[0].mkdir(parents=True, exist_ok=True)
        plain, slowed, env = run_sweeps(args, extra, folders[0])
    try:
        prior = fit_prior(plain, host=str(env.get("cpu") or "unknown host"))
    except ValueError as exc:  # too few plain sweeps or rows: the summary still comes
        prior = None
        print(f"aa_check: no one-process prior: {exc}", file=sys.stderr)
    summary = summarise(plain, slowed, threshold, prior)
    rows = [r for _, results in plain + slowed for r in results if r.status == "ok"]
    record = {
        "machine": {k: env[k] for k in MACHINE_KEYS if k in env},
        "command": " ".join(
            ["python", "scripts/aa_check.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "sweep_command": " ".join(sweep_command(args, extra, Path("RUN"))[1:]),
        "grid": {"models": args.models, "batch_sizes": args.batch_sizes, "settings": args.settings},
        "forks": sorted({len(fork_medians(r)) for r in rows}),
        "repeats": sorted({r.repeats for r in rows if r.repeats is not None}),
        "threshold": threshold,
        "slowdown": args.slowdown,
        "sweeps": [{"name": n, "kind": Path(n).name.split("-", 1)[1]} for n, _ in plain + slowed],
        "runs": ", ".join(map(str, folders)),
        **summary,
        prior_module.KEY: prior.to_dict() if prior else None,
        "one_process_check": one_process_check(plain, slowed, threshold, prior) if prior else None,
        "targets": {"max_false_positive_rate": MAX_FALSE_POSITIVES, "min_power": MIN_POWER},
        "missed": missed(summary),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    rate, power = summary["false_positive_rate"], summary["power"]
    print(
        f"aa_check: A/A {summary['aa_changed']} of {summary['aa_rows']} rows changed "
        f"({'n/a' if rate is None else f'{rate:.1%}'}); power {summary['power_flagged']} of "
        f"{summary['power_rows']} slowed rows flagged slower "
        f"({'n/a' if power is None else f'{power:.1%}'}); inconclusive {summary['inconclusive']}; "
        f"wrote {args.out}"
    )
    for kind, seen in summary["fail_on_slower"].items():
        print(f"aa_check: --fail-on slower would exit 1 in {seen['exit_1']} of {seen['pairs']} "
              f"{'A/A' if kind == 'aa' else 'slowed'} pairs")  # fmt: skip
    if prior is not None:
        check = record["one_process_check"]
        print(
            f"aa_check: one process a side, against the prior ({prior_module.describe(prior)}): "
            f"A/A {check['aa_changed']} of {check['aa_rows']} rows changed; slowed "
            f"{check['power_flagged']} of {check['power_rows']} called slower"
        )
    for line in record["missed"]:
        print(f"aa_check: missed: {line}")
    return EXIT_MISSED if args.strict and record["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
