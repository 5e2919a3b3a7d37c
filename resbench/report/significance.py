"""Is a change between two runs real? A moderated t-test on the log fork medians, and the verdicts.

What varies between two measurements of one Config is mostly the process: every sample of a
process shares its memory layout, allocator state and placement, so per-iteration samples are not
independent draws of what a comparison compares, and a test on them (Mann-Whitney on samples)
calls a 1.3x difference between two fresh processes of identical code "p 1e-26". The unit of
replication is the fork (a fresh worker process, ``Result.fork_medians_ms``): one number each.

The statistic, per Config: a pooled two-sample t on the logs of the fork medians. Logs, because a
slowdown multiplies a time (a 25% slower step is log 1.25 further whatever the Config's size) and
the spread between processes is about proportional to the time, so one variance fits both runs of
a row and the interval of the speedup (old / new) is exp(interval of the difference). With 2-4
forks a side a row's own variance has 2-6 degrees of freedom: a plain t-test is then valid but
nearly powerless (t > 9.9 at 2 df for p < 0.01), and its variance estimate is often lucky-small.
So each row's variance is shrunk toward a prior fitted across every tested row of both runs, as
limma's empirical Bayes does for thousands of genes with few replicates (Smyth 2004, "Linear
models and empirical Bayes methods for assessing differential expression in microarray
experiments"): the row variances are taken as scaled chi-square draws around a scaled inverse
chi-square prior (s0^2, d0), fitted by moments of log variances (``fit_f_dist``, limma's
``fitFDist``), with s0^2 a trend in the row's log time (``fit_f_dist_trend``, limma-trend): short
steps vary far more between processes than long ones (on the 2-core EPYC small_resnet20 at batch 1
read forks 20-100% apart, resnet18 at batch 8 1-5%), and one prior for both would drown the long
rows' precision in the short rows' noise (in results/aa-cpu, the trend found a 25% slowdown of
resnet18 b8 in 24 of 25 pairs where one prior found it in 4, with no A/A row called changed by
either). Each row's posterior variance is (d s^2 + d0 s0^2) / (d + d0), with d + d0 degrees
of freedom (capped, as limma caps them, at the rows' total). When rows differ widely in spread the
fit gives a small d0 and each row keeps mostly its own variance; when they agree, a row borrows
strength from the others. The test stays valid at any number of rows: with one row, d0 is 0 and it
is the plain t-test.

The verdicts (``decide``), at level ``alpha`` (0.01) and a relative ``threshold`` (5%):
"faster"/"slower" when p < alpha AND the speedup passes the threshold; "unchanged" when the whole
(1 - alpha) interval of the speedup lies within 1 +- threshold (evidence of no change, not absence
of evidence); "inconclusive" otherwise, with the reason and how many forks would decide. A row with
one process on either side (forks < 2: an old run, a pytest-benchmark file) has no variance
between processes of its own, and no sample-level test stands in for it: it is tested against the
spread between processes that A/A runs measured (``prior``), and is never "unchanged".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from resbench.datamodel import fork_medians  # noqa: F401 (compare and aa_check read it here)

ALPHA = 0.01  # significance level of "faster"/"slower"; the interval shown is 1 - ALPHA
MIN_FORKS = 2  # forks a side below which a row's process-to-process variance is not measured
MAX_FORKS_ADVISED = 100  # beyond this, "run with more forks" is not advice


@dataclass(frozen=True)
class Estimate:
    """One row's test: the speedup (old / new), its (1 - alpha) interval, p and the forks."""

    speedup: float  # ratio of the geometric means of the fork medians, old over new
    low: float
    high: float
    p: float
    df: float  # degrees of freedom of the moderated t (inf: the prior alone)
    sd: float  # posterior standard deviation of one log fork median
    prior_df: float  # d0 of the prior the row's variance was shrunk toward
    forks: tuple[int, int]  # (new, old)


def trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (x > 0), by Newton's method on 1/trigamma as limma does."""
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_f_dist(variances: Sequence[float], dfs: Sequence[float]) -> tuple[float, float]:
    """(s0^2, d0): the scaled inverse chi-square prior of row variances ``variances``, each with
    ``dfs`` degrees of freedom, fitted by the moments of their logs (limma's ``fitFDist``).

    d0 is inf where the log variances scatter no more than chi-square sampling alone would (every
    row has the same variance), 0 with fewer than two rows (no prior: each row's own variance).
    """
    x = np.maximum(np.asarray(variances, dtype=float), 0.0)
    d = np.asarray(dfs, dtype=float)
    if len(x) < 2:
        return (float(x[0]) if len(x) else 0.0), 0.0
    m = float(np.median(x))
    x = np.maximum(x, 1e-5 * (m if m > 0 else 1.0))  # an exactly-zero variance has no log
    e = np.log(x) - special.digamma(d / 2) + np.log(d / 2)
    mean = float(e.mean())
    var = float(((e - mean) ** 2).sum() / (len(e) - 1)) - float(special.polygamma(1, d / 2).mean())
    if var <= 0:
        return math.exp(mean), math.inf
    d0 = 2 * trigamma_inverse(var)
    return math.exp(mean + special.digamma(d0 / 2) - math.log(d0 / 2)), d0


def fit_f_dist_trend(
    variances: Sequence[float], dfs: Sequence[float], covariate: Sequence[float]
) -> tuple[np.ndarray, float]:
    """(s0^2 per row, d0): the prior of ``fit_f_dist`` with its scale a linear trend in
    ``covariate`` (limma's ``eBayes(trend=TRUE)``): the log variances are regressed on it, and d0
    comes from the scatter about the line. Fewer than three rows, or one covariate value for all,
    fall back to one prior for every row."""
    c = np.asarray(covariate, dtype=float)
    if len(c) < 3 or np.ptp(c) == 0:
        s0_sq, d0 = fit_f_dist(variances, dfs)
        return np.full(len(c), s0_sq), d0
    (intercept, slope), d0 = trend_line(variances, dfs, c)
    return np.exp(intercept + slope * c), d0


def trend_line(
    variances: Sequence[float], dfs: Sequence[float], covariate: Sequence[float]
) -> tuple[tuple[float, float], float]:
    """((a, b), d0) of ``fit_f_dist_trend``: the prior's scale is s0^2 = exp(a + b * covariate),
    with d0 degrees of freedom (inf where the rows scatter about the line no more than chi-square
    sampling alone would). Needs three rows or more and two covariate values or more."""
    x = np.maximum(np.asarray(variances, dtype=float), 0.0)
    d = np.asarray(dfs, dtype=float)
    c = np.asarray(covariate, dtype=float)
    m = float(np.median(x))
    x = np.maximum(x, 1e-5 * (m if m > 0 else 1.0))
    e = np.log(x) - special.digamma(d / 2) + np.log(d / 2)
    design = np.column_stack([np.ones_like(c), c])
    coef, *_ = np.linalg.lstsq(design, e, rcond=None)
    fitted = design @ coef
    var = float(((e - fitted) ** 2).sum() / (len(e) - 2)) - float(
        special.polygamma(1, d / 2).mean()
    )
    if var <= 0:
        return (float(coef[0]), float(coef[1])), math.inf
    d0 = 2 * trigamma_inverse(var)
    shift = float(special.digamma(d0 / 2) - math.log(d0 / 2))
    return (float(coef[0]) + shift, float(coef[1])), d0


def moderated_tests(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]], alpha: float = ALPHA
) -> list[Estimate]:
    """A moderated t per (new fork medians, old fork medians) pair, each side with >= 2 forks, the
    prior fitted across all the pairs."""
    logs = [(np.log(np.asarray(new, float)), np.log(np.asarray(old, float))) for new, old in pairs]
    if any(len(a) < MIN_FORKS or len(b) < MIN_FORKS for a, b in logs):
        raise ValueError(f"a moderated t needs {MIN_FORKS} forks or more on each side")
    dfs = [len(a) + len(b) - 2 for a, b in logs]
    variances = [
        (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / d
        for (a, b), d in zip(logs, dfs, strict=True)
    ]
    # the prior's scale follows the row's time: a millisecond step shares its cores' every hiccup,
    # a 200 ms one averages them out (on the 2-core EPYC fork spreads of 20-100% against 1-5%)
    size = [float(np.concatenate([a, b]).mean()) for a, b in logs]
    priors, d0 = fit_f_dist_trend(variances, dfs, size)
    out = []
    for (a, b), s_sq, d, s0_sq in zip(logs, variances, dfs, priors, strict=True):
        if math.isinf(d0):
            post = s0_sq
        else:
            post = (d * s_sq + d0 * s0_sq) / (d + d0) if d + d0 > 0 else s_sq
        df = min(d + d0, float(sum(dfs)))
        diff = float(b.mean() - a.mean())  # log(old / new): above 0 is faster
        se = math.sqrt(post * (1 / len(a) + 1 / len(b)))
        if se > 0:
            p = float(2 * stats.t.sf(abs(diff) / se, df))
            half = float(stats.t.ppf(1 - alpha / 2, df)) * se
        else:  # identical forks throughout: no spread to test against
            p, half = (0.0 if diff else 1.0), 0.0
        out.append(
            Estimate(
                speedup=math.exp(diff),
                low=math.exp(diff - half),
                high=math.exp(diff + half),
                p=p,
                df=df,
                sd=math.sqrt(post),
                prior_df=d0,
                forks=(len(a), len(b)),
            )
        )
    return out


def forks_needed(est: Estimate, threshold: float, alpha: float = ALPHA) -> int | None:
    """About how many forks a side would decide this row: the fewest whose (1 - alpha) interval of
    the log speedup is at most half the larger of the change and the threshold wide each side, at
    the row's posterior spread; None past MAX_FORKS_ADVISED."""
    target = max(abs(math.log(est.speedup)), math.log1p(threshold)) / 2
    for n in range(MIN_FORKS, MAX_FORKS_ADVISED + 1):
        df = 2 * n - 2 + est.prior_df
        if float(stats.t.ppf(1 - alpha / 2, df)) * est.sd * math.sqrt(2 / n) <= target:
            return n
    return None


def percent(fraction: float) -> str:
    """A threshold as written: 0.05 -> "5%", 0.025 -> "2.5%"."""
    return f"{fraction * 100:.3g}%"


def change_text(speedup: float) -> str:
    """The change of the time, new over old: "changed by +25.0%" for a speedup of 0.8x."""
    return f"changed by {1 / speedup - 1:+.1%}"


def one_process_note(speedup: float, forks: tuple[int, int]) -> str:
    """A row with one process on a side: its change and which side ("changed by +25.0%, one
    process per side"); ``prior.decide`` says what the A/A prior makes of it."""
    new, old = (f < MIN_FORKS for f in forks)
    where = "per side" if new and old else ("on the new side" if new else "on the old side")
    return f"{change_text(speedup)}, one process {where}"


def forks_text(forks: tuple[int, int]) -> str:
    new, old = forks
    return f"{new} forks a side" if new == old else f"{old} forks old and {new} new"


def decide(est: Estimate, threshold: float, alpha: float = ALPHA) -> tuple[str, str]:
    """(verdict, note) of one tested row: faster/slower/unchanged, or inconclusive with why."""
    beyond = abs(est.speedup - 1) > threshold
    if est.p < alpha and beyond:
        return ("faster" if est.speedup > 1 else "slower"), ""
    if est.low >= 1 - threshold and est.high <= 1 + threshold:
        return "unchanged", ""
    needed = forks_needed(est, threshold, alpha)
    advice = (
        f"run with --forks {needed}"
        if needed is not None and needed > max(est.forks)
        else f"more than {MAX_FORKS_ADVISED} forks a side would be needed"
        if needed is None
        else "run with more forks"
    )
    if est.p < alpha:  # a real change, but not shown to be beyond or within the threshold
        why = f"significant, but its interval straddles the {percent(threshold)} threshold"
    else:
        why = (
            f"the forks' spread is too large to tell {percent(threshold)} with "
            f"{forks_text(est.forks)}"
        )
    return "inconclusive", f"{change_text(est.speedup)}; {why}: {advice}"
