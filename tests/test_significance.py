"""resbench.report.significance: the moderated t on log fork medians, its prior and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from resbench.report import significance as sig


def test_one_row_is_the_plain_t_test_on_the_log_fork_medians():
    new, old = [12.0, 12.9, 12.4], [10.0, 10.6, 9.8]  # no other row: no prior to shrink toward
    (est,) = sig.moderated_tests([(new, old)])
    plain = stats.ttest_ind(np.log(old), np.log(new))
    assert est.p == pytest.approx(plain.pvalue, rel=1e-9)
    assert est.df == 4 and est.prior_df == 0
    gm = math.exp(np.log(old).mean() - np.log(new).mean())
    assert est.speedup == pytest.approx(gm)
    assert est.low < gm < est.high
    # the 99% interval excludes 1 exactly when p < 0.01
    assert (est.high < 1) == (est.p < 0.01)


def test_the_prior_is_fitted_back_from_rows_drawn_from_it():
    rng = np.random.default_rng(0)
    s0_sq, d0, d, rows = 0.01, 6.0, 2, 4000
    true = d0 * s0_sq / rng.chisquare(d0, rows)  # scaled inverse chi-square row variances
    seen = true * rng.chisquare(d, rows) / d  # what 2 forks a side (2 df) estimate of each
    got_s0_sq, got_d0 = sig.fit_f_dist(seen, [d] * rows)
    assert got_d0 == pytest.approx(d0, rel=0.3)
    assert got_s0_sq == pytest.approx(s0_sq, rel=0.15)
    # rows that all share one variance scatter only as chi-square does: a prior of (near) no spread
    same = 0.01 * rng.chisquare(d, rows) / d
    assert sig.fit_f_dist(same, [d] * rows)[1] > 50


def test_trigamma_inverse_inverts_trigamma():
    for y in (0.3, 1.0, 2.5, 40.0):
        assert sig.trigamma_inverse(float(special.polygamma(1, y))) == pytest.approx(y, rel=1e-6)


def test_a_row_whose_two_forks_agreed_by_luck_borrows_the_other_rows_spread():
    rng = np.random.default_rng(1)
    pairs = [
        (
            list(10 * np.exp(0.1 * rng.standard_normal(2))),
            list(10 * np.exp(0.1 * rng.standard_normal(2))),
        )
        for _ in range(11)
    ]
    lucky = ([10.0, 10.05], [10.6, 10.65])  # 6% apart, each side's two forks within 0.5%
    est = sig.moderated_tests([*pairs, lucky])[-1]
    alone = sig.moderated_tests([lucky])[0]
    assert alone.p < 0.01 and sig.decide(alone, 0.05)[0] == "faster"  # by its own spread alone
    assert est.sd > 5 * alone.sd and est.p > 0.01  # with the rows' prior: not shown
    assert sig.decide(est, 0.05)[0] == "inconclusive"


def _estimate(speedup, low, high, p, forks=(2, 2), sd=0.1, prior_df=4.0):
    return sig.Estimate(speedup, low, high, p, 2 + prior_df, sd, prior_df, forks)


def test_the_verdicts():
    assert sig.decide(_estimate(0.8, 0.75, 0.85, 1e-4), 0.05) == ("slower", "")
    assert sig.decide(_estimate(1.3, 1.2, 1.4, 1e-4), 0.05) == ("faster", "")
    assert sig.decide(_estimate(1.01, 0.97, 1.04, 0.4), 0.05) == ("unchanged", "")
    # a significant change that is within the threshold while its interval reaches past it
    verdict, note = sig.decide(_estimate(1.03, 1.01, 1.07, 1e-3, sd=0.01), 0.05)
    assert verdict == "inconclusive" and "straddles the 5% threshold" in note
    # 25% slower by the estimate, but the forks scatter too much to tell with two a side
    verdict, note = sig.decide(_estimate(0.8, 0.5, 1.3, 0.2), 0.05)
    assert verdict == "inconclusive"
    assert note.startswith(
        "changed by +25.0%; the forks' spread is too large to tell 5% with 2 forks"
    )
    forks = int(note.rsplit("--forks ", 1)[1])
    assert forks > 2
    # that many forks would give an interval as narrow as the note promises
    half = stats.t.ppf(0.995, 2 * forks - 2 + 4.0) * 0.1 * math.sqrt(2 / forks)
    assert half <= math.log(1 / 0.8) / 2


def test_one_process_notes_name_the_side():
    assert sig.one_process_note(0.8, (1, 1)) == "changed by +25.0%, one process per side"
    assert "one process on the old side" in sig.one_process_note(1.0, (3, 1))
    assert "one process on the new side" in sig.one_process_note(1.0, (1, 3))
    assert sig.percent(0.05) == "5%" and sig.percent(0.025) == "2.5%"


def test_the_prior_follows_the_rows_time_so_long_precise_rows_keep_their_power():
    # short steps 30% apart between processes, long ones 2%: one prior for both would lend the
    # long rows the short rows' noise; the trend in log time keeps them apart
    rng = np.random.default_rng(0)
    times = [2.0] * 10 + [200.0] * 4
    sds = [0.3] * 10 + [0.02] * 4
    found = np.zeros(4)
    for _ in range(20):
        pairs = [
            (list(t * 1.25 * np.exp(sd * rng.standard_normal(2))),
             list(t * np.exp(sd * rng.standard_normal(2))))
            for t, sd in zip(times, sds, strict=True)
        ]  # fmt: skip
        ests = sig.moderated_tests(pairs)
        found += [sig.decide(e, 0.05)[0] == "slower" for e in ests[10:]]
        priors, _ = sig.fit_f_dist_trend([e.sd**2 for e in ests], [2] * 14, np.log(times))
        assert priors[-1] < priors[0]  # a long row's prior spread is the smaller
    assert (found / 20 >= 0.9).all(), found
