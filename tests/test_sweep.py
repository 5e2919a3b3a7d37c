from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resbench import report, sweep
from resbench.engine.measure import Config, Result
from resbench.models import list_models
from resbench.sweep import eta

ROOT = Path(__file__).resolve().parent.parent


def fake_measure(oom_from: int | None = None, calls: list | None = None):
    """A stand-in for measure(): instant, deterministic Results."""

    def run(config: Config, *args, **kwargs) -> Result:
        if calls is not None:
            calls.append(config)
        if oom_from is not None and config.batch_size >= oom_from:
            return Result.for_config(config, status="oom", error="CUDA out of memory")
        ms = 1.0 + config.batch_size / 10
        return Result.for_config(
            config,
            latency_ms_median=ms,
            latency_ms_p99=ms * 1.1,
            latency_ms_iqr=0.01,
            throughput_ips=config.batch_size / ms * 1e3,
            gflops_per_image=0.08,
            gflops_per_step=0.08 * config.batch_size,
            mfu=0.1,
            peak_memory_mb=10.0,
            noisy=False,
            warmup_s=0.01,
            measure_s=0.01,
            samples_ms=[ms] * 5,
        )

    return run


def test_grid_expansion_orders_batch_sizes_within_a_setting():
    grid = sweep.expand(["cpu"], ["resnet18"], [8, 1], precision=["fp32", "bf16"])
    assert [(c.precision, c.batch_size) for c in grid] == [
        ("fp32", 8),
        ("fp32", 1),
        ("bf16", 8),
        ("bf16", 1),
    ]


def args_for(*argv):
    return sweep.build_parser().parse_args(list(argv))


def test_quick_preset_instantiates_every_variant_but_the_costliest():
    configs, notes = sweep.build_grid(args_for("--preset", "quick", "--device", "cpu"))
    assert {c.model for c in configs} == set(list_models()) - set(sweep.grid.QUICK_LEFT_OUT)
    assert {
        c.batch_size for c in configs if c.model in ("resnext50_32x4d", "preact_resnet1001")
    } == {1}
    assert len({c.key() for c in configs}) == len(configs)
    assert {c.mode for c in configs} == {"inference", "train"}
    assert {c.precision for c in configs} == {"fp32", "bf16", "int8"}
    # the deployment runtimes too, so the answer weighs the fastest way there is
    assert {c.backend for c in configs} == {"eager", "openvino"}
    assert notes == []


def test_standard_preset_covers_every_axis_and_drops_what_cpu_cannot_run():
    configs, notes = sweep.build_grid(args_for("--preset", "standard", "--device", "cpu"))
    assert {c.model for c in configs} == set(list_models())
    assert {c.channels_last for c in configs} == {False, True}
    assert {c.compile for c in configs} == {"off", "default"}
    assert "tf32" not in {c.precision for c in configs}
    assert any("tf32" in n for n in notes)


def test_flags_narrow_a_preset():
    configs, _ = sweep.build_grid(
        args_for("--preset", "quick", "--device", "cpu", "--models", "cifar", "--modes", "train")
    )
    assert configs and all(c.mode == "train" and c.model in list_models("cifar") for c in configs)


def test_gpu_preset_runs_resnet50_first_and_the_costly_or_minor_configs_last():
    configs, notes = sweep.build_grid(args_for("--preset", "gpu", "--device", "cpu"))
    assert [c.model for c in configs[:12]] == ["resnet50"] * 12  # (tf32 is dropped on a CPU)
    compile_train = max(
        i for i, c in enumerate(configs) if c.compile != "off" and c.mode == "train"
    )
    assert (configs[compile_train].model, configs[compile_train].batch_size) == ("resnet50", 512)
    assert all(c.batch_size == 32 and c.model != "resnet50" for c in configs[compile_train + 1 :])
    assert len(configs) - compile_train - 1 == 4  # resnet18, small_resnet20 x 2 modes at b32
    assert "fp32+cl" not in {c.setting for c in configs}
    assert any("tf32" in n for n in notes)  # a CPU cannot run tf32
    by_precision, _ = sweep.build_grid(
        args_for("--preset", "gpu", "--device", "cpu", "--precision", "fp32")
    )
    assert {c.setting for c in by_precision} == {"fp32"}  # the flag replaces the preset's settings


def test_settings_pick_exact_combinations_instead_of_a_product():
    configs, _ = sweep.build_grid(
        args_for("--device", "cpu", "--models", "resnet18", "--batch-sizes", "1,8",
                 "--settings", "fp32,bf16+cl+compile,fp32+max-autotune")
    )  # fmt: skip
    assert [(c.setting, c.batch_size) for c in configs] == [
        ("fp32", 1), ("fp32", 8), ("bf16+cl+compile", 1), ("bf16+cl+compile", 8),
        ("fp32+max-autotune", 1), ("fp32+max-autotune", 8),
    ]  # fmt: skip
    narrowed, _ = sweep.build_grid(
        args_for("--preset", "standard", "--device", "cpu", "--models", "resnet18",
                 "--settings", "bf16+cl")
    )  # fmt: skip
    assert narrowed and {c.setting for c in narrowed} == {"bf16+cl"}


def test_image_size_is_an_axis_of_the_grid():
    configs, _ = sweep.build_grid(
        args_for("--device", "cpu", "--models", "resnet50,small_resnet20", "--batch-sizes", "1,8",
                 "--image-size", "288,160")
    )  # fmt: skip
    assert [(c.model, c.image_size, c.batch_size) for c in configs] == [
        ("resnet50", 160, 1), ("resnet50", 160, 8), ("resnet50", 288, 1), ("resnet50", 288, 8),
        ("small_resnet20", 160, 1), ("small_resnet20", 160, 8),
        ("small_resnet20", 288, 1), ("small_resnet20", 288, 8),
    ]  # fmt: skip
    default, _ = sweep.build_grid(
        args_for("--device", "cpu", "--models", "resnet50,small_resnet20")
    )
    assert {(c.model, c.image_size) for c in default} == {("resnet50", 224), ("small_resnet20", 32)}


def test_an_image_size_too_small_for_a_model_exits_2(capsys):
    argv = ["--device", "cpu", "--models", "small_resnet20,resnet50d", "--image-size", "16,224"]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "--image-size 16 is too small for resnet50d" in err
        and "smallest size it takes is 32" in err
    )
    assert len(err.splitlines()) == 1


def run_main(tmp_path, *argv, monkeypatch=None, fake=None):
    """The sweep in this process (one fork, --isolate off), with a fake measure() where given."""
    if monkeypatch is not None:
        monkeypatch.setattr(sweep.runner, "measure", fake or fake_measure())
    isolate = [] if "--isolate" in argv else ["--isolate", "off"]
    return sweep.main([*argv, *isolate, "--out", str(tmp_path / "run"), "--no-progress"])


def test_a_run_writes_env_results_and_report(tmp_path, monkeypatch):
    rc = run_main(
        tmp_path, "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,4",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    run = tmp_path / "run"
    assert rc == 0
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "resbench.sweep" in env["command"]
    assert len(report.read_results(run)) == 2
    for name in ("results.csv", "summary.md", "plots/throughput_inference_cpu.png"):
        assert (run / name).stat().st_size > 0


def test_resume_skips_finished_configs(tmp_path, monkeypatch):
    calls: list = []
    fake = fake_measure(calls=calls)
    run_main(tmp_path, "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2",
             monkeypatch=monkeypatch, fake=fake)  # fmt: skip
    assert len(calls) == 2
    rc = run_main(tmp_path, "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2,4",
                  "--resume", monkeypatch=monkeypatch, fake=fake)  # fmt: skip
    assert rc == 0
    assert [c.batch_size for c in calls] == [1, 2, 4]
    assert len(report.read_results(tmp_path / "run")) == 3


def test_resume_keeps_the_recorded_image_sizes(tmp_path, monkeypatch):
    calls: list = []
    fake = fake_measure(calls=calls)
    run_main(tmp_path, "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1",
             "--image-size", "40,48", monkeypatch=monkeypatch, fake=fake)  # fmt: skip
    assert [c.image_size for c in calls] == [40, 48]
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["invocations"][-1]["options"]["image_size"] == "40,48"
    (tmp_path / "run" / "results.jsonl").write_text(
        (tmp_path / "run" / "results.jsonl").read_text().splitlines()[0] + "\n"
    )  # the second Config was never finished
    assert run_main(tmp_path, "--resume", monkeypatch=monkeypatch, fake=fake) == 0
    assert [c.image_size for c in calls] == [40, 48, 48]


def test_max_minutes_stops_early_with_exit_3_and_resume_finishes(tmp_path, monkeypatch, capsys):
    fast = fake_measure()

    def slow(config, *args, **kwargs):
        time.sleep(0.1)
        return fast(config)

    argv = ["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2,3,4,5,6"]
    rc = run_main(tmp_path, *argv, "--max-minutes", "0.004", monkeypatch=monkeypatch, fake=slow)
    assert rc == sweep.EXIT_INCOMPLETE
    kept = len(report.read_results(tmp_path / "run"))
    assert 1 <= kept < 6
    assert f"stopped by --max-minutes with {6 - kept} Configs left" in capsys.readouterr().err
    assert run_main(tmp_path, *argv, "--resume", monkeypatch=monkeypatch, fake=slow) == 0
    assert len(report.read_results(tmp_path / "run")) == 6


def test_truncated_last_line_is_skipped_with_a_warning_and_resume_repairs_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_main(tmp_path, "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2",
             monkeypatch=monkeypatch)  # fmt: skip
    with (run / "results.jsonl").open("a") as f:
        f.write('{"model": "small_resnet20", "batch_si')
    with pytest.warns(UserWarning, match="incomplete line"):
        assert len(report.read_results(run)) == 2
    with pytest.warns(UserWarning):
        rc = run_main(tmp_path, "--device", "cpu", "--models", "small_resnet20",
                      "--batch-sizes", "1,2,4", "--resume", monkeypatch=monkeypatch)  # fmt: skip
    assert rc == 0
    lines = (run / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_oom_skips_larger_batches_of_the_same_setting(tmp_path, monkeypatch):
    calls: list = []
    run_main(tmp_path, "--device", "cpu", "--models", "small_resnet20", "--batch-sizes",
             "1,2,4,8,16", "--precision", "fp32,bf16", monkeypatch=monkeypatch,
             fake=fake_measure(oom_from=4, calls=calls))  # fmt: skip
    results = report.read_results(tmp_path / "run")
    status = {(r.precision, r.batch_size): r.status for r in results}
    for p in ("fp32", "bf16"):
        assert [status[(p, b)] for b in (1, 2, 4, 8, 16)] == [
            "ok",
            "ok",
            "oom",
            "skipped",
            "skipped",
        ]
    assert max(c.batch_size for c in calls) == 4  # never tried past the first OOM
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "oom" in summary and "skipped" in summary


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "resnet19"], "unknown model 'resnet19'; choose one of: all, imagenet"),
        (["--batch-sizes", "0"], "--batch-sizes takes positive integers; got 0"),
        (["--batch-sizes", "x"], "--batch-sizes takes positive integers"),
        (["--precision", "fp8"], "unknown --precision value 'fp8'; choose one of: fp32"),
        (["--compile", "yes"], "unknown --compile value 'yes'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--precision", "fp16"], "fp16 needs a CUDA or MPS device"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--budget", "0"], "--budget must be positive"),
        (["--max-minutes", "0"], "--max-minutes must be positive and at most 10080; got 0.0"),
        (
            ["--repeats", "1000000000"],
            "--repeats must be at least 1 and at most 100; got 1000000000",
        ),
        (["--budget", "1e9"], "--budget must be positive and at most 3600"),
        (["--wait-quiet", "1e9"], "--wait-quiet must be at least 0 and at most 3600"),
        (["--batch-sizes", "1,100000"], "--batch-sizes must be at least 1 and at most 65536"),
        (["--keep-errors"], "--keep-errors keeps a resumed run's errors, so it needs --resume"),
        (["--resume"], "--resume needs --out"),
        (
            ["--settings", "bf16+nhwc"],
            "--settings: unknown part 'nhwc' in 'bf16+nhwc'; use one of: cl, compile",
        ),
        (["--settings", "fp8"], "--settings: unknown precision 'fp8' in 'fp8'; choose one of"),
        (["--settings", "int8"], "backend eager runs fp32, tf32, bf16, fp16; got precision int8"),
        (["--settings", "bf16", "--precision", "fp32"], "--settings replaces --precision"),
        # one label grammar: a precision, at most one "cl", at most one backend
        (["--settings", "int8+onnxruntime+openvino"], "names two backends, 'onnxruntime' and"),
        (["--settings", "bf16+openvino+compile"], "names two backends, 'openvino' and 'compile'"),
        (["--settings", "fp32+cudagraphs+compile"], "names two backends, 'cudagraphs' and"),
        (["--settings", "fp32+cl+cl"], "'fp32+cl+cl' has 'cl' twice"),
        # a compile mode is refused, not dropped, where --backends leaves the compile backend out
        (
            ["--compile", "default", "--backends", "onnxruntime"],
            "--compile default is a mode of the compile backend, which --backends onnxruntime "
            "leaves out",
        ),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(argv, message, capsys):
    if "--device" not in argv:
        argv = [*argv, "--device", "cpu"]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_compile_modes_go_to_the_compile_backend_when_backends_name_it():
    configs, _ = sweep.build_grid(
        args_for("--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1",
                 "--compile", "default,max-autotune", "--backends", "eager,compile")
    )  # fmt: skip
    assert [c.setting for c in configs] == ["fp32", "fp32+compile", "fp32+max-autotune"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_cuda_is_a_usage_error(capsys):
    assert sweep.main(["--device", "cuda", "--models", "resnet18"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def _sweep_args(out: Path, *extra: str) -> list[str]:
    return [
        "--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2,3,4,5,6",
        "--budget", "0.05", "--repeats", "1", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


# kill -9 cannot be caught, so what it tests is the run folder: a sweep whose Configs take a while
# but measure nothing does (the signals, which a sweep does catch, are tested on real measuring)
_SLOW_FAKE_SWEEP = """
import sys, time
from resbench import sweep
from resbench.engine.measure import Result
def measure(config, *args, **kwargs):
    time.sleep(0.3)
    return Result.for_config(config, latency_ms_median=1.0, throughput_ips=1.0,
                             timestamp=repr(time.time()))
sweep.runner.measure = measure
sys.exit(sweep.main(sys.argv[1:]))
"""


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigkill_mid_run_keeps_finished_results_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_FAKE_SWEEP, *_sweep_args(out, "--isolate", "off")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while _lines(out / "results.jsonl") < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    kept = report.read_results(out)
    assert 2 <= len(kept) < 6
    # the resume is an ordinary one, here in-process: only the Configs the kill left are measured
    calls: list = []
    rc = run_main(tmp_path, "--resume", monkeypatch=monkeypatch, fake=fake_measure(calls=calls))
    assert rc == 0
    assert f"({len(kept)} already done)" in capsys.readouterr().out
    assert sorted(c.batch_size for c in calls) == [b for b in range(1, 7) if b > len(kept)]
    final = report.read_results(out)
    assert sorted(r.batch_size for r in final) == [1, 2, 3, 4, 5, 6]
    assert [r.timestamp for r in final[: len(kept)]] == [r.timestamp for r in kept]


def test_only_cpu_ranks_sharing_a_host_are_said_to_share_its_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    shared = sweep.ranks.shared_cores({"cpu", "cuda"}, 2)
    assert shared["ranks"] == 2 and shared["cores"] >= 1
    assert f"2 torchrun ranks share {shared['cores']} cores" in shared["warning"]
    assert sweep.ranks.shared_cores({"cuda"}, 2) is None  # a GPU each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one rank a host
    assert sweep.ranks.shared_cores({"cpu"}, 2) is None
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert sweep.ranks.shared_cores({"cpu"}, 1) is None  # no torchrun


def test_find_max_batch_doubles_then_bisects():
    calls: list = []
    run = fake_measure(oom_from=100, calls=calls)
    best, probes = sweep.find_max_batch(Config("small_resnet20", 8, device="cpu"), run)
    assert 100 - 100 / 16 <= best < 100
    assert [c.batch_size for c in calls][:5] == [8, 16, 32, 64, 128]
    assert len(probes) == len(calls) <= 10
    # the starting batch already too large: search from 1
    best, _ = sweep.find_max_batch(
        Config("small_resnet20", 512, device="cpu"), fake_measure(oom_from=3)
    )
    assert best == 2
    assert (
        sweep.find_max_batch(Config("small_resnet20", 4, device="cpu"), fake_measure(oom_from=1))[0]
        is None
    )
    # fits everything up to the cap
    assert (
        sweep.find_max_batch(Config("small_resnet20", 4, device="cpu"), fake_measure(), cap=64)[0]
        == 64
    )


def test_find_max_batch_run_logs_probes_and_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.runner, "measure", fake_measure(oom_from=40))
    monkeypatch.setattr(
        sweep.grid.cli, "parse_devices", lambda text: ["cuda"]
    )  # pretend: CPU refuses
    monkeypatch.setattr(sweep.grid, "validate_config", lambda c: None)
    rc = sweep.main(["--device", "cuda", "--models", "small_resnet20", "--batch-sizes", "8",
                     "--find-max-batch", "--isolate", "off", "--no-progress", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    found = json.loads((tmp_path / "max_batch.json").read_text())
    assert found[0]["model"] == "small_resnet20" and 36 <= found[0]["max_batch"] < 40
    assert len(report.read_results(tmp_path)) == found[0]["probes"]  # every probe is a Result
    assert "## Largest batch that fits" in (tmp_path / "summary.md").read_text()


def test_find_max_batch_refuses_the_cpu(capsys):
    assert sweep.main(["--device", "cpu", "--models", "small_resnet20", "--find-max-batch"]) == 2
    assert "--find-max-batch needs a CUDA or MPS device" in capsys.readouterr().err


NO_BF16 = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})  # an AVX2-only host's flags


def test_the_eta_counts_each_peak_probe_and_the_report():
    fp32 = Config("small_resnet20", 1, device="cpu")
    bf16 = Config("small_resnet20", 1, device="cpu", precision="bf16")
    fp32_b2 = Config("small_resnet20", 2, device="cpu")
    one_probe = sweep.estimate_s([fp32, fp32_b2], 1.0, False)
    two_probes = sweep.estimate_s([fp32, bf16], 1.0, False)
    if eta.will_skip(bf16):  # a CPU without bf16 units skips bf16 rows at once
        assert two_probes < one_probe
    else:
        assert two_probes - one_probe == pytest.approx(
            eta.PROBE_S + eta.fork_s(bf16, 1.0) - eta.fork_s(fp32_b2, 1.0)
        )
    assert one_probe >= eta.PROBE_S + eta.FINISH_S + 1.0  # the budget of each Config, too


def test_the_quick_preset_fits_its_minutes_on_a_cpu_without_bf16(monkeypatch):
    from resbench import env

    monkeypatch.setattr(env, "cpu_flags", lambda: NO_BF16)
    monkeypatch.setattr(eta.torch, "get_num_threads", lambda: 2)  # the README's 2-core host
    configs, _ = sweep.build_grid(args_for("--preset", "quick", "--device", "cpu"))
    bf16 = [c for c in configs if c.precision == "bf16"]
    assert bf16 and all(eta.will_skip(c) for c in bf16)
    assert not any(eta.will_skip(c, allow_emulated=True) for c in bf16)
    seconds = sweep.estimate_s(configs, 1.0, False, 2)
    assert seconds <= 3.5 * 60  # the README's "~3 minutes" holds on such a host too
    assert sweep.estimate_s(configs, 1.0, False, 2, allow_emulated=True) > seconds


def test_forks_share_the_budget_and_each_adds_a_preparation_and_a_worker():
    config = Config("resnet18", 1, device="cpu", backend="onnxruntime")
    one = eta.estimate_s([config], 10.0, True, repeats=1, forks=1)
    two = eta.estimate_s([config], 10.0, True, repeats=1, forks=2)
    # a second fork is a fresh worker that prepares the Config again, not a second budget
    assert eta.PREPARE_S["onnxruntime"] + eta.WORKER_START_S < two - one < 10.0
    assert eta.startup_s([config], True, forks=3) - eta.startup_s([config], True, forks=1) == (
        pytest.approx(2 * eta.WORKER_START_S)
    )
    assert eta.startup_s([config], False) == eta.startup_s([config], True) - eta.WORKER_START_S
    # two repeats in one fork prepare as often as one repeat in each of two forks
    same = eta.estimate_s([config], 10.0, True, repeats=2, forks=1)
    assert two - same == pytest.approx(eta.WORKER_START_S + eta.ROW_S, abs=0.5)


def test_a_slow_config_costs_its_least_iterations_not_its_budget():
    slow = Config("resnet50", 8, device="cpu", mode="train")
    fast = Config("small_resnet20", 1, device="cpu")
    step = eta.step_s(slow)
    assert step > 10 * eta.step_s(fast)
    # at a 0.05 s budget the slow one still runs its 3 iterations and its warm-up, which stops at
    # measure()'s cap (1 s here), overrun by the blocks in flight
    warm = min(eta.WARMUP_ITERS * step, eta.MIN_WARMUP_CAP_S + 2 * step)
    assert warm < eta.WARMUP_ITERS * step  # a 1.6 s step: the cap decides, not 4.5 steps
    assert eta.fork_s(slow, 0.05) > eta.MIN_ITERS * step + warm
    assert eta.fork_s(fast, 0.05) < 1.0
    skipped = Config("resnet18", 1, device="cpu", backend="openvino")
    if eta.will_skip(skipped):  # no openvino installed: measure() skips it at once
        assert eta.fork_s(skipped, 1.0) == 0.0


def test_the_progress_bar_counts_estimated_seconds(tmp_path, capsys):
    configs = [Config("small_resnet20", b, device="cpu") for b in (1, 2, 4)]
    estimate = {1: 1.0, 2: 2.0, 4: 5.0}
    bar = eta.Progress(configs, lambda c: estimate[c.batch_size], fixed=2.0)
    assert bar.bar.total == 10_000 and bar.bar.smoothing == 0  # the ETA from the run's own rate
    bar.finished(configs[0])  # the first Config spends the start-up too
    assert bar.bar.n == 3_000
    bar.finished(configs[1])
    assert bar.bar.total - bar.bar.n == 5_000  # what is left: the last Config's estimate
    bar.close()
    thirds = eta.Progress(configs, lambda c: 0.1 + 1 / 3)  # steps that floats would not add up
    for config in configs:
        thirds.finished(config)
    assert thirds.bar.n == thirds.bar.total
    import contextlib

    from resbench.runfolder import ResultLog

    with ResultLog(tmp_path / "r.jsonl") as log:
        passes = sweep.run_passes(configs, log, [], 2, fake_measure(), contextlib.nullcontext,
                                  estimate_of=lambda c: estimate[c.batch_size])  # fmt: skip
    assert len(passes.rows) == 6 and passes.left == 0  # 3 Configs x 2 forks, one bar
    err = capsys.readouterr().err
    assert "100%" in err and "fork 2/2 small_resnet20 b4 inference fp32" in err


def test_a_sweep_on_a_cpu_without_bf16_skips_bf16_with_the_reason(tmp_path, monkeypatch, capsys):
    from resbench import env

    monkeypatch.setattr(env, "cpu_flags", lambda: NO_BF16)
    rc = sweep.main(["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1",
                     "--settings", "fp32,bf16", "--budget", "0.05", "--repeats", "1",
                     "--isolate", "off",  # in this process, where cpu_flags is patched
                     "--out", str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    assert rc == 0
    rows = {r.setting: r for r in report.read_results(tmp_path / "run")}
    assert rows["fp32"].status == "ok" and rows["fp32"].effective_precision == "fp32"
    assert rows["bf16"].status == "skipped" and rows["bf16"].effective_precision == "bf16-emulated"
    assert "no bf16 units" in rows["bf16"].error
    env_json = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env_json["cpu_flags"] == ["avx2", "fma"]  # what decided it, in the run's env.json


def test_the_peak_and_the_probe_that_gave_it_pass_from_the_first_row_to_the_next(monkeypatch):
    seen = []

    def fake(config, budget_s, *, peak, peak_probe=None, **options):
        seen.append((peak, peak_probe))
        probe = peak_probe or "conv3x3 oneDNN 32x256x14x14 cl"
        return Result.for_config(config, peak_tflops=0.25, peak_probe=probe)

    monkeypatch.setattr(sweep.runner, "measure", fake)
    run_one = sweep.runner._measurer(0.05, {})
    rows = [run_one(Config("small_resnet20", b, device="cpu")) for b in (1, 2)]
    assert seen == [(True, None), (0.25, "conv3x3 oneDNN 32x256x14x14 cl")]  # probed once
    assert rows[1].peak_probe == rows[0].peak_probe == "conv3x3 oneDNN 32x256x14x14 cl"
