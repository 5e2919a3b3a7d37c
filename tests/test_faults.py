"""Fault injection: kills, damaged files, full disks, hostile files and nonsense flags (issue 14).

Where a fault is about processes (kill -9, SIGTERM, a second writer), a real sweep runs in a
subprocess and is killed for real; grids are tiny (small_resnet20 on the CPU, short budgets).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from resbench import cli, data, layerstats, profile, report, runfolder, sweep, train
from resbench.engine import flops
from resbench.engine.measure import Config, Result
from resbench.sweep import isolate
from resbench.train import folder as trainfolder
from resbench.train import recipe as trainrun

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1,2,4", "--isolate",
        "off", "--no-progress"]  # fmt: skip


def fake_measure(calls: list | None = None, fail: set | None = None):
    """Instant Results; batch sizes in ``fail`` end in error (once each, then they succeed)."""
    failing = set(fail or ())

    def run(config: Config, *args, **kwargs) -> Result:
        if calls is not None:
            calls.append(config)
        if config.batch_size in failing:
            failing.discard(config.batch_size)
            return Result.for_config(config, status="error", error="worker died (SIGKILL)")
        ms = 1.0 + config.batch_size / 10
        return Result.for_config(config, latency_ms_median=ms, throughput_ips=config.batch_size / ms * 1e3,
                                 gflops_per_image=0.08, samples_ms=[ms] * 3, timestamp=str(time.time()))  # fmt: skip

    return run


def sweep_main(monkeypatch, out: Path, *argv: str, fake=None) -> int:
    monkeypatch.setattr(sweep.runner, "measure", fake or fake_measure())
    return sweep.main([*argv, "--out", str(out)])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- data loss (1, 2)


def test_a_complete_last_line_without_its_newline_is_kept_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls: list = []
    assert sweep_main(monkeypatch, out, *GRID, fake=fake_measure(calls)) == 0
    path = out / runfolder.RESULTS_FILE
    path.write_bytes(path.read_bytes()[:-1])  # `truncate -s -1`: the last Result lacks its newline
    assert sweep_main(monkeypatch, out, "--resume", "--no-progress", fake=fake_measure(calls)) == 0
    assert len(calls) == 3  # nothing measured again
    assert [json.loads(line)["batch_size"] for line in lines(path)] == [1, 2, 4]


def test_a_truncated_last_line_is_cut_with_one_warning_naming_the_line(tmp_path, monkeypatch):
    out = tmp_path / "run"
    sweep_main(monkeypatch, out, *GRID)
    with (out / runfolder.RESULTS_FILE).open("a") as f:
        f.write('{"model": "small_resnet20", "batch_si')
    with pytest.warns(UserWarning, match=r"results.jsonl:4: dropping a truncated") as caught:
        assert sweep_main(monkeypatch, out, "--resume", "--no-progress") == 0
    assert len([w for w in caught if "results.jsonl" in str(w.message)]) == 1
    assert len(lines(out / runfolder.RESULTS_FILE)) == 3


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    data.make_synthetic(root, n_train=64, n_test=32, seed=1)
    return root


def train_argv(cifar: Path, out: Path, *extra: str, epochs: str | None = "1") -> list[str]:
    return ["--data-dir", str(cifar), "--no-verify", "--device", "cpu", "--model", "small_resnet20",
            "--batch-size", "32", *(["--epochs", epochs] if epochs else []), "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


def train_main(cifar: Path, out: Path, *extra: str, epochs: str | None = "1") -> int:
    return train.main(train_argv(cifar, out, *extra, epochs=epochs))


def test_the_trainer_refuses_to_overwrite_a_run(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "t"
    assert train_main(tiny_cifar, out, "--epochs", "2") == 0
    log = (out / train.LOG_FILE).read_text()
    capsys.readouterr()
    assert train_main(tiny_cifar, out) == 2
    assert "already holds a training run" in one_line(capsys)
    assert (out / train.LOG_FILE).read_text() == log  # untouched
    assert train_main(tiny_cifar, out, "--overwrite") == 0
    assert len(lines(out / train.LOG_FILE)) == 1
    record = json.loads((out / runfolder.RUN_FILE).read_text())
    assert len(record["invocations"]) == 2  # the start and the overwrite, each with its command


def test_overwrite_leaves_only_the_new_run_and_resume_continues_that(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "R"
    assert train_main(tiny_cifar, out, "--epochs", "3") == 0
    assert train_main(tiny_cifar, out, "--epochs", "1", "--runs", "2", "--overwrite") == 0
    # the old run's checkpoint.pt, train.jsonl, train.csv and summary.json are gone
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "accuracy_vs_time.png", "env.json", "run.json", "seed0", "seed1", "summary.md"]  # fmt: skip
    for seed in ("seed0", "seed1"):
        assert len(lines(out / seed / train.LOG_FILE)) == 1
    capsys.readouterr()
    assert train_main(tiny_cifar, out, "--resume") == 0
    err = capsys.readouterr().err
    assert "at epoch 3" not in err and f"resumed {out / 'seed1'} at epoch 1" in err
    md = (out / "summary.md").read_text()
    assert "**2 runs**" in md and ", 1 epoch," in md
    invocations = json.loads((out / runfolder.RUN_FILE).read_text())["invocations"]
    assert [i["resume"] for i in invocations] == [False, False, True]
    # files the trainer did not write are never deleted: such a folder is refused, untouched
    (out / "notes.txt").write_text("mine")
    (out / "seed1" / "plot.svg").write_text("mine too")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert train_main(tiny_cifar, out, "--overwrite") == 2
    err = one_line(capsys)
    assert "did not write (notes.txt, seed1/plot.svg)" in err and "move them away" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_resume_keeps_the_recorded_runs_and_epochs_or_says_what_the_folder_holds(
    tiny_cifar, tmp_path, capsys
):
    out = tmp_path / "R"
    assert train_main(tiny_cifar, out, "--runs", "2") == 0
    capsys.readouterr()
    assert train_main(tiny_cifar, out, "--resume", "--runs", "1", epochs=None) == 2
    err = one_line(capsys)
    assert "holds 2 runs (seed0, seed1); resume with --runs 2, or without --runs" in err
    assert train_main(tiny_cifar, out, "--resume", epochs="2") == 0  # more epochs: allowed
    assert [json.loads(x)["epoch"] for x in lines(out / "seed1" / train.LOG_FILE)] == [1, 2]
    md = (out / "summary.md").read_text()
    assert "**2 runs**" in md and ", 2 epochs," in md
    capsys.readouterr()
    assert train_main(tiny_cifar, out, "--resume", epochs="1") == 2
    err = one_line(capsys)
    assert "--epochs 1" in err and "trained 2 epochs already" in err and "--epochs 2 or more" in err
    assert (out / "summary.md").read_text() == md  # refused: nothing rewritten
    assert (
        train_main(tiny_cifar, out, "--resume", epochs=None) == 0
    )  # the recorded 2 epochs, 2 runs
    assert "**2 runs**" in md and ", 2 epochs," in (out / "summary.md").read_text()


# ----------------------------------------------------------------------------- one writer (3)


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    # one fork: these test the run folder and the signals, not the passes (tests/test_forks.py)
    return [sys.executable, "-m", "resbench.sweep", "--device", "cpu", "--models", "small_resnet20",
            "--forks", "1", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def _wait_for(predicate, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert predicate(), "the sweep never got there"


def test_a_second_writer_is_refused_naming_the_folder_and_the_pid(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    proc = subprocess.Popen(_sweep_cmd(out, "--batch-sizes", "1,2,3,4,5,6,7,8", "--budget", "0.3",
                                       "--isolate", "off"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(lambda: (out / runfolder.RUN_FILE).exists(), proc)
        calls: list = []
        rc = sweep_main(monkeypatch, out, *GRID, "--resume", fake=fake_measure(calls))
        assert rc == 2 and not calls
        err = one_line(capsys)
        assert str(out) in err and f"PID {proc.pid}" in err
        assert sweep_main(monkeypatch, out, *GRID) == 2  # without --resume: still the PID
        assert f"PID {proc.pid}" in one_line(capsys)
        assert train_main(tmp_path, out) == 2  # the trainer honours the same lock
        assert f"PID {proc.pid}" in one_line(capsys)
    finally:
        proc.kill()
        proc.wait()
    # the kernel drops a killed holder's lock: the run can be resumed. Within a few seconds, not at
    # once: in one run under pytest -n 2 the lock was still held just after wait() returned
    deadline = time.monotonic() + 10
    while True:
        try:
            with runfolder.locked(out):
                break
        except runfolder.FolderBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_same_grid_again_without_resume_is_refused_and_provenance_is_appended(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    assert sweep_main(monkeypatch, out, *GRID) == 0
    env = (out / runfolder.ENV_FILE).read_text()
    summary = (out / "summary.md").read_text()
    capsys.readouterr()
    assert sweep_main(monkeypatch, out, *GRID) == 2
    err = one_line(capsys)
    assert "already holds a run" in err and "--resume" in err
    assert (out / runfolder.ENV_FILE).read_text() == env
    assert (out / "summary.md").read_text() == summary
    assert sweep_main(monkeypatch, out, "--resume", "--no-progress") == 0
    invocations = json.loads((out / runfolder.RUN_FILE).read_text())["invocations"]
    assert [i["resume"] for i in invocations] == [False, True]
    assert all(
        i["command"].startswith("python -m resbench.sweep") and i["started"] for i in invocations
    )
    assert (out / runfolder.ENV_FILE).read_text() == env  # the first start's environment stays


# ----------------------------------------------------------------------------- malformed input (5)

BAD_LINES = [
    b"null",
    b"[1, 2, 3]",
    b'{"batch_size": 2, "status": "ok"}',
    b'{"model": "small_resnet20", "batch_size": "2", "device": "cpu"}',
    b'{"model": "small_resnet20", "batch_size": 2, "device": "cpu", "note": "\xff"}',
]


@pytest.mark.parametrize("bad", BAD_LINES, ids=["null", "array", "no-model", "str-batch", "xff"])
def test_a_malformed_line_is_skipped_with_one_warning_in_report_and_resume(
    tmp_path, monkeypatch, capsys, bad
):
    out = tmp_path / "run"
    assert sweep_main(monkeypatch, out, *GRID) == 0
    path = out / runfolder.RESULTS_FILE
    good = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(good[0] + bad + b"\n" + b"".join(good[1:]))
    with pytest.warns(UserWarning) as caught:
        assert report.main([str(out)]) == 0
    assert [str(w.message) for w in caught if "results.jsonl" in str(w.message)] == [
        f"{path}:2: skipping " + str(caught[0].message).split(":2: skipping ", 1)[1]
    ]
    summary = (out / "summary.md").read_text()
    assert "3 results: 3 ok" in summary  # the counts agree with the rows shown
    calls: list = []
    with pytest.warns(UserWarning, match=f"{path}:2: skipping"):
        rc = sweep_main(monkeypatch, out, "--resume", "--no-progress", fake=fake_measure(calls))
    assert rc == 0 and not calls


def test_a_truncated_env_json_is_one_warning_and_the_report_still_renders(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    sweep_main(monkeypatch, out, *GRID)
    env = out / runfolder.ENV_FILE
    env.write_text(env.read_text()[:40])
    capsys.readouterr()
    with pytest.warns(UserWarning, match="damaged environment record") as caught:
        assert report.main([str(out)]) == 0
    assert [str(env) in str(w.message) for w in caught] == [True]
    assert "Traceback" not in capsys.readouterr().err
    assert "environment: not recorded" in (out / "summary.md").read_text()


# ----------------------------------------------------------------------------- resume, exit codes (6)


def test_resume_continues_the_recorded_grid_and_says_when_flags_differ(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    sweep_main(monkeypatch, out, *GRID, "--max-minutes", "1e-9")
    capsys.readouterr()
    calls: list = []
    assert sweep_main(monkeypatch, out, "--resume", "--no-progress", fake=fake_measure(calls)) == 0
    assert {(c.model, c.batch_size) for c in calls} <= {("small_resnet20", b) for b in (1, 2, 4)}
    assert sorted(r.batch_size for r in report.read_results(out)) == [1, 2, 4]
    assert "continuing the recorded grid" in capsys.readouterr().err
    assert sweep_main(monkeypatch, out, "--resume", "--batch-sizes", "1,8", "--no-progress") == 0
    assert "--batch-sizes 1,8 (recorded: 1,2,4)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("first", "change", "said"),
    [
        ((), ("--repeats", "2"), "--repeats 2 (recorded: 1, the default)"),
        (("--budget", "0.2"), ("--budget", "0.5"), "--budget 0.5 (recorded: 0.2)"),
        ((), ("--wait-quiet", "1"), "--wait-quiet 1.0 (recorded: 0.0, the default)"),
        ((), ("--weights", "WEIGHTS"), "--weights WEIGHTS (recorded: none, the default)"),
    ],
)
def test_resume_refuses_a_flag_that_changes_how_numbers_are_measured(
    first, change, said, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    weights = tmp_path / "r18.pth"
    weights.write_bytes(b"")
    change = tuple(str(weights) if c == "WEIGHTS" else c for c in change)
    said = said.replace("WEIGHTS", str(weights))
    assert sweep_main(monkeypatch, out, *GRID, *first) == 0
    capsys.readouterr()
    calls: list = []
    rc = sweep_main(monkeypatch, out, "--resume", "--batch-sizes", "1,8", *change,
                    fake=fake_measure(calls))  # fmt: skip
    assert rc == 2 and not calls
    err = one_line(capsys)
    assert said in err and "3 finished Results" in err and "another --out" in err
    assert len(report.read_results(out)) == 3  # nothing was added beside them


def test_resume_may_change_the_grid_and_flags_that_measure_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert sweep_main(monkeypatch, out, *GRID) == 0
    capsys.readouterr()
    calls: list = []
    rc = sweep_main(monkeypatch, out, "--resume", "--batch-sizes", "1,2,4,8", "--timeout", "60",
                    "--max-minutes", "10", "--repeats", "1", "--keep-errors",
                    fake=fake_measure(calls))  # fmt: skip
    assert rc == 0 and [c.batch_size for c in calls] == [8]
    err = capsys.readouterr().err
    assert "--timeout 60.0 (recorded: 900.0, the default)" in err
    assert "--repeats" not in err  # given as it was: the default, recorded as not given


def test_resume_may_change_how_numbers_are_measured_while_none_is_finished(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    assert sweep_main(monkeypatch, out, *GRID, fake=fake_measure(fail={1, 2, 4})) == 4
    calls: list = []
    rc = sweep_main(monkeypatch, out, "--resume", "--repeats", "2", fake=fake_measure(calls))
    assert rc == 0 and len(calls) == 3
    assert "--repeats 2 (recorded: 1, the default)" in capsys.readouterr().err


def test_errors_exit_4_and_resume_retries_them_keeping_the_old_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    fake = fake_measure(fail={2})
    assert sweep_main(monkeypatch, out, *GRID, fake=fake) == sweep.EXIT_ERRORS
    assert "1 Config ended in error" in capsys.readouterr().err
    assert sweep_main(monkeypatch, out, "--resume", "--no-progress", fake=fake) == 0
    on_disk = [json.loads(line) for line in lines(out / runfolder.RESULTS_FILE)]
    assert [(r["batch_size"], r["status"]) for r in on_disk] == [
        (1, "ok"), (2, "error"), (4, "ok"), (2, "ok")]  # fmt: skip
    shown = report.read_results(out)
    assert sorted((r.batch_size, r.status) for r in shown) == [(1, "ok"), (2, "ok"), (4, "ok")]
    assert "3 results: 3 ok" in (out / "summary.md").read_text()
    assert (
        f"{sweep.EXIT_ERRORS}    some Configs ended in error" in sweep.build_parser().format_help()
    )


def test_keep_errors_leaves_them(tmp_path, monkeypatch):
    out = tmp_path / "run"
    sweep_main(monkeypatch, out, *GRID, fake=fake_measure(fail={2}))
    calls: list = []
    rc = sweep_main(monkeypatch, out, "--resume", "--keep-errors", "--no-progress",
                    fake=fake_measure(calls))  # fmt: skip
    assert rc == sweep.EXIT_ERRORS and not calls


# ----------------------------------------------------------------------------- the worker (7)


def test_the_isolated_worker_dies_with_its_parent_on_kill_9(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_sweep_cmd(out, "--batch-sizes", "64", "--budget", "60", "--isolate", "on"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    workers: list[psutil.Process] = []

    def worker_measuring() -> bool:  # it names itself once it is tied to its parent
        try:
            workers[:] = [c for c in psutil.Process(proc.pid).children()
                          if c.name() == isolate.WORKER_NAME.decode()]  # fmt: skip
        except psutil.Error:  # a child that just ended
            return False
        return bool(workers)

    try:
        _wait_for(worker_measuring, proc)
        time.sleep(0.5)  # into its measuring
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and _alive(workers[0]):
        time.sleep(0.05)
    alive = _alive(workers[0])
    if alive:
        workers[0].kill()
    assert not alive, "the worker outlived its killed parent"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


_SIGNAL_IN_REPORT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job ignores it
from resbench import report, sweep
from resbench.engine.measure import Result
sweep.runner.measure = lambda c, *a, **k: Result.for_config(c, latency_ms_median=1.0, throughput_ips=1.0)
real = report.finish_run
def finish_run(out, *a, **k):
    if not getattr(finish_run, "done", False):  # the final report, after the last Config
        finish_run.done = True
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real(out, *a, **k)
report.finish_run = finish_run
sys.exit(sweep.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_final_report_is_one_message_and_exit_130(tmp_path, sig):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _SIGNAL_IN_REPORT, sig, *GRID, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "every Result is in" in done.stderr
    assert len(report.read_results(out)) == 3


_STOP_IN_EPOCH_2 = """
import pathlib, sys, time
from resbench.engine.backends import TrainStep
from resbench.train import runner
checkpoint = pathlib.Path(sys.argv[1]) / "checkpoint.pt"
real = TrainStep.__call__
def step(self, x, y):
    if checkpoint.exists():  # epoch 1 is checkpointed: epoch 2 waits here for the signal
        time.sleep(600)
    return real(self, x, y)
TrainStep.__call__ = step
sys.exit(runner.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_trainer_keeps_its_checkpoint_and_prints_the_resume_command(
    tiny_cifar, tmp_path, capsys, sig
):
    out = tmp_path / "t"
    argv = train_argv(tiny_cifar, out, epochs="3")
    proc = subprocess.Popen([sys.executable, "-c", _STOP_IN_EPOCH_2, str(out), *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        _wait_for(lambda: (out / train.CHECKPOINT).exists(), proc)
        proc.send_signal(sig)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == train.EXIT_INTERRUPTED == 130, err[-2000:]
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith("interrupted; ")
    assert f"{out / train.CHECKPOINT} keeps epoch 1 of 3; resume with: " in said[0]
    assert torch.load(out / train.CHECKPOINT, weights_only=True)["state"]["epoch"] == 1
    assert len(lines(out / train.LOG_FILE)) == 1
    assert "130  interrupted (Ctrl-C, SIGTERM)" in train.build_parser().format_help()
    if sig != signal.SIGTERM:
        return
    command = shlex.split(said[0].split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "resbench.train"]
    assert train.main(command[3:]) == 0  # the exact command continues from the checkpoint
    assert f"resumed {out} at epoch 1" in capsys.readouterr().err
    assert [json.loads(x)["epoch"] for x in lines(out / train.LOG_FILE)] == [1, 2, 3]


def test_a_signal_while_a_checkpoint_is_written_waits_for_the_write(tmp_path):
    stop, done = trainfolder.Stop(), []
    previous = signal.getsignal(signal.SIGTERM)
    with stop.installed(), pytest.raises(KeyboardInterrupt):
        with stop.writing():
            os.kill(os.getpid(), signal.SIGTERM)
            trainrun.save_checkpoint(tmp_path / train.CHECKPOINT, x=torch.arange(3))
            done.append("written")
        done.append("not reached")
    assert done == ["written"]
    assert torch.equal(torch.load(tmp_path / train.CHECKPOINT)["x"], torch.arange(3))
    assert signal.getsignal(signal.SIGTERM) is previous


# ----------------------------------------------------------------------------- bad input (8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--timeout", "0"], "--timeout must be positive"),
        (["--timeout", "-5"], "--timeout must be positive"),
        (["--budget", "nan"], "--budget must be a finite number"),
        (["--budget", "inf"], "--budget must be a finite number"),
        (["--max-minutes", "nan"], "--max-minutes must be a finite number"),
        (["--batch-sizes", "8,,16"], "--batch-sizes has an empty item in '8,,16'"),
        (["--models", ""], "--models is empty"),
        (["--device", ""], "--device is empty"),
        (["--precision", "fp32,"], "--precision has an empty item"),
    ],
)
def test_sweep_refuses_nonsense(argv, message, capsys):
    base = {"--device": "cpu", "--models": "small_resnet20"}
    flags = [x for k, v in base.items() if k not in argv for x in (k, v)]
    assert sweep.main([*flags, *argv]) == 2
    assert message in one_line(capsys)


def test_report_refuses_nonsense(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    sweep_main(monkeypatch, out, *GRID)
    capsys.readouterr()
    assert report.main([str(out), "--threshold", "nan"]) == 2
    assert "--threshold must be a finite number" in one_line(capsys)
    array = tmp_path / "array.json"
    array.write_text("[1, 2, 3]")
    for path in (out / runfolder.ENV_FILE, array):
        assert report.main(["--pytest-benchmark", str(path)]) == 2
        assert "is not a pytest-benchmark JSON file" in one_line(capsys)


def test_flops_has_a_real_parser(capsys):
    assert flops.main(["--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in one_line(capsys)
    with pytest.raises(SystemExit) as exit_:
        flops.main(["--help"])
    assert exit_.value.code == 0 and "--image-size" in capsys.readouterr().out
    assert flops.main(["--models", "small_resnet20", "--image-size", "64"]) == 0
    table = capsys.readouterr().out
    assert "small_resnet20" in table and "64x64" in table and "resnet50" not in table


def test_an_image_too_small_for_the_network_is_refused(capsys):
    assert cli.min_image_size("resnet50") == 32 and cli.min_image_size("small_resnet20") == 4
    assert profile.main(["--model", "resnet50", "--image-size", "7", "--device", "cpu"]) == 2
    assert "the smallest size it takes is 32" in one_line(capsys)
    assert flops.main(["--models", "resnet50", "--image-size", "7"]) == 2
    assert "the smallest size it takes is 32" in one_line(capsys)


@pytest.mark.parametrize("tool", ["sweep", "profile", "train"])
def test_out_under_a_file_is_one_line(tool, tiny_cifar, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "run"
    if tool == "sweep":
        rc = sweep_main(monkeypatch, out, *GRID)
    elif tool == "profile":
        rc = profile.main(["--model", "small_resnet20", "--device", "cpu", "--batch-size", "2",
                           "--steps", "1", "--warmup", "0", "--out", str(out)])  # fmt: skip
    else:
        rc = train_main(tiny_cifar, out)
    assert rc == cli.EXIT_USAGE  # the user's path: a file where a folder must be
    err = one_line(capsys)
    assert "is a file, not a folder: give --out a folder" in err and str(blocker) in err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_is_one_line_and_keeps_every_result(
    code, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # the third Result finds the disk full (or remounted read-only)
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(runfolder.os, "fsync", fsync)
    assert sweep_main(monkeypatch, out, *GRID) == cli.EXIT_IO
    err = one_line(capsys)
    assert os.strerror(code) in err and str(out / runfolder.RESULTS_FILE) in err
    monkeypatch.setattr(runfolder.os, "fsync", real_fsync)
    kept = runfolder.read_results(out)
    assert [r.batch_size for r in kept][:2] == [1, 2]


def test_trainer_numbers_and_resume_are_checked(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "t"
    assert train_main(tiny_cifar, out, "--resume") == 2
    assert "nothing to continue" in one_line(capsys)
    assert train_main(tiny_cifar, out, "--batch-size", "1000") == 2
    assert "larger than the 64 training images" in one_line(capsys)
    assert not (out / train.LOG_FILE).exists()
    assert train_main(tiny_cifar, out) == 0
    capsys.readouterr()
    for flags, what in (
        (["--batch-size", "16"], "--batch-size 16 (recorded: 32)"),
        (["--lr", "0.2"], "--lr 0.2 (recorded: 0.1)"),
    ):
        assert train_main(tiny_cifar, out, "--resume", "--epochs", "2", *flags) == 2
        assert what in one_line(capsys)
    for flags in (["--lr", "nan"], ["--momentum", "inf"], ["--device", ""], ["--gamma", "-1"]):
        assert train_main(tiny_cifar, out, "--resume", *flags) == 2
        one_line(capsys)
    (out / train.CHECKPOINT).write_bytes(b"PK\x03\x04 not a checkpoint")
    assert train_main(tiny_cifar, out, "--resume", "--epochs", "2") == 2
    assert "is not a readable checkpoint" in one_line(capsys)


def test_train_jsonl_never_holds_a_non_finite_number(tmp_path):
    trainrun.write_log(tmp_path, [{"epoch": 1, "train_loss": float("nan"), "lr": float("inf")}])
    row = json.loads((tmp_path / train.LOG_FILE).read_text())  # strict JSON parses
    assert row == {"epoch": 1, "train_loss": None, "lr": None}


def test_a_missing_training_batch_is_one_line(tmp_path, capsys):
    data.make_synthetic(tmp_path, n_train=50, n_test=10)
    (tmp_path / data.cifar.FOLDER / "data_batch_2").unlink()
    assert data.main(["--data-dir", str(tmp_path), "--no-verify"]) == 2
    assert "lacks data_batch_2" in one_line(capsys)


# ----------------------------------------------------------------------------- CIFAR keys (9)


def test_a_cifar_folder_with_string_keys_loads(tmp_path):
    folder = data.make_synthetic(tmp_path, n_train=50, n_test=10)
    expected = data.load("cifar10", tmp_path, check=False)
    for name in [*data.cifar.TRAIN_FILES, data.cifar.TEST_FILE]:
        with (folder / name).open("rb") as f:
            entry = pickle.load(f, encoding="bytes")
        with (folder / name).open("wb") as f:  # as Python 3 code exporting its own data writes it
            pickle.dump({k.decode(): v for k, v in entry.items()}, f)
    (folder / data.cifar.CACHE_FILE).unlink()
    got = data.load("cifar10", tmp_path, check=False)
    assert torch.equal(got.train_x, expected.train_x) and torch.equal(got.test_y, expected.test_y)


# ----------------------------------------------------------------------------- no code runs (10)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_cannot_run_code(tmp_path, capsys):
    folder = data.make_synthetic(tmp_path, n_train=50, n_test=10)
    marker = tmp_path / "ran"
    with (folder / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": []}, f)
    assert data.main(["--data-dir", str(tmp_path), "--no-verify"]) == 2
    err = one_line(capsys)
    assert "data_batch_1" in err and "could run code" in err
    assert not marker.exists()


def _crafted_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": _RunsCode(marker), "config": {"model": "small_resnet20"}}, path)


def test_a_crafted_checkpoint_cannot_run_code_in_layerstats(tmp_path, capsys):
    ckpt, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _crafted_checkpoint(ckpt, marker)
    rc = layerstats.main(["--model", "small_resnet20", "--device", "cpu", "--batch-size", "4",
                          "--checkpoint", str(ckpt), "--out", str(tmp_path / "ls")])  # fmt: skip
    assert rc == 2
    assert "could run code" in one_line(capsys)
    assert not marker.exists()


def test_a_crafted_checkpoint_cannot_run_code_on_train_resume(tiny_cifar, tmp_path, capsys):
    out, marker = tmp_path / "t", tmp_path / "ran"
    assert train_main(tiny_cifar, out) == 0
    _crafted_checkpoint(out / train.CHECKPOINT, marker)
    capsys.readouterr()
    assert train_main(tiny_cifar, out, "--resume", "--epochs", "2") == 2
    assert "could run code" in one_line(capsys)
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_one_line_in_layerstats(tiny_cifar, tmp_path, capsys):
    assert train_main(tiny_cifar, tmp_path / "t") == 0
    capsys.readouterr()
    rc = layerstats.main(["--model", "small_resnet32", "--device", "cpu", "--batch-size", "4",
                          "--checkpoint", str(tmp_path / "t" / train.CHECKPOINT),
                          "--out", str(tmp_path / "ls")])  # fmt: skip
    assert rc == 2
    assert "holds small_resnet20, not small_resnet32" in one_line(capsys)
