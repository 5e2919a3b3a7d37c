"""Two runs -> which Configs got faster or slower, with significance, load and environment warnings.

Significance comes from the variance between processes (``significance``: a moderated t on the
log fork medians), never from one process's per-iteration samples, which share that process's
layout and placement and so understate what differs between two runs. A Config with two forks or
more on both sides is "faster"/"slower" when the change is significant at ``alpha`` and beyond the
threshold, "unchanged" when its interval lies within the threshold, else "inconclusive" with the
reason; with one process on a side (a sweep without ``--forks``, an old run, a pytest-benchmark
file) it is "inconclusive" with its change and that reason, never "unchanged". A row measured under
load says so. A Config scored on labelled images in both runs shows its top-1 change beside the
speed verdict, and is "less accurate" when it fell by more than the allowed drop, or when its drop
against fp32 eager became significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from resbench.measure import Result
from resbench.report import serving_compare
from resbench.report.analysis import (
    DROP_TOLERANCE,
    LOAD_MEDIAN_CORES,
    MAX_ACCURACY_DROP,
    finite,
    load_warning,
    row_loaded,
    run_load,
)
from resbench.report.loading import setting_label
from resbench.report.serving_compare import OFFLINE, PEAKS, SERVER
from resbench.report.significance import (
    ALPHA,
    MIN_FORKS,
    decide,
    fork_medians,
    moderated_tests,
    one_process_note,
    percent,
)
from resbench.report.text import fmt, p_text, points

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
VERDICTS = ("faster", "slower", "unchanged", "inconclusive")


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
            "more to test a change"
        )
    return (
        f"{which} measured each Config in one process (a sweep with --forks 1, or older than "
        "forks): sweep with --forks 2 or more to test a change"
    )


def _key(r: Result) -> tuple:
    return (*r.key(), setting_label(r))


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
) -> pd.DataFrame:
    """Match Results by Config; a verdict and a note per row.

    ``speedup`` is old over new: with forks on both sides, the ratio of the geometric means of the
    fork medians (the estimate the test is about), with its (1 - alpha) interval in ``speedup low``
    and ``speedup high`` and the moderated t's ``p``; with one process on a side, the headline
    medians' ratio, untested (NaN interval and p). ``forks`` is "old/new". Where both sides of any
    row were scored on labelled images, two more columns beside the verdict: ``accuracy change``
    (points of top-1, new minus old) and ``accuracy`` (``accuracy_verdict``). A server row is
    judged on its peak rate (``speedup`` new peak over old) or on whether it was sustained (no
    speedup), as ``serving_compare`` says; ``basis`` names which, and the serving columns (scenario,
    streams, threads, images/s, peaks, p99, sustained) come where some row needs them.
    """
    old_by_key = {_key(r): r for r in old if r.status == "ok"}
    matched = [(r, old_by_key[_key(r)]) for r in new if r.status == "ok" and _key(r) in old_by_key]
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
        else:
            speedup = base.latency_ms_median / r.latency_ms_median
            verdict, note = "inconclusive", one_process_note(speedup, forks[i])
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
    if table.empty or table["accuracy change"].isna().all():  # no accuracy: the speed table alone
        return table.drop(columns=["accuracy change", "accuracy"], errors="ignore")
    return table


def slower_rows(table: pd.DataFrame) -> int:
    """How many rows' verdict is "slower" (also measured under load): what ``--fail-on slower``
    fails on."""
    return 0 if table.empty else int(table["verdict"].str.startswith("slower").sum())


def significant_drop(r: Result, alpha: float) -> bool:
    """Whether a row lost top-1 against fp32 eager of its own run by more than chance (McNemar)."""
    p, drop = finite(getattr(r, "accuracy_drop_p", None)), finite(getattr(r, "accuracy_drop", None))
    return p is not None and drop is not None and p < alpha and drop > 0


def accuracy_verdict(
    new: Result, old: Result, max_drop: float, alpha: float
) -> tuple[float, str, str]:
    """(change in points, "less accurate" or "", why) for one Config scored in both runs.

    Less accurate: its top-1 fell by more than ``max_drop`` points, or it fell and its drop against
    its own run's fp32 eager is now significant (McNemar p < ``alpha``) where it was not. NaN and
    no verdict where either side was not scored.
    """
    a, b = finite(getattr(new, "top1_accuracy", None)), finite(getattr(old, "top1_accuracy", None))
    if a is None or b is None:
        return math.nan, "", ""
    change = (a - b) * 100
    notes = []
    seen = {side: (getattr(x, "eval_images", None), getattr(x, "eval_data", None))
            for side, x in (("new", new), ("old", old))}  # fmt: skip
    if seen["new"] != seen["old"]:
        said = "; ".join(f"{side}: {n} images of {d}" for side, (n, d) in seen.items())
        notes.append(f"scored on other images than the old run's ({said}): not like for like")
    if change < -(max_drop + DROP_TOLERANCE):
        notes.insert(
            0, f"top-1 fell {-change:.2f} points, more than the allowed {points(max_drop)}"
        )
        return change, "less accurate", "; ".join(notes)
    if change < 0 and significant_drop(new, alpha) and not significant_drop(old, alpha):
        notes.insert(
            0,
            f"top-1 fell {-change:.2f} points and its drop against fp32 eager is now significant "
            f"(McNemar p {p_text(new.accuracy_drop_p)}; the old run's "
            f"{p_text(getattr(old, 'accuracy_drop_p', None)) or 'not recorded'})",
        )
        return change, "less accurate", "; ".join(notes)
    return change, "", "; ".join(notes)


def accuracy_line(table: pd.DataFrame, max_drop: float) -> str:
    """The verdict's sentence on accuracy: how many scored Configs became less accurate, named."""
    if "accuracy" not in table:
        return ""
    scored = table[table["accuracy change"].notna()]
    worse = scored[scored["accuracy"] == "less accurate"]
    text = (
        f" Accuracy compared on {len(scored)} Configs scored in both runs: {len(worse)} less "
        f"accurate (top-1 fell by more than {points(max_drop)}, or its drop against fp32 eager "
        "became significant)"
    )
    if len(worse):
        names = [
            f"{r['model']} b{r['batch']} {r['mode']} {r['setting']} ({r['accuracy change']:+.2f})"
            for _, r in worse.iterrows()
        ]
        text += ": " + ", ".join(names)
    return text + "."


def env_differences(a: dict, b: dict) -> list[str]:
    return [
        f"{key}: {b.get(key)!r} -> {a.get(key)!r}"
        for key in _ENV_KEYS_THAT_MATTER
        if key in a and key in b and a.get(key) != b.get(key)
    ]


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
    table: pd.DataFrame, threshold: float, alpha: float, hints: Sequence[str] = ()
) -> str:
    verdicts = table["verdict"]
    counts = {v: int(verdicts.str.startswith(v).sum()) for v in VERDICTS}
    loaded = verdicts.str.contains("under load").sum()
    on_latency = table["basis"] == serving_compare.LATENCY
    untested = (table["p"].isna() & on_latency & table["speedup"].notna()).sum()
    ratios = table["speedup"].dropna()  # none for a row judged on whether it was sustained
    geo = f"{np.exp(np.log(ratios).mean()):.3f}x" if len(ratios) else "none (no ratio)"
    text = (
        f"Verdict: {counts['faster']} faster, {counts['slower']} slower, {counts['unchanged']} "
        f"unchanged, {counts['inconclusive']} inconclusive of {len(table)} matching Configs "
        f"(threshold {percent(threshold)}; significance from the variance between forks, a "
        f"moderated t on the log fork medians, p < {alpha:g}); geometric-mean speedup {geo}."
    )
    if untested:
        rows = "1 row has" if untested == 1 else f"{untested} rows have"
        text += f" {rows} one process on a side, so their changes are untested: {'; '.join(hints)}."
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
) -> tuple[list[str], str, pd.DataFrame]:
    """(warnings, verdict line, table) of a comparison, shared by the markdown and the page."""
    table = compare(new, old, threshold, alpha, max_accuracy_drop=max_accuracy_drop)
    warns = []
    diffs = env_differences(new_env, old_env)
    if diffs:
        warns.append(
            "The environments differ, so differences may not be the code's: " + "; ".join(diffs)
        )
    warns += load_differences(new, old)
    ok_new = {r.key() for r in new if r.status == "ok"}
    ok_old = {r.key() for r in old if r.status == "ok"}
    unmatched = (
        f" Not compared: {len(ok_new - ok_old)} ok Configs only in the new run, "
        f"{len(ok_old - ok_new)} only in the old."
        if ok_new ^ ok_old
        else ""
    )
    if table.empty:
        return warns, "No Config was measured successfully in both runs." + unmatched, table
    hints = [
        h
        for h in (one_process_hint("new", new_env, new), one_process_hint("old", old_env, old))
        if h is not None
    ]
    if len(hints) == 2 and hints[0].replace("new", "old") == hints[1]:  # the same reason twice
        hints = [one_process_hint("both", new_env, new)]
    verdict = _verdict_line(table, threshold, alpha, hints)
    return warns, verdict + accuracy_line(table, max_accuracy_drop) + unmatched, table


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
) -> str:
    report = compare_report(new_env, new, old_env, old, threshold, max_accuracy_drop)
    return markdown_of(report, names)
