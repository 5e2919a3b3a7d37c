"""report --compare as a CI gate: rows that match across machines, a compare that matched nothing,
and the machines' differences named (issue 31's cases 2 to 4; case 1 is in test_report.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_report import result, write_run  # tests/ is on sys.path (no __init__.py)

from resbench import env as env_module
from resbench import report
from resbench.report import fingerprint, matching
from resbench.report.compare import compare_report

ROOT = Path(__file__).resolve().parent.parent
SWEEP = "python -m resbench.sweep --models resnet18 --batch-sizes 8,16"


def host(threads: int, command: str = SWEEP, **extra) -> dict:
    return {"cpu": "test", "torch": "2.x", "torch_threads": threads, "logical_cores": threads,
            "thread_env": {}, "command": command, **extra}  # fmt: skip


def rows(threads: int, ms: float = 10.0, forks: int = 2, batches=(8, 16)) -> list:
    return [result(batch=b, ms=ms * b, forks=forks, seed=b, threads=threads) for b in batches]


def test_a_gate_that_matched_nothing_fails_and_names_what_kept_the_rows_apart(tmp_path, capsys):
    # the old sweep ran under OMP_NUM_THREADS=1: its rows ran 1 thread by the user's choice, the
    # new one's 2 by default, so no row is the same Config
    write_run(tmp_path / "old", rows(1), host(1, thread_env={"OMP_NUM_THREADS": "1"}))
    write_run(tmp_path / "new", rows(2), host(2))
    argv = [str(tmp_path / "new"), "--compare", str(tmp_path / "old")]
    assert report.main([*argv, "--fail-on", "slower"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no row of the two runs matched, so nothing was checked" in err[0]
    text = (tmp_path / "new" / "compare.md").read_text()
    assert "No Config was compared" in text
    assert "2 ok Configs of the new run and 2 of the old matched nothing" in text
    assert "threads (new 2 (default); old 1): 2 rows" in text
    assert report.main([*argv, "--fail-on", "inconclusive"]) == 1
    assert report.main(argv) == 0  # a report, not a gate: written, and said


def test_a_partial_match_says_how_many_rows_on_each_side_did_not(tmp_path):
    write_run(tmp_path / "old", rows(2, batches=(8, 16)), host(2))
    write_run(tmp_path / "new", rows(2, batches=(8, 32, 64)), host(2))
    assert report.main([str(tmp_path / "new"), "--compare", str(tmp_path / "old")]) == 0
    text = (tmp_path / "new" / "compare.md").read_text()
    assert (
        "Only part of the rows were compared: 2 ok Configs of the new run and 1 of the old" in text
    )
    assert "batch_size (new 32 or 64; old 16): 2 rows" in text


def test_the_environment_records_what_limited_the_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert env_module.collect_env()["thread_env"] == {"OMP_NUM_THREADS": "1"}
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert env_module.collect_env()["thread_env"] == {}


def test_default_thread_counts_match_across_machines_and_explicit_ones_key_exactly(tmp_path):
    two, sixteen = host(2), host(16)
    table = report.compare(rows(16), rows(2), new_env=sixteen, old_env=two)
    assert len(table) == 2 and list(table["threads old/new"]) == ["2/16", "2/16"]
    # without the runs' records, nothing says the counts were defaults: exact keys
    assert report.compare(rows(16), rows(2)).empty
    # --threads 2 on the 16-core machine is a choice: it is not the 2-core machine's default
    chosen = host(16, command=f"{SWEEP} --threads 2")
    assert report.compare(rows(2), rows(2), new_env=chosen, old_env=two).empty
    assert len(report.compare(rows(2), rows(2), new_env=chosen, old_env=chosen)) == 2
    # a default shared between streams: 2 streams on 16 cores run 8 threads each by default
    offline = dataclasses.replace(rows(8)[0], scenario="offline", streams=2)
    assert matching.threads_left_default(sixteen, offline)
    assert not matching.threads_left_default(sixteen, dataclasses.replace(offline, threads=4))


def _bench_file(path: Path, threads: int, median_s: float) -> Path:
    info = {"model": "small_resnet20", "batch_size": 2, "device": "cpu", "precision": "fp32",
            "mode": "inference", "threads": threads}  # fmt: skip
    stats = {"median": median_s, "iqr": median_s * 0.01, "rounds": 5,
             "data": [median_s * (1 + 0.001 * i) for i in range(5)]}  # fmt: skip
    machine = {"resbench": {"cpu": "test", "torch_threads": threads, "thread_env": {}}}
    data = {"benchmarks": [{"name": "x", "stats": stats, "extra_info": info}],
            "machine_info": machine, "version": "5"}  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def test_pytest_benchmark_files_from_machines_with_other_core_counts_compare(tmp_path, capsys):
    old = _bench_file(tmp_path / "old.json", 2, 0.001)
    new = _bench_file(tmp_path / "new.json", 16, 0.001)
    argv = ["--pytest-benchmark", str(new), "--compare", str(old), "--out", str(tmp_path / "o")]
    assert report.main([*argv, "--fail-on", "slower"]) == 0
    text = (tmp_path / "o" / "compare.md").read_text()
    assert "of 1 matching Configs" in text and "2/16" in text


@pytest.fixture(scope="module")
def committed_hosts():
    """results/backends-cpu (EPYC with AVX512-BF16) against backends-cpu-2026-11-27, the same
    grid run on another EPYC host that a CPU name alone does not tell apart."""
    new, old = ROOT / "results/backends-cpu", ROOT / "results/backends-cpu-2026-11-27"
    if not (new.exists() and old.exists()):
        pytest.skip("the committed runs are not in this checkout")
    return report.load(new), report.load(old)


def test_committed_runs_from_two_hosts_match_and_name_what_differs(committed_hosts):
    (new_env, new), (old_env, old) = committed_hosts
    warns, _, table = compare_report(new_env, new, old_env, old, 0.05)
    assert len(table) == 48  # every Config both ran: default threads on both hosts
    machines = next(w for w in warns if w.startswith("The machines differ"))
    assert "peak probe cpu fp32 (TFLOP/s): 0.478 -> 0.207 (0.43x)" in machines
    assert "copy bandwidth cpu (GB/s): 43.5 -> 26.7" in machines
    assert "unknown: CPU flags (old run)" in machines
    # one process a side, but most of a 2.3x host change is beyond the A/A spread
    assert (table["verdict"] == "slower").sum() >= 24


def test_the_arithmetic_fingerprint_names_amx_kernels_and_versions():
    epyc = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"],
            "onednn_bf16_kernel": "brg_conv_fwd:avx512_core_bf16", "torch": "2.14.1",
            "torch_threads": 2, "runtimes": {"openvino": "2026.4.1"}}  # fmt: skip
    amx = epyc | {"cpu": "Intel Xeon", "cpu_flags": [*epyc["cpu_flags"], "amx_bf16", "amx_int8"],
                  "onednn_bf16_kernel": "brg_conv_fwd:avx10_1_512_amx",
                  "runtimes": {"openvino": "2026.5.0"}}  # fmt: skip
    r = result(precision="bf16")
    old, new = [dataclasses.replace(r, peak_tflops=0.4)], [dataclasses.replace(r, peak_tflops=3.0)]
    text = fingerprint.warning(amx, new, epyc, old)
    for said in ("CPU: AMD EPYC -> Intel Xeon", "CPU flags: new has amx_bf16 amx_int8",
                 "oneDNN bf16 kernel: brg_conv_fwd:avx512_core_bf16 -> brg_conv_fwd:avx10_1_512_amx",
                 "openvino: 2026.4.1 -> 2026.5.0", "peak probe cpu bf16 (TFLOP/s): 0.4 -> 3 (7.50x)"):  # fmt: skip
        assert said in text
    assert fingerprint.warning(epyc, old, epyc, old) is None  # one machine: nothing to say
    # probes 10% apart are one host's drift, not another host
    drift = [dataclasses.replace(r, peak_tflops=0.44)]
    assert fingerprint.warning(epyc, drift, epyc, old) is None
