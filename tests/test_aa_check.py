"""scripts/aa_check.py: the A/A property and the power of ``report --compare``.

The fast form simulates processes with a known process effect (no sweeps): each fork is a process
whose every Config is off by a shared factor, each Config off by its own factor on top, and each
fork's median is the median of its few or many iterations. The rules must keep the A/A
false-positive rate at most 5% and flag a 25% slowdown in at least 90% of pairs where the forks
suffice, and say "inconclusive", never "unchanged", where they do not. One tiny real run of the
script keeps its sweep path working; the fault-injection hook it relies on is tested in measure().
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from resbench.engine import measure as measure_module
from resbench.engine.measure import Config, Result, measure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import aa_check

GRID = [
    (model, batch, cl)
    for model in ("small_resnet20", "small_resnet56", "resnet18")
    for batch in (1, 8)
    for cl in (False, True)
]
ITERATIONS = {"small_resnet20": 300, "small_resnet56": 60, "resnet18": 3}  # resnet18: 3 only


def simulated_sweep(rng, row_sd, forks, slowdown=0.0, process_sd=0.02, iteration_sd=0.05):
    """One sweep of GRID with ``forks`` simulated processes: fork k's time of a row is the row's
    true time x the process's shared factor x the row's own factor in that process, and its
    median is the median of that fork's iterations (3 for resnet18, as on a 2-core CPU)."""
    shared = process_sd * rng.standard_normal(forks)
    results = []
    for i, (model, batch, cl) in enumerate(GRID):
        true_ms = (1 + i) * batch * (1 + slowdown)
        n = ITERATIONS[model]
        medians, samples = [], []
        for k in range(forks):
            level = true_ms * np.exp(shared[k] + row_sd[i] * rng.standard_normal())
            fork = level * np.exp(iteration_sd * rng.standard_normal(n))
            medians.append(float(np.median(fork)))
            samples += list(fork)
        config = Config(model, batch, device="cpu", channels_last=cl)
        results.append(
            Result.for_config(
                config,
                latency_ms_median=float(np.median(medians)),
                forks=forks,
                fork_medians_ms=medians,
                iterations=n * forks,
                samples_ms=samples,
            )
        )
    return results


def simulated_check(seed, sweeps, row_sd, forks, slowdown=0.25):
    rng = np.random.default_rng(seed)
    plain = [(f"{i:02d}-plain", simulated_sweep(rng, row_sd, forks)) for i in range(sweeps)]
    slowed = [
        (f"{i:02d}-slowed", simulated_sweep(rng, row_sd, forks, slowdown)) for i in range(sweeps)
    ]
    return aa_check.summarise(plain, slowed, threshold=0.05)


def test_where_the_forks_suffice_aa_stays_under_5_percent_and_a_25_percent_slowdown_is_found():
    # 1-5% per-row process effect and 2% shared by each process: what 4 forks a side resolve
    row_sd = np.linspace(0.01, 0.05, len(GRID))
    summary = simulated_check(seed=0, sweeps=10, row_sd=row_sd, forks=4)
    assert summary["aa_rows"] == 45 * 12 and summary["power_rows"] == 100 * 12
    assert summary["false_positive_rate"] <= 0.05
    assert summary["power"] >= 0.9
    for label, seen in summary["power_per_row"].items():  # rows of 3 iterations too
        assert seen["power"] >= 0.9, (label, seen)
    assert summary["unchanged_under_slowdown"] == 0 and summary["faster_under_slowdown"] == 0
    assert not aa_check.missed(summary)
    gate = summary["fail_on_slower"]  # the CI gate: every slowed pair exits 1
    assert gate["power"] == {"pairs": 100, "exit_1": 100} and gate["aa"]["pairs"] == 45
    assert gate["aa"]["exit_1"] == sum(
        p["slower"] > 0 for p in summary["pairs"] if p["kind"] == "aa"
    )


def test_where_the_forks_do_not_suffice_it_is_inconclusive_never_unchanged():
    # a 25% per-row process effect (the worst rows seen on the 2-core EPYC) with 2 forks a side
    summary = simulated_check(seed=1, sweeps=6, row_sd=np.full(len(GRID), 0.25), forks=2)
    assert summary["false_positive_rate"] <= 0.05
    assert summary["unchanged_under_slowdown"] == 0
    assert summary["inconclusive"]["power"] >= 0.5 * summary["power_rows"]
    assert any("power" in line for line in aa_check.missed(summary))


def test_a_sample_level_test_would_fail_the_aa_property_where_the_forks_do_not():
    # the same simulated processes (10% per row): the per-iteration samples of two fresh processes
    # differ "significantly" for most rows of identical code, which is why no verdict rests on them
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(2)
    row_sd = np.full(len(GRID), 0.1)
    runs = [(f"{i}", simulated_sweep(rng, row_sd, 2)) for i in range(6)]
    (_, a), (_, b) = runs[:2]
    tiny = [
        mannwhitneyu(x.samples_ms, y.samples_ms).pvalue < 0.01 for x, y in zip(a, b, strict=True)
    ]
    assert sum(tiny) > 0.5 * len(GRID)
    summary = aa_check.summarise(runs, [], threshold=0.05)
    assert summary["aa_rows"] == 15 * 12 and summary["false_positive_rate"] <= 0.05


def test_the_slowdown_hook_sleeps_a_fraction_of_each_step(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(measure_module.time, "perf_counter", lambda: now[0])
    slept = []
    monkeypatch.setattr(measure_module.time, "sleep", slept.append)

    def step():
        now[0] += 0.004
        return "out"

    monkeypatch.delenv(measure_module.SLOWDOWN_ENV, raising=False)
    assert measure_module.slowed(step, "cpu") is step
    monkeypatch.setenv(measure_module.SLOWDOWN_ENV, "0.25")
    monkeypatch.setattr(measure_module.timing, "synchronize", lambda device: None)
    assert measure_module.slowed(step, "cpu")() == "out"
    assert slept == [pytest.approx(0.001)]
    for bad in ("-1", "a lot", "nan"):
        monkeypatch.setenv(measure_module.SLOWDOWN_ENV, bad)
        with pytest.raises(ValueError, match=f"RESBENCH_INJECT_SLOWDOWN='{bad}': give a factor"):
            measure_module.slowed(step, "cpu")


def test_measure_sleeps_after_every_timed_step_when_asked(monkeypatch):
    calls = []
    real_sleep = measure_module.time.sleep
    monkeypatch.setattr(measure_module.time, "sleep", lambda s: (calls.append(s), real_sleep(s)))
    monkeypatch.setenv(measure_module.SLOWDOWN_ENV, "0.25")
    r = measure(Config("small_resnet20", 1, device="cpu"), budget_s=0.05, peak=False)
    assert r.status == "ok" and len(calls) >= r.iterations


@pytest.mark.slow  # two fresh sweeps, each a new Python process with torch and a worker per fork
def test_a_real_aa_check_of_two_sweeps_writes_its_json(tmp_path, capsys):
    out = tmp_path / "aa.json"
    # one fork a sweep: the forks' own machinery is tests/test_forks.py's; here, that a flag the
    # script does not know reaches every sweep
    argv = ["--sweeps", "2", "--models", "small_resnet20", "--batch-sizes", "1", "--settings",
            "fp32", "--runs", str(tmp_path / "runs"), "--out", str(out), "--strict",
            "--device", "cpu", "--budget", "0.05", "--repeats", "1", "--forks", "1"]  # fmt: skip
    assert aa_check.main(argv) == 1  # --strict: no A/A pair among two sweeps, so a target missed
    data = json.loads(out.read_text())
    assert [s["kind"] for s in data["sweeps"]] == ["plain", "slowed"]
    assert (tmp_path / "runs" / "01-slowed" / "results.jsonl").exists()
    assert data["grid"] == {"models": "small_resnet20", "batch_sizes": "1", "settings": "fp32"}
    (pair,) = data["pairs"]
    assert pair["kind"] == "power" and pair["rows"] == 1
    assert sum(pair[v] for v in ("faster", "slower", "unchanged", "inconclusive")) == 1
    assert data["false_positive_rate"] is None and data["power_rows"] == 1
    assert "--budget 0.05" in data["sweep_command"] and data["machine"]["logical_cores"]
    assert "--forks 1" in data["sweep_command"]
    assert data["forks"] and data["missed"][0].startswith("no A/A pair")
    assert "aa_check: missed: no A/A pair" in capsys.readouterr().out


def test_reuse_recomputes_the_shipped_prior_from_the_committed_aa_runs(tmp_path, capsys):
    # the one-process prior `report --compare` ships is what the committed A/A runs give, and a
    # rerun of the script records it in its JSON
    from resbench.report import prior as prior_module

    root = Path(__file__).resolve().parent.parent
    folders = [root / "results" / "aa-cpu-runs", root / "results" / "aa-cpu-forks5-runs"]
    if not all(f.is_dir() for f in folders):
        pytest.skip("the committed A/A runs are not in this checkout")
    out = tmp_path / "aa.json"
    assert aa_check.main(["--reuse", "--runs", *map(str, folders), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    fitted, shipped = prior_module.load(out), prior_module.load()
    for name in ("intercept", "slope", "d0", "ms_low", "ms_high", "rows", "processes"):
        assert getattr(fitted, name) == pytest.approx(getattr(shipped, name), rel=1e-9), name
    assert data["one_process_prior"]["called_beyond"]["10 ms"] == pytest.approx(3.52, abs=0.01)
    check = data["one_process_check"]  # identical code, one process a side: never called changed
    assert check["aa_rows"] == 192 and check["false_positive_rate"] == 0.0
    assert "one process a side, against the prior" in capsys.readouterr().out


def test_a_prior_is_fitted_back_from_process_medians_drawn_from_it():
    # rows whose processes scatter 30% at 3 ms and 3% at 300 ms, as a sd falling with the time
    from resbench.report import prior as prior_module

    rng = np.random.default_rng(5)
    times = np.geomspace(3, 300, 12)
    sds = 0.3 * (times / 3) ** -0.5
    groups = [
        list(t * np.exp(s * rng.standard_normal(40))) for t, s in zip(times, sds, strict=True)
    ]
    fitted = prior_module.fit(groups, source="simulated", host="sim")
    assert fitted.slope == pytest.approx(2 * -0.5, abs=0.25)  # log variance falls twice as fast
    assert fitted.sd(3.0) == pytest.approx(0.3, rel=0.3)
    assert fitted.sd(300.0) == pytest.approx(0.03, rel=0.3)
    assert fitted.sd(1e6) == fitted.sd(fitted.ms_high)  # no extrapolation past the A/A rows
    with pytest.raises(ValueError, match="3 A/A rows or more"):
        prior_module.fit(groups[:2], source="x", host="x")
