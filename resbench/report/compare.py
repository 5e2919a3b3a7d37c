"""Two runs -> which Configs got faster or slower, with significance, load and environment warnings.

Significance comes from the variance between processes (``significance``: a moderated t on the
log fork medians), never from one process's per-iteration samples, which share that process's
layout and placement and so understate what differs between two runs. A Config with two forks or
more on both sides is "faster"/"slower" when the change is significant at ``alpha`` and beyond the
threshold, "unchanged" when its interval lies within the threshold, else "inconclusive" with the
reason; with one process on a side (a sweep without ``--forks``, an old run, a pytest-benchmark
file) it is tested against the spread between processes that A/A runs measured (``prior``): a
change beyond it is "faster"/"slower", one within it "inconclusive", never "unchanged". Rows are
paired by ``matching`` (a default thread count matches the other machine's default), and the rows
that found no partner are counted with what kept them apart. A comparison across machines names
what differs in their arithmetic (``fingerprint``). A row measured under load says so. A Config
scored on labelled images in both runs shows its top-1 change beside the speed verdict, and is
"less accurate" when it fell by more than the allowed drop, or when its drop against fp32 eager
became significant (``accuracy_compare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from resbench.engine.measure import Result
from resbench.report import fingerprint, matching, serving_compare
from resbench.report import prior as prior_module
from resbench.report.accuracy_compare import accuracy_line, accuracy_verdict
from resbench.report.analysis import (
    LOAD_MEDIAN_CORES,
    MAX_ACCURACY_DROP,
    row_loaded,
)
from resbench.report.load import load_warning, run_load
from resbench.report.loading import setting_label
from resbench.report.serving_compare import OFFLINE, PEAKS, SERVER
from resbench.report.significance import (
    ALPHA,
    MIN_FORKS,
    decide,
    fork_medians,
    moderated_tests,
    percent,
)
from resbench.report.text import fmt, p_text

VERDICTS = ("faster", "slower", "unchanged", "inconclusive")
FAIL_ON = ("slower", "inconclusive")  # --fail-on: what stops a build (inconclusive: slower too)


def one_process_hint(side: str, env: dict, results: Sequence[Result]) -> str | None:
    """Why the ``side`` run ("new", "old" or "both") has one process per Config and how to get
    more, fitting where it came from; None where every ok row has two forks or more."""
    if all(len(fork_medians(r)) >= MIN_FORKS for r in results if r.status == "ok"):
        return None
    which = "both runs" if side == "both" else f"the {side} run"
    if str(env.get("source", "")).startswith("pytest-benchmark"):
        files = (
            "are pytest-benchmark files: their"
            if side == "both"
            else "is a pytest-benchmark file: its"
        )
        return (
            f"{which} {files} rounds all come from one process; compare sweeps with --forks 2 or "
            "more to test smaller changes"
        )
    return (
        f"{which} measured each Config in one process (a sweep with --forks 1, or older than "
        "forks): sweep with --forks 2 or more to test smaller changes"
    )


def _typical(r: Result) -> float:
    """A row's time as the comparison sees it: the geometric mean of its fork medians (what the
    test on their logs compares), its headline median with one process."""
    medians = fork_medians(r)
    if len(medians) < MIN_FORKS:
        return math.nan if r.latency_ms_median is None else r.latency_ms_median
    return float(np.exp(np.mean(np.log(medians))))


def compare(
    new: Sequence[Result],
    old: Sequence[Result],
    threshold: float = 0.05,
    alpha: float = ALPHA,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    new_env: dict | None = None,
    old_env: dict | None = None,
    prior: prior_module.Prior | None = None,
    found: matching.Matching | None = None,
) -> pd.DataFrame:
    """Match Results by Config (``matching``, with the runs' envs: default thread counts match;
    ``found``: that matching, made already);
    a verdict and a note per row.

    ``speedup`` is old over new: with forks on both sides, the ratio of the geometric means of the
    fork medians (the estimate the test is about), with its (1 - alpha) interval in ``speedup low``
    and ``speedup high`` and the moderated t's ``p``; with one process on a side, the headline
    medians' ratio, tested against ``prior`` (the A/A spread between processes; default the
    shipped one) with its interval and p under it. ``forks`` is "old/new", and ``threads
    old/new`` is there where a matched pair's counts differ (both left to their machine's
    default). Where both sides of any row were scored on labelled images, two more columns beside the verdict: ``accuracy change``
    (points of top-1, new minus old) and ``accuracy`` (``accuracy_verdict``). A server row is
    judged on its peak rate (``speedup`` new peak over old) or on whether it was sustained (no
    speedup), as ``serving_compare`` says; ``basis`` names which, and the serving columns (scenario,
    streams, threads, images/s, peaks, p99, sustained) come where some row needs them.
    """
    matched = (found or matching.match(new, old, new_env, old_env)).pairs
    prior = prior or prior_module.load()
    forks = [(len(fork_medians(r)), len(fork_medians(base))) for r, base in matched]
    bases = [serving_compare.basis(r, base) for r, base in matched]
    tested = [
        i
        for i, f in enumerate(forks)
        if min(f) >= MIN_FORKS and bases[i] == serving_compare.LATENCY
    ]
    pairs = [(fork_medians(matched[i][0]), fork_medians(matched[i][1])) for i in tested]
    estimates = dict(zip(tested, moderated_tests(pairs, alpha), strict=True)) if pairs else {}
    shown = serving_compare.needed(matched)
    rows = []
    for i, (r, base) in enumerate(matched):
        est = estimates.get(i)
        old_ms, new_ms = _typical(base), _typical(r)  # what the speedup is the ratio of
        low = high = p = math.nan
        if bases[i] != serving_compare.LATENCY:  # a peak rate, or a rate sustained or not
            old_ms = new_ms = math.nan
            speedup, verdict, note = serving_compare.judge(r, base, bases[i], threshold)
        elif est is not None:
            speedup, low, high, p = est.speedup, est.low, est.high, est.p
            verdict, note = decide(est, threshold, alpha)
        elif min(forks[i]) == 0:
            old_ms = new_ms = speedup = math.nan
            verdict, note = "inconclusive", "no latency recorded on a side"
        else:  # one process on a side: against the spread between processes of A/A runs
            est = prior_module.one_process_test(fork_medians(r), fork_medians(base), prior, alpha)
            speedup, low, high, p = est.speedup, est.low, est.high, est.p
            verdict, note = prior_module.decide(est, prior, threshold, alpha)
        notes = [note] if note else []
        loaded = [
            f"{side} run: {res.foreign_cpu:.2f} cores busy elsewhere"
            for side, res in (("new", r), ("old", base))
            if row_loaded(res.foreign_cpu)
        ]
        if loaded:
            notes.append("measured under load (" + "; ".join(loaded) + "): not trustworthy")
            if verdict != "unchanged":
                verdict += ", under load"
        change, accurate, why = accuracy_verdict(r, base, max_accuracy_drop, alpha)
        notes += [why] if why else []
        rows.append(
            {
                "model": r.model,
                "batch": r.batch_size,
                "mode": r.mode,
                "setting": setting_label(r),
                "device": r.device,
                **{k: v for k, v in serving_compare.columns(r, base).items() if k in shown},
                "forks": f"{forks[i][1]}/{forks[i][0]}",
                "threads old/new": matching.threads_shown(r, base),
                "old ms": old_ms,
                "new ms": new_ms,
                "speedup": speedup,
                "speedup low": low,
                "speedup high": high,
                "p": p,
                "verdict": verdict,
                "accuracy change": change,
                "accuracy": accurate,
                "note": "; ".join(notes),
                "basis": bases[i],  # what the verdict is on (serving_compare); not shown
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty and not table["threads old/new"].astype(bool).any():  # counts agree
        table = table.drop(columns="threads old/new")
    if table.empty or table["accuracy change"].isna().all():  # no accuracy: the speed table alone
        return table.drop(columns=["accuracy change", "accuracy"], errors="ignore")
    return table


def failing_rows(table: pd.DataFrame, fail_on: str = "slower") -> int:
    """How many rows ``--fail-on`` fails on: "slower" (also measured under load), or with
    "inconclusive" the slower and the inconclusive ones."""
    if table.empty:
        return 0
    verdicts = table["verdict"]
    failing = verdicts.str.startswith("slower")
    if fail_on == "inconclusive":
        failing |= verdicts.str.startswith("inconclusive")
    return int(failing.sum())


def load_differences(new: Sequence[Result], old: Sequence[Result]) -> list[str]:
    """Sentences when either run was measured under load, or their loads differ."""
    out = []
    for side, results in (("new", new), ("old", old)):
        warning = load_warning(results)
        if warning:
            out.append(f"The {side} run was {warning}.")
    a, b = run_load(new), run_load(old)
    if a.rows and b.rows and abs(a.median_cores - b.median_cores) >= LOAD_MEDIAN_CORES:
        out.append(
            f"The two runs saw different loads: median {b.median_cores:.2f} cores busy elsewhere "
            f"in the old run, {a.median_cores:.2f} in the new; a speed-up may be the load's."
        )
    return out


def _verdict_line(
    table: pd.DataFrame,
    threshold: float,
    alpha: float,
    hints: Sequence[str] = (),
    prior: prior_module.Prior | None = None,
) -> str:
    verdicts = table["verdict"]
    counts = {v: int(verdicts.str.startswith(v).sum()) for v in VERDICTS}
    loaded = verdicts.str.contains("under load").sum()
    on_latency = table["basis"] == serving_compare.LATENCY
    one = table["forks"].map(lambda f: min(map(int, f.split("/"))) < MIN_FORKS)
    one_process = (one & on_latency & table["speedup"].notna()).sum()
    ratios = table["speedup"].dropna()  # none for a row judged on whether it was sustained
    geo = f"{np.exp(np.log(ratios).mean()):.3f}x" if len(ratios) else "none (no ratio)"
    text = (
        f"Verdict: {counts['faster']} faster, {counts['slower']} slower, {counts['unchanged']} "
        f"unchanged, {counts['inconclusive']} inconclusive of {len(table)} matching Configs "
        f"(threshold {percent(threshold)}; significance from the variance between forks, a "
        f"moderated t on the log fork medians, p < {alpha:g}); geometric-mean speedup {geo}."
    )
    if one_process and prior is not None:
        rows = "1 row has" if one_process == 1 else f"{one_process} rows have"
        text += (
            f" {rows} one process on a side, so their changes were tested against "
            f"{prior_module.describe(prior)}: {'; '.join(hints)}."
        )
    text += serving_compare.served_sentence(int((~on_latency).sum()))
    if loaded:
        text += f" {loaded} of the verdicts were measured under load."
    return text


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"{low:.3f}x to {high:.3f}x"


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    numbers = {c: table[c].map(fmt) for c in (*OFFLINE, *PEAKS) if c in table}
    numbers |= {c: table[c].map(lambda v: fmt(v, 2)) for c in SERVER[:2] if c in table}
    shown = (
        table.drop(columns="basis", errors="ignore")
        .assign(
            **numbers,
            **{
                "old ms": table["old ms"].map(lambda v: fmt(v, 3)),
                "new ms": table["new ms"].map(lambda v: fmt(v, 3)),
                "speedup": table["speedup"].map(lambda v: "" if math.isnan(v) else f"{v:.3f}x"),
                "speedup low": [
                    _interval(a, b)
                    for a, b in zip(table["speedup low"], table["speedup high"], strict=True)
                ],
                "p": table["p"].map(lambda v: "" if math.isnan(v) else p_text(v)),
            },
        )
        .drop(columns=["speedup high"])
    )
    shown = shown.rename(columns={"speedup low": "interval", "forks": "forks old/new"})
    if "accuracy change" in table:
        change = table["accuracy change"].map(lambda v: "" if math.isnan(v) else f"{v:+.2f}")
        shown = shown.assign(**{"accuracy change": change}).rename(
            columns={"accuracy change": "top-1 change, points"}
        )
    return shown


def compare_report(
    new_env: dict,
    new: Sequence[Result],
    old_env: dict,
    old: Sequence[Result],
    threshold: float,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    alpha: float = ALPHA,
    prior: prior_module.Prior | None = None,
) -> tuple[list[str], str, pd.DataFrame]:
    """(warnings, verdict line, table) of a comparison, shared by the markdown and the page. Rows
    left without a partner are a warning naming what kept them apart; with no row matched, the
    verdict line says that nothing was compared and why."""
    prior = prior or prior_module.load()
    pairs = matching.match(new, old, new_env, old_env)
    table = compare(
        new, old, threshold, alpha, max_accuracy_drop, new_env=new_env, old_env=old_env,
        prior=prior, found=pairs,
    )  # fmt: skip
    warns = []
    machines = fingerprint.warning(new_env, new, old_env, old)
    if machines:
        warns.append(machines)
    warns += load_differences(new, old)
    unmatched = matching.unmatched_sentence(pairs, new_env, old_env)
    if table.empty:
        nothing = "No Config was compared: no ok row of the new run matched one of the old"
        return warns, (f"{nothing}. {unmatched}" if unmatched else f"{nothing}."), table
    if unmatched:
        warns.append(f"Only part of the rows were compared: {unmatched}")
    hints = [
        h
        for h in (one_process_hint("new", new_env, new), one_process_hint("old", old_env, old))
        if h is not None
    ]
    if len(hints) == 2 and hints[0].replace("new", "old") == hints[1]:  # the same reason twice
        hints = [one_process_hint("both", new_env, new)]
    if hints:
        hosts = {str(e.get("cpu")) for e in (new_env, old_env) if e.get("cpu")}
        if hosts - {prior.host}:
            warns.append(
                f"Rows with one process a side were tested against the A/A spread of {prior.host} "
                f"({prior.source}); these runs ran on {' and '.join(sorted(hosts))}: measure "
                "yours with `python scripts/aa_check.py` and pass its JSON with --prior."
            )
    verdict = _verdict_line(table, threshold, alpha, hints, prior)
    return warns, verdict + accuracy_line(table, max_accuracy_drop), table


def markdown_of(
    report: tuple[list[str], str, pd.DataFrame], names: tuple[str, str] = ("new", "old")
) -> str:
    """compare.md's text from ``compare_report``'s (warnings, verdict line, table)."""
    warns, verdict, table = report
    out = [f"# Comparison: {names[0]} (new) against {names[1]} (old)", ""]
    out += [f"- **Warning:** {w}" for w in warns]
    if warns:
        out.append("")
    if table.empty:
        return "\n".join([*out, verdict]) + "\n"
    out += [
        f"**{verdict}**",
        "",
        shown_table(table).to_markdown(index=False, disable_numparse=True),
    ]
    return "\n".join(out) + "\n"


def compare_markdown(
    new_env: dict,
    new: Sequence[Result],
    old_env: dict,
    old: Sequence[Result],
    threshold: float,
    names: tuple[str, str] = ("new", "old"),
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    prior: prior_module.Prior | None = None,
) -> str:
    report = compare_report(new_env, new, old_env, old, threshold, max_accuracy_drop, prior=prior)
    return markdown_of(report, names)
