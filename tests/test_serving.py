"""The offline and server scenarios wired through measure(), the backends' streams, the sweep's flags
and the forks (the engine on plain callables is tests/test_scenarios.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from resbench import sweep
from resbench.engine import pooling, serve
from resbench.engine.devices import default_threads
from resbench.engine.measure import Config, Result, measure
from resbench.engine.preparation import prepare

TINY = dict(model="small_resnet20", batch_size=2, device="cpu")


@pytest.fixture(autouse=True)
def short_server_runs(monkeypatch):
    """Server runs of about a second at most: what is tested is what they record, not p99's
    precision (serve.run's windows are a module's constants, read at each run)."""
    monkeypatch.setattr(serve, "MIN_REQUESTS", 50)
    monkeypatch.setattr(serve, "MAX_WINDOW_S", 1.0)
    monkeypatch.setattr(serve, "MIN_TRY_REQUESTS", 10)  # a floor of 10 req/s


def test_a_config_names_its_threads_per_stream():
    assert Config(**TINY).threads == default_threads(1) == torch.get_num_threads()
    assert Config(**TINY, scenario="offline", streams=2).threads == max(1, default_threads() // 2)
    old = Result.from_dict({**TINY, "threads": 7})  # a run from before scenarios
    assert (old.scenario, old.streams, old.threads, old.sustained) == ("single-stream", 1, 7, None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(streams=2), "runs one stream"),
        (dict(scenario="server"), "needs either a rate"),
        (dict(scenario="server", rate=5.0, target_p99_ms=10.0), "not both"),
        (dict(scenario="offline", rate=5.0), "server scenario's"),
        (dict(scenario="offline", mode="train"), "inference only"),
        (dict(scenario="server", rate=0.0), "rate must be"),
        (dict(scenario="server", rate=float("nan")), "rate must be"),
        (dict(scenario="offline", streams=0), "streams must be"),
        (dict(threads=0), "threads must be"),
        (dict(scenario="server", rate=5.0, max_queue_ms=-1.0), "max_queue_ms must be"),
    ],
)
def test_bad_scenario_knobs_are_refused_before_any_work(kwargs, message):
    result = None
    with pytest.raises(ValueError, match=message):
        result = measure(Config(**{**TINY, **kwargs}), budget_s=0.01, peak=False)
    assert result is None


def test_prepare_runs_the_config_threads_and_one_call_per_stream():
    before = torch.get_num_threads()
    config = Config(**TINY, scenario="offline", streams=2, threads=1)
    with prepare(config) as p:
        inside = torch.get_num_threads()
        assert len(p.streams) == 2 and p.streams[0] is p.step
        outs = [torch.as_tensor(step()) for step in p.streams]
    assert inside == 1 and torch.get_num_threads() == before
    assert torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_runtime_makes_an_executor_per_stream(backend):
    pytest.importorskip(backend)
    config = Config(**TINY, backend=backend, scenario="offline", streams=2, threads=1)
    with prepare(config) as p:
        assert len(p.streams) == 2
        first, second = (torch.as_tensor(step()) for step in p.streams)
        assert len({id(s) for s in p.streams}) == 2  # a session or infer request each
    assert torch.allclose(first, second, atol=1e-5)


def test_offline_records_throughput_per_request_latency_streams_and_threads():
    r = measure(Config(**TINY, scenario="offline", streams=2, threads=1), budget_s=0.2, peak=False)
    assert r.status == "ok", r.error
    assert (r.scenario, r.streams, r.threads) == ("offline", 2, 1)
    assert r.throughput_ips > 0 and r.achieved_rate == r.throughput_ips
    assert r.latency_ms_median <= r.latency_ms_p99 <= r.latency_ms_p999
    assert r.iterations >= serve.MIN_CALLS * 2 and r.requests == r.iterations * 2
    assert r.sustained is None and r.offered_rate is None
    assert len(r.samples_ms) == r.iterations  # one per call, raw


def test_a_server_offered_twice_its_capacity_is_not_sustained_and_has_no_latency():
    offline = measure(Config(**TINY, scenario="offline"), budget_s=0.2, peak=False)
    rate = 2 * offline.throughput_ips
    r = measure(Config(**TINY, scenario="server", rate=rate), budget_s=0.3, peak=False)
    assert r.status == "ok", r.error
    assert r.sustained is False and r.offered_rate == rate
    assert r.latency_ms_median is None and r.latency_ms_p99 is None and r.latency_ms_p999 is None
    assert r.achieved_rate < rate


def test_a_server_below_capacity_is_sustained_and_its_batches_never_pass_the_batch_size():
    offline = measure(Config(**TINY, scenario="offline"), budget_s=0.2, peak=False)
    rate = 0.3 * offline.throughput_ips
    config = Config(**TINY, scenario="server", rate=rate, max_queue_ms=20.0)
    r = measure(config, budget_s=0.3, peak=False)
    assert r.status == "ok", r.error
    assert r.sustained is True and r.latency_ms_p99 is not None
    assert 1 <= r.mean_batch <= r.max_batch <= config.batch_size
    assert r.requests >= 1 and len(r.samples_ms) == r.requests  # every request's latency


def test_a_peak_search_records_every_rate_and_its_peak_met_the_bound():
    config = Config(**TINY, scenario="server", target_p99_ms=1000.0)
    r = measure(config, budget_s=0.1, peak=False)
    assert r.status == "ok", r.error
    assert len(r.peak_tries) >= 2
    assert all({"rate", "sustained", "met", "latency_ms_p99"} <= set(t) for t in r.peak_tries)
    met = [t["rate"] for t in r.peak_tries if t["met"]]
    assert r.offered_rate == max(met) and r.latency_ms_p99 <= 1000.0 and r.sustained


def test_a_peak_search_that_no_rate_meets_says_so_without_a_latency():
    config = Config(**TINY, scenario="server", target_p99_ms=1e-3)  # one microsecond: never met
    r = measure(config, budget_s=0.05, peak=False)
    assert r.status == "ok" and r.offered_rate is None and r.sustained is False
    assert r.latency_ms_p99 is None and r.peak_tries and not any(t["met"] for t in r.peak_tries)
    assert r.peak_tries[-1]["rate"] < r.peak_tries[0]["rate"]  # it went looking below its low end
    # ... but never where a window holds too few requests to judge a p99 on
    assert all(t["rate"] >= serve.rate_floor(0.05) == 10.0 for t in r.peak_tries)


def _served(config: Config, **fields) -> Result:
    return Result.for_config(config, status="ok", gflops_per_image=0.04, **fields)


def test_forks_pool_a_server_row_and_one_unsustained_fork_leaves_no_latency():
    config = Config(**TINY, scenario="server", rate=100.0)
    a = _served(config, sustained=True, latency_ms_median=5.0, latency_ms_p99=9.0,
                throughput_ips=99.0, achieved_rate=99.0, mean_batch=1.0, max_batch=1,
                requests=100, iterations=100, samples_ms=[5.0] * 100)  # fmt: skip
    b = dataclasses.replace(a, samples_ms=[7.0] * 100, latency_ms_median=7.0)
    both = pooling.combine(pooling.combine(None, a), b)
    assert both.forks == 2 and both.sustained and both.requests == 200
    assert both.latency_ms_median == pytest.approx(6.0) and both.fork_medians_ms == [5.0, 7.0]
    lost = dataclasses.replace(b, sustained=False, latency_ms_median=None, latency_ms_p99=None)
    worse = pooling.combine(pooling.combine(None, a), lost)
    assert worse.sustained is False and worse.latency_ms_p99 is None


def test_forks_keep_the_lower_peak_of_a_peak_search():
    config = Config(**TINY, scenario="server", target_p99_ms=50.0)
    tries = [{"rate": 10.0, "met": True}]
    a = _served(config, sustained=True, offered_rate=80.0, throughput_ips=79.0, requests=10,
                latency_ms_p99=40.0, peak_tries=tries, samples_ms=[1.0])  # fmt: skip
    b = dataclasses.replace(a, offered_rate=60.0, latency_ms_p99=45.0, throughput_ips=59.0)
    both = pooling.combine(pooling.combine(None, a), b)
    assert both.offered_rate == 60.0 and both.latency_ms_p99 == 45.0
    assert len(both.peak_tries) == 2


def args_for(*argv):
    return sweep.build_parser().parse_args(list(argv))


def test_the_grid_crosses_scenarios_streams_threads_and_rates():
    args = args_for(
        "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "2",
        "--scenario", "single-stream,offline,server", "--streams", "1,2", "--threads", "1",
        "--rate", "50,100", "--target-p99-ms", "20", "--max-queue-ms", "5",
    )  # fmt: skip
    configs, _ = sweep.build_grid(args)
    seen = {(c.scenario, c.streams, c.threads, c.rate, c.target_p99_ms) for c in configs}
    assert ("single-stream", 1, 1, None, None) in seen
    assert not any(c.scenario == "single-stream" and c.streams > 1 for c in configs)
    assert {("offline", 1, 1, None, None), ("offline", 2, 1, None, None)} <= seen
    servers = [c for c in configs if c.scenario == "server"]
    assert len(servers) == 2 * 3 and all(c.max_queue_ms == 5.0 for c in servers)
    assert {c.rate for c in servers} == {50.0, 100.0, None}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scenario", "server", "--rate", "0"], "--rate must be positive"),
        (["--scenario", "server", "--rate", "-3"], "--rate must be positive"),
        (["--scenario", "server", "--rate", "nan"], "--rate must be a finite number"),
        (["--scenario", "server", "--rate", "fast"], "--rate takes numbers"),
        (["--scenario", "server"], "needs --rate"),
        (["--rate", "5"], "add server to --scenario"),
        (["--scenario", "server", "--target-p99-ms", "0"], "--target-p99-ms must be positive"),
        (["--scenario", "server", "--rate", "5", "--max-queue-ms", "nan"], "--max-queue-ms"),
        (["--scenario", "offline", "--streams", "0"], "--streams takes positive integers"),
        (["--scenario", "offline", "--streams", "-2"], "--streams takes positive integers"),
        (["--streams", "2"], "single-stream runs one stream"),
        (["--threads", "0"], "--threads takes positive integers"),
        (["--threads", "nan"], "--threads takes positive integers"),
        (["--scenario", "bogus"], "unknown --scenario"),
    ],
)
def test_bad_rates_streams_and_threads_give_one_line_and_exit_2(argv, message, capsys, tmp_path):
    rc = sweep.main(["--device", "cpu", "--models", "small_resnet20", *argv,
                     "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_more_threads_than_cores_needs_oversubscribe(capsys, tmp_path, monkeypatch):
    cores = 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    base = ["--device", "cpu", "--models", "small_resnet20", "--scenario", "offline"]
    argv = [*base, "--streams", "2", "--threads", "2"]
    assert sweep.main([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "exceeds the 2 cores" in err and "--oversubscribe" in err and len(err.splitlines()) == 1
    configs, _ = sweep.build_grid(args_for(*argv, "--oversubscribe"))
    assert {(c.streams, c.threads) for c in configs} == {(2, 2)}


def test_a_sweep_measures_and_records_each_scenario(tmp_path):
    rc = sweep.main([
        "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "2",
        "--scenario", "single-stream,offline,server", "--streams", "2", "--threads", "1",
        "--rate", "20", "--budget", "0.1", "--isolate", "off", "--out", str(tmp_path / "run"),
        "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    from resbench import report

    rows = {r.scenario: r for r in report.read_results(tmp_path / "run")}
    assert set(rows) == {"single-stream", "offline", "server"}
    assert rows["single-stream"].streams == 1 and rows["offline"].streams == 2
    assert rows["server"].offered_rate == 20.0 and rows["server"].sustained is not None
