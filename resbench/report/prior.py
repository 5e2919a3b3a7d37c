"""One process a side: the between-process spread that A/A runs measured, as a stated prior.

A row with one process on a side (a sweep without ``--forks``, an old run, a pytest-benchmark
file) carries no measure of how far a fresh process of the same code would land, so its own
samples cannot test a change (``significance``). What can: how far apart fresh processes of
identical code landed on this kind of host, measured by ``scripts/aa_check.py``'s A/A sweeps.

The prior is ``significance``'s empirical-Bayes prior with nothing of the row's own to shrink: the
log fork medians of each A/A row (plain sweeps only) give a between-process variance; their logs
are regressed on the row's log time (limma-trend, ``significance.trend_line``), since a 3 ms row
moves far more between processes than a 200 ms one. With no variance of its own, a row's log
change is then t-distributed with the prior's d0 degrees of freedom and scale s0(t) * sqrt(1/n_new
+ 1/n_old): the moderated t at d = 0. A change beyond it at ``alpha`` (and beyond the threshold) is
"faster" or "slower", and gates; one within it stays "inconclusive". Row times outside the A/A
rows' range take the spread at the nearer end (no extrapolation toward ever smaller spreads).

The shipped prior (``aa_prior.json`` beside this file) is the one ``python scripts/aa_check.py
--reuse --runs results/aa-cpu-runs results/aa-cpu-forks5-runs --out results/aa-cpu-prior.json``
recorded (AMD EPYC, 2 cores); ``report --compare --prior FILE`` takes another host's A/A JSON in
its place.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from resbench.datamodel import Result, fork_medians
from resbench.report.significance import ALPHA, Estimate, one_process_note, percent, trend_line
from resbench.report.text import p_text

SHIPPED = Path(__file__).with_name("aa_prior.json")
KEY = "one_process_prior"  # where an aa_check JSON keeps it
SHOWN_MS = (1.0, 10.0, 100.0)  # the row times the README and the notes quote the line at


@dataclass(frozen=True)
class Prior:
    """log s0^2 = intercept + slope * log(ms), with d0 degrees of freedom, over A/A rows whose
    typical times span ms_low..ms_high; where it came from."""

    intercept: float
    slope: float
    d0: float  # inf: the rows scatter about the line no more than sampling explains
    ms_low: float
    ms_high: float
    rows: int  # A/A rows (Configs) it was fitted on
    processes: int  # process medians behind them
    source: str  # the A/A runs it came from
    host: str  # their CPU (or GPU) name
    device: str = "cpu"

    def sd(self, ms: float) -> float:
        """The between-process sd of a log time of ``ms``, clamped to the A/A rows' range."""
        x = math.log(min(max(ms, self.ms_low), self.ms_high))
        return math.sqrt(math.exp(self.intercept + self.slope * x))

    def called_beyond(self, ms: float, alpha: float = ALPHA) -> float:
        """The smallest ratio (slower or faster) between one process a side that this prior calls a
        change at ``alpha``, for a row of ``ms``."""
        q = (
            float(stats.t.ppf(1 - alpha / 2, self.d0))
            if math.isfinite(self.d0)
            else float(stats.norm.ppf(1 - alpha / 2))
        )
        return math.exp(q * self.sd(ms) * math.sqrt(2))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["d0"] = None if math.isinf(self.d0) else self.d0
        out["called_beyond"] = {f"{ms:g} ms": round(self.called_beyond(ms), 3) for ms in SHOWN_MS}
        out["rule"] = (
            "one process a side: log(old/new) / (s0(ms) * sqrt(1/n_new + 1/n_old)) against Student's"
            f" t with d0 df, s0(ms)^2 = exp(intercept + slope * ln ms); p < {ALPHA:g} and beyond "
            "the threshold calls a change"
        )
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Prior:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        values["d0"] = math.inf if values.get("d0") is None else float(values["d0"])
        return cls(**values)


def fit(groups: Iterable[Sequence[float]], source: str, host: str, device: str = "cpu") -> Prior:
    """The prior from groups of process medians (ms), one group per A/A row and campaign: each
    group's variance of log medians about its own mean, regressed on its log time."""
    logs = [np.log(np.asarray(g, dtype=float)) for g in groups if len(g) >= 2]
    if len(logs) < 3:
        raise ValueError(f"a prior needs 3 A/A rows or more with 2 processes each; got {len(logs)}")
    variances = [float(((x - x.mean()) ** 2).sum() / (len(x) - 1)) for x in logs]
    dfs = [len(x) - 1 for x in logs]
    size = [float(x.mean()) for x in logs]
    if np.ptp(size) == 0:
        raise ValueError("a prior needs A/A rows of different times")
    (intercept, slope), d0 = trend_line(variances, dfs, size)
    return Prior(
        intercept=intercept,
        slope=slope,
        d0=d0,
        ms_low=float(math.exp(min(size))),
        ms_high=float(math.exp(max(size))),
        rows=len(logs),
        processes=sum(len(x) for x in logs),
        source=source,
        host=host,
        device=device,
    )


def groups_of(runs: Iterable[tuple[str, Sequence[Result]]]) -> list[list[float]]:
    """The process medians of each row (its Config) pooled over the named runs of one A/A
    campaign (its plain sweeps: identical code): a row's every process, one group."""
    groups: dict[tuple, list[float]] = {}
    for _, results in runs:
        for r in results:
            if r.status == "ok":
                groups.setdefault(r.key(), []).extend(fork_medians(r))
    return list(groups.values())


def load(path: Path | None = None) -> Prior:
    """The prior in ``path``: an aa_check JSON (its ``one_process_prior``) or a prior's own JSON;
    the shipped one without a path. ValueError, in one line, when it holds none."""
    return _read(Path(path) if path is not None else SHIPPED)


@functools.lru_cache(maxsize=8)
def _read(path: Path) -> Prior:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--prior {path}: cannot read an A/A JSON ({exc})") from None
    data = data.get(KEY, data) if isinstance(data, dict) else None
    try:
        return Prior.from_dict(data)
    except (TypeError, ValueError, AttributeError):
        raise ValueError(
            f"--prior {path}: no one-process prior in it; make one with `python scripts/aa_check.py "
            "--reuse --runs A/A-FOLDER --out FILE`"
        ) from None


def one_process_test(
    new: Sequence[float], old: Sequence[float], prior: Prior, alpha: float = ALPHA
) -> Estimate:
    """The change between process medians ``new`` and ``old`` (ms; one side or both has one),
    against the prior alone: speedup old/new, its (1 - alpha) interval, p."""
    a, b = np.log(np.asarray(new, dtype=float)), np.log(np.asarray(old, dtype=float))
    diff = float(b.mean() - a.mean())
    ms = math.exp((a.mean() + b.mean()) / 2)
    se = prior.sd(ms) * math.sqrt(1 / len(a) + 1 / len(b))
    dist = stats.t(prior.d0) if math.isfinite(prior.d0) else stats.norm()
    p = float(2 * dist.sf(abs(diff) / se))
    half = float(dist.ppf(1 - alpha / 2)) * se
    return Estimate(
        speedup=math.exp(diff),
        low=math.exp(diff - half),
        high=math.exp(diff + half),
        p=p,
        df=prior.d0,
        sd=prior.sd(ms),
        prior_df=prior.d0,
        forks=(len(a), len(b)),
    )


def describe(prior: Prior) -> str:
    """The prior in a clause: where it came from and where its line falls."""
    line = ", ".join(f"{prior.called_beyond(ms):.2f}x at {ms:g} ms" for ms in SHOWN_MS)
    return (
        f"the between-process spread of A/A runs on {prior.host} ({prior.source}, {prior.processes} "
        f"processes of {prior.rows} rows), which calls a change only beyond about {line}"
    )


def decide(est: Estimate, prior: Prior, threshold: float, alpha: float = ALPHA) -> tuple[str, str]:
    """(verdict, note) of a row with one process on a side, tested against ``prior``: "faster" or
    "slower" beyond the A/A spread (p < alpha) and the threshold, else "inconclusive"; never
    "unchanged", since one process a side cannot show that nothing changed."""
    said = one_process_note(est.speedup, (est.forks[0], est.forks[1]))
    if est.p < alpha and abs(est.speedup - 1) > threshold:
        verdict = "faster" if est.speedup > 1 else "slower"
        return verdict, (
            f"{said}: beyond the spread between processes of A/A runs on {prior.host} "
            f"(p {p_text(est.p)})"
        )
    within = (
        f"within the spread between processes of A/A runs on {prior.host} (p {p_text(est.p)})"
        if est.p >= alpha
        else f"beyond the A/A spread, but not beyond the {percent(threshold)} threshold"
    )
    return "inconclusive", f"{said}: {within}: sweep with --forks 2 or more to test it"
