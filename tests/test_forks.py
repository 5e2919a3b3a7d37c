"""--forks N: N passes over the grid, each in a fresh worker, rotated, with cumulative Results.

Most tests put an in-process stand-in for ``isolate.Worker`` into the runner (one instance per
pass, as the runner makes them), so that the pass loop, the rows and the resume are checked without
a process start each; one test runs real workers and checks their PIDs.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resbench import runfolder, sweep
from resbench.datamodel import fork_groups
from resbench.engine import pooling
from resbench.engine.measure import Config, Result, measure
from resbench.sweep import forks, isolate

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2,3,4",
        "--budget", "0.05", "--no-progress"]  # fmt: skip


def fake_result(config: Config, ms: float, **values) -> Result:
    """An ok Result of ``ms`` per iteration, as measure() makes one (three samples)."""
    fields = dict(
        latency_ms_median=ms, latency_ms_p10=ms, latency_ms_p90=ms, latency_ms_p99=ms,
        latency_ms_iqr=0.0, iterations=3, throughput_ips=config.batch_size / ms * 1e3,
        gflops_per_step=0.04 * config.batch_size, peak_tflops=1.0, peak_memory_mb=10.0,
        noisy=False, warmup_s=0.1, measure_s=0.01, repeats=1, repeat_medians_ms=[ms],
        repeat_spread=0.0, samples_ms=[ms] * 3, timestamp=repr(time.time()),
    )  # fmt: skip
    return Result.for_config(config, **(fields | values))


class FakeWorkers:
    """Stands in for isolate.Worker in the runner: each instance is one "process" (one pass),
    measuring in this process; ``fail`` maps (batch size, fork) to the status that fork ends in."""

    def __init__(self, fail: dict | None = None) -> None:
        self.made: list[FakeWorkers.Worker] = []
        self.fail = dict(fail or {})

    def __call__(self, timeout_s: float, target=None):
        worker = FakeWorkers.Worker(self, len(self.made))
        self.made.append(worker)
        return worker

    class Worker:
        def __init__(self, owner: FakeWorkers, index: int) -> None:
            self.owner, self.index, self.starts, self.calls = owner, index, 0, []

        def measure(self, config: Config, budget_s: float, peak=True, **options) -> Result:
            self.starts = 1
            self.calls.append((config, budget_s, options))
            fork = 0 if options["score"] else 1  # ms: a later fork's process reads 50% slower
            status = self.owner.fail.pop((config.batch_size, len(self.owner.made) - 1), None)
            if status is not None:
                return Result.for_config(config, status=status, error=f"{status} here")
            return fake_result(config, (1.0 + config.batch_size / 10) * (1 + 0.5 * fork))

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass


@pytest.fixture
def workers(monkeypatch):
    fake = FakeWorkers()
    monkeypatch.setattr(sweep.runner, "Worker", fake)
    return fake


def sweep_main(out: Path, *argv: str) -> int:
    return sweep.main([*argv, "--out", str(out)])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ----------------------------------------------------------------------------- combine


def test_combine_takes_the_median_of_fork_medians_and_pools_the_rest():
    config = Config("small_resnet20", 2, device="cpu", precision="bf16")
    fork0 = fake_result(
        config, 2.0, samples_ms=[1.9, 2.0, 2.1], peak_memory_mb=30.0, max_abs_diff=0.01,
        top1_agreement=1.0, top1_accuracy=0.9, eval_images=150, energy_j=3.0, avg_power_w=30.0,
        power_method="rapl", foreign_cpu=0.01, compile_time_s=0.5, repeat_spread=0.02,
    )  # fmt: skip
    fork1 = fake_result(config, 4.0, samples_ms=[3.0, 4.0, 5.0, 4.0], iterations=4,
                        peak_memory_mb=20.0, energy_j=5.0, avg_power_w=25.0, power_method="rapl",
                        foreign_cpu=0.3, compile_time_s=0.9, repeat_spread=0.05)  # fmt: skip
    one = pooling.combine(None, fork0)
    assert (one.forks, one.fork_medians_ms, one.fork_spread) == (1, [2.0], 0.0)
    assert one.latency_ms_median == 2.0 and one.samples_ms == fork0.samples_ms
    two = pooling.combine(one, fork1)
    assert two.forks == 2 and two.fork_medians_ms == [2.0, 4.0]
    assert two.latency_ms_median == 3.0 and two.fork_spread == pytest.approx(2.0 / 3.0)
    assert two.throughput_ips == pytest.approx(2 / 3.0e-3) and two.noisy  # 67% apart
    assert two.tflops_achieved == pytest.approx(0.08 / 3e-3 / 1e3)
    assert two.mfu == pytest.approx(two.tflops_achieved / 1.0)
    assert two.peak_exceeded is False
    # a combined median faster than the peak allows: flagged, no MFU above 100%
    fast = pooling.combine(two, dataclasses.replace(fork1, peak_tflops=1e-6))
    assert fast.peak_exceeded is True and fast.mfu is None
    assert two.samples_ms == [1.9, 2.0, 2.1, 3.0, 4.0, 5.0, 4.0] and two.iterations == 7
    # each fork weighted equally (fork 0's three samples 1/6 each, fork 1's four 1/8 each)
    assert two.fork_samples == [3, 4] and two.latency_ms_p90 == 5.0 and two.latency_ms_p10 == 1.9
    assert two.warmup_s == pytest.approx(0.2) and two.measure_s == pytest.approx(0.02)
    assert two.peak_memory_mb == 30.0 and two.foreign_cpu == 0.3
    assert two.repeat_medians_ms == [2.0, 4.0] and two.repeat_spread == 0.05  # inside a process
    assert two.energy_j == pytest.approx(8.0)
    assert two.joules_per_image == pytest.approx(8.0 / (7 * 2))
    assert two.avg_power_w == pytest.approx(8.0 / (3.0 / 30.0 + 5.0 / 25.0))
    # what only fork 0 measures is fork 0's (fork 1 did not score)
    assert (two.max_abs_diff, two.top1_agreement, two.top1_accuracy) == (0.01, 1.0, 0.9)
    assert two.eval_images == 150 and two.compile_time_s == 0.5
    three = pooling.combine(two, fake_result(config, 2.5))
    assert three.forks == 3 and three.fork_medians_ms == [2.0, 4.0, 2.5]
    assert three.latency_ms_median == 2.5 and three.iterations == 10


def test_percentiles_weight_each_fork_alike_so_p99_is_never_below_the_median():
    # the trial's row: a fast fork of 305 samples around 1.40 ms and a slow one of 3 around 299.6;
    # pooled, p99 was 3.61 ms under a median of 150.47: a p99 no fork's own samples would give
    config = Config("small_resnet18", 1, device="cpu")
    fast = [1.35 + 0.1 * i / 304 for i in range(305)]
    slow = [299.0, 299.55, 300.1]
    median = fast[152]  # the median of 305 samples, as measure() takes it
    one = pooling.combine(None, fake_result(config, median, samples_ms=fast, iterations=305))
    two = pooling.combine(one, fake_result(config, 299.55, samples_ms=slow))
    assert two.fork_samples == [305, 3] and two.latency_ms_median == pytest.approx(150.475, 1e-3)
    assert two.latency_ms_p10 < two.latency_ms_median < two.latency_ms_p99
    assert two.latency_ms_p99 == pytest.approx(300.1) and two.latency_ms_p10 < 1.5
    # a row written before fork_samples: its forks are cut from the samples by their medians
    old = dataclasses.replace(two, fork_samples=[])
    assert [len(g) for g in fork_groups(old)] == [305, 3]
    three = pooling.combine(old, fake_result(config, 1.41, samples_ms=fast))
    assert three.fork_samples == [305, 3, 305] and three.latency_ms_p99 >= 299.0
    # forks that cannot be told apart: percentiles unknown, never pooled
    lost = dataclasses.replace(two, fork_samples=[], fork_medians_ms=[1.0, 2.0])
    assert pooling.combine(lost, fake_result(config, 1.5)).latency_ms_p99 is None


def test_combine_reads_a_row_from_before_forks_as_one_process():
    config = Config("small_resnet20", 1, device="cpu")
    old = Result.from_dict({k: v for k, v in fake_result(config, 2.0).to_dict().items()
                            if not k.startswith("fork")})  # fmt: skip
    assert old.forks is None and old.fork_medians_ms == []
    both = pooling.combine(old, fake_result(config, 3.0))
    assert both.forks == 2 and both.fork_medians_ms == [2.0, 3.0]


def test_pass_k_starts_k_over_n_of_the_way_through_the_grid():
    grid = sweep.expand(["cpu"], ["small_resnet20"], [1, 2, 3, 4, 5, 6])
    batches = [[c.batch_size for c in forks.rotated(grid, k, 3)] for k in range(3)]
    assert batches == [[1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 1, 2], [5, 6, 1, 2, 3, 4]]


# ----------------------------------------------------------------------------- the passes


def test_forks_run_rotated_passes_in_fresh_workers_writing_cumulative_rows(tmp_path, workers):
    out = tmp_path / "run"
    assert sweep_main(out, *GRID, "--forks", "2") == 0
    assert len(workers.made) == 2 and [w.starts for w in workers.made] == [1, 1]
    assert [[c.batch_size for c, _, _ in w.calls] for w in workers.made] == [
        [1, 2, 3, 4],
        [3, 4, 1, 2],
    ]
    # the budget is the Config's, shared by its forks; only fork 0 scores
    assert {b for w in workers.made for _, b, _ in w.calls} == {0.025}
    assert [o["score"] for _, _, o in workers.made[0].calls] == [True] * 4
    assert [o["score"] for _, _, o in workers.made[1].calls] == [False] * 4
    rows = lines(out / runfolder.RESULTS_FILE)
    assert [(r["batch_size"], r["forks"]) for r in rows] == [
        (1, 1), (2, 1), (3, 1), (4, 1), (3, 2), (4, 2), (1, 2), (2, 2)]  # fmt: skip
    for r in runfolder.read_results(out):
        first = 1.0 + r.batch_size / 10
        assert r.fork_medians_ms == pytest.approx([first, 1.5 * first])
        assert r.latency_ms_median == pytest.approx(1.25 * first)
        assert r.fork_spread == pytest.approx(0.4) and r.iterations == 6
    recorded = runfolder.recorded_options(out)
    assert recorded["forks"] == 2


def test_one_fork_is_one_pass_whose_rows_say_so(tmp_path, workers):
    out = tmp_path / "run"
    assert sweep_main(out, *GRID, "--forks", "1", "--isolate", "on") == 0
    assert len(workers.made) == 1
    rows = runfolder.read_results(out)
    assert [(r.forks, r.fork_medians_ms) for r in rows] == [
        (1, [r.latency_ms_median]) for r in rows
    ]


def test_the_default_is_two_forks_and_one_with_isolate_off(tmp_path, workers, monkeypatch):
    assert sweep_main(tmp_path / "a", *GRID) == 0
    assert len(workers.made) == 2 and runfolder.recorded_options(tmp_path / "a")["forks"] == 2
    assert {r.repeats for r in runfolder.read_results(tmp_path / "a")} == {1}  # 2 forks x 1
    monkeypatch.setattr(sweep.runner, "measure", lambda c, *a, **k: fake_result(c, 1.0))
    assert sweep_main(tmp_path / "b", *GRID, "--isolate", "off") == 0
    assert len(workers.made) == 2  # no worker: one fork, in this process
    assert runfolder.recorded_options(tmp_path / "b")["forks"] == 1


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--isolate", "off", "--forks", "2"], "--forks 2 measures each Config in 2 fresh worker "
         "processes, and --isolate off measures in this one; give --forks 1 or drop --isolate off"),
        (["--forks", "0"], "--forks must be at least 1 and at most 100; got 0"),
        (["--forks", "1000"], "--forks must be at least 1 and at most 100; got 1000"),
    ],
)  # fmt: skip
def test_forks_without_workers_or_out_of_bounds_are_one_line_and_exit_2(
    argv, says, tmp_path, capsys, workers
):
    assert sweep_main(tmp_path / "run", *GRID, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert not workers.made and not (tmp_path / "run").exists()


def test_a_failed_fork_keeps_its_row_and_resume_combines_it_with_the_last_ok(
    tmp_path, workers, capsys
):
    out = tmp_path / "run"
    # batch 2 errs in fork 1 (pass 1); batch 3 runs out of memory in fork 0: batch 4 is skipped
    workers.fail = {(2, 1): "error", (3, 0): "oom"}
    assert sweep_main(out, *GRID, "--forks", "2") == sweep.EXIT_ERRORS
    assert [[c.batch_size for c, _, _ in w.calls] for w in workers.made] == [[1, 2, 3], [1, 2]]
    by = {r.batch_size: r for r in runfolder.read_results(out)}
    assert by[2].status == "error" and by[2].error == "fork 2 of 2: error here"
    assert by[3].status == "oom" and by[3].error == "fork 1 of 2: oom here"
    assert by[4].status == "skipped" and "batch 3 already ran out of memory" in by[4].error
    assert by[1].forks == 2
    capsys.readouterr()
    assert sweep_main(out, "--resume", "--no-progress") == 0
    assert "planned 4 Configs x 2 forks, 1 to run (3 already done)" in capsys.readouterr().out
    resumed = workers.made[2:]
    assert [[(c.batch_size, o["score"]) for c, _, o in w.calls] for w in resumed] == [[(2, False)]]
    two = runfolder.read_results(out)[-1]
    assert two.batch_size == 2 and two.status == "ok" and two.forks == 2
    assert two.fork_medians_ms == pytest.approx([1.2, 1.8])  # its fork 0's row, then the retry


def test_resume_refuses_fewer_forks_and_adds_forks_when_given_more(tmp_path, workers, capsys):
    out = tmp_path / "run"
    assert sweep_main(out, *GRID, "--forks", "2") == 0
    capsys.readouterr()
    assert sweep_main(out, "--resume", "--forks", "1", "--isolate", "off") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--resume: --forks 1 is fewer than the run's 2: its finished Results combine" in err
    assert len(workers.made) == 2  # nothing measured
    assert sweep_main(out, "--resume", "--forks", "3", "--no-progress") == 0
    assert len(workers.made) == 3  # one more pass, one more fresh worker
    third = [c.batch_size for c, _, _ in workers.made[2].calls]
    assert third == [c.batch_size for c in forks.rotated(
        sweep.expand(["cpu"], ["small_resnet20"], [1, 2, 3, 4]), 2, 3)]  # fmt: skip
    assert {r.forks for r in runfolder.read_results(out)} == {3}
    assert runfolder.recorded_options(out)["forks"] == 3


def test_a_run_from_before_forks_resumes_as_one_process_of_two_repeats(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls: list = []

    def fake(config, *args, **kwargs):
        calls.append(kwargs)
        return fake_result(config, 1.0)

    monkeypatch.setattr(sweep.runner, "measure", fake)
    assert sweep_main(out, *GRID, "--batch-sizes", "1", "--isolate", "off") == 0
    record = json.loads((out / runfolder.RUN_FILE).read_text())
    for entry in record["invocations"]:  # as a run recorded it before --forks existed
        del entry["options"]["forks"]
    (out / runfolder.RUN_FILE).write_text(json.dumps(record))
    calls.clear()
    assert sweep_main(out, "--resume", "--batch-sizes", "1,2", "--no-progress") == 0
    assert [(k["repeats"], k["score"]) for k in calls] == [(2, True)]  # one fork, its old repeats
    assert runfolder.recorded_options(out)["forks"] == 1


# kill -9 between two rows of pass 1, then resume: the run goes on inside that fork
_FORKED_FAKE_SWEEP = """
import sys, time
from resbench import sweep
from resbench.engine.measure import Result
class Worker:
    def __init__(self, timeout_s, target=None):
        pass
    def measure(self, config, budget_s, peak=True, **options):
        time.sleep(0.3)
        ms = 1.0 + config.batch_size + (0.0 if options["score"] else 0.5)
        return Result.for_config(config, latency_ms_median=ms, throughput_ips=1.0, iterations=3,
                                 samples_ms=[ms] * 3, timestamp=repr(time.time()))
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        pass
sweep.runner.Worker = Worker
sys.exit(sweep.main(sys.argv[1:]))
"""


def test_sigkill_in_a_later_fork_resumes_inside_that_fork(tmp_path, workers, capsys):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FORKED_FAKE_SWEEP, *GRID, "--forks", "2", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    path = out / runfolder.RESULTS_FILE
    deadline = time.monotonic() + 120
    while len(lines(path)) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    before = [r.to_dict() for r in runfolder.read_results_file(path)]
    assert 5 <= len(before) < 8  # all of pass 0, and part of pass 1
    done = {r["batch_size"] for r in before if r["forks"] == 2}
    pass1 = [3, 4, 1, 2]
    assert done == set(pass1[: len(before) - 4])
    capsys.readouterr()
    assert sweep_main(out, "--resume", "--no-progress") == 0
    assert f"({len(done)} already done)" in capsys.readouterr().out
    # one fresh worker for the rest of pass 1: the Configs with one fork, none scored again
    assert len(workers.made) == 1
    assert [(c.batch_size, o["score"]) for c, _, o in workers.made[0].calls] == [
        (b, False) for b in pass1 if b not in done
    ]
    final = runfolder.read_results(out)
    assert sorted(r.batch_size for r in final) == [1, 2, 3, 4]
    assert all(r.forks == 2 for r in final)
    kept = {r["batch_size"]: r["timestamp"] for r in before if r["forks"] == 2}
    assert {r.batch_size: r.timestamp for r in final if r.batch_size in done} == kept
    for r in final:  # fork 0's median from the killed process, fork 1's from whichever ran it
        later = 1.5 + r.batch_size if r.batch_size in done else (1 + r.batch_size / 10) * 1.5
        assert r.fork_medians_ms == pytest.approx([1.0 + r.batch_size, later])


# ----------------------------------------------------------------------------- for real


def test_later_forks_do_not_score_the_agreement():
    config = Config("small_resnet20", 1, device="cpu", precision="bf16")  # not fp32 eager
    quick = {"peak": False, "allow_emulated": True, "max_warmup_s": 0.05}
    scored = measure(config, 0.02, **quick)
    unscored = measure(config, 0.02, **quick, score=False)
    assert scored.status == unscored.status == "ok"
    assert scored.max_abs_diff is not None and scored.top1_agreement is not None
    assert unscored.max_abs_diff is None and unscored.top1_agreement is None


def test_each_fork_is_a_fresh_worker_process(tmp_path, monkeypatch):
    made: list[isolate.Worker] = []

    class Recorded(isolate.Worker):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sweep.runner, "Worker", Recorded)
    monkeypatch.setattr(sweep.runner.report, "finish_run", lambda out, _: {"summary": out})
    out = tmp_path / "run"
    argv = ["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1",
            "--budget", "0.05", "--forks", "2", "--no-progress"]  # fmt: skip
    assert sweep_main(out, *argv) == 0
    assert [w.starts for w in made] == [1, 1]
    assert len({w.pids[0] for w in made}) == 2  # two processes, one per pass
    (row,) = runfolder.read_results(out)
    assert row.status == "ok" and row.forks == 2 and len(row.fork_medians_ms) == 2
    assert row.latency_ms_median == pytest.approx(sum(row.fork_medians_ms) / 2)
    assert row.repeats == 1 and len(row.repeat_medians_ms) == 2
    assert row.iterations == len(row.samples_ms) >= 6  # at least 3 an iteration per fork


def test_max_minutes_between_forks_exits_3_and_resume_finishes_them(tmp_path, workers, capsys):
    out = tmp_path / "run"
    assert sweep_main(out, *GRID, "--forks", "2", "--max-minutes", "1e-9") == sweep.EXIT_INCOMPLETE
    assert "stopped by --max-minutes with 4 Configs left" in capsys.readouterr().err
    assert not workers.made[0].calls  # the deadline had passed before the first Config
    assert sweep_main(out, "--resume", "--no-progress") == 0
    assert {r.forks for r in runfolder.read_results(out)} == {2}


def test_a_worker_takes_its_parents_flop_counts_instead_of_counting_again(monkeypatch):
    from resbench.engine import flops

    # a count no real pass gives: the worker's Result can only carry it if it was handed over
    monkeypatch.setattr(flops, "_COUNTED", dict(flops._COUNTED))
    planted = flops.FlopCount(123_000_000_000, {"stem": 0})
    flops.remember({("count_flops", "small_resnet20", 32, "inference", ()): planted})
    with isolate.Worker(120) as worker:
        r = worker.measure(Config("small_resnet20", 1, device="cpu"), 0.05, peak=False)
    assert r.status == "ok" and r.gflops_per_image == pytest.approx(123.0)
