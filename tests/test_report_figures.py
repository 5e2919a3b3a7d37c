"""Figures printed side by side agree with each other (issue 32): forks' percentiles and the rows
whose forks disagree, bandwidth over the roof, answers under load, what was not tried."""

from __future__ import annotations

import dataclasses

from test_report import result  # tests/ is on sys.path (no __init__.py)

from resbench import report


def split_row():
    """The trial's row: forks 1.40 ms and 299.55 ms apart, written before fork_samples existed
    (percentiles pooled over 305 fast samples and 3 slow ones: p99 3.61 ms under a median of
    150.47)."""
    fast = [1.35 + 0.1 * i / 304 for i in range(305)]
    slow = [299.0, 299.55, 300.1]
    base = result("small_resnet18", 1, ms=1.4)
    return dataclasses.replace(
        base, forks=2, fork_medians_ms=[fast[152], 299.55], latency_ms_median=150.47,
        latency_ms_p99=3.61, throughput_ips=6.6, samples_ms=fast + slow, fork_samples=[],
    )  # fmt: skip


def test_a_row_whose_forks_disagree_has_no_headline_anywhere(tmp_path):
    split = split_row()
    other = result("small_resnet18", 8, ms=5.0, forks=2)
    paths = report.write_outputs(tmp_path, {"cpu": "test"}, [split, other], "t")
    summary = paths["summary"].read_text()
    said = "forks disagree: 1.40 ms and 299.6 ms"
    answers = summary.split("## Answers")[1].split("\n## ")[0]
    assert "no answer (forks disagree on fp32: 1.40 ms and 299.6 ms)" in answers
    tables = summary.split("## inference on cpu", 1)[1]
    assert tables.count(said) >= 2  # the images/s table and the detail table
    assert "6.6" not in tables and "150.47" not in tables  # a figure no fork measured
    assert (
        "1 row has no headline figure: its forks (fresh processes) are more than 2x apart"
        in summary
    )
    page = paths["html"].read_text()
    assert said in page and "<th>forks disagree</th>" in page
    # forks 1.36x apart in an old row: pooled, p99 (1.45 ms) sat under the median (1.65 ms); read
    # again with each fork weighted alike, it is the slow fork's
    fast = split.samples_ms[:305]
    near = dataclasses.replace(
        split, fork_medians_ms=[fast[152], 1.9], samples_ms=[*fast, 1.8, 1.9, 2.0],
        latency_ms_median=(fast[152] + 1.9) / 2, latency_ms_p99=1.45,
    )  # fmt: skip
    row = report.results_frame([near]).iloc[0]
    assert row["latency_ms_p99"] == 2.0 and row["latency_ms_p10"] < row["latency_ms_median"]


def test_bandwidth_over_the_roof_is_said_not_shown_and_bounds_nothing(tmp_path):
    from resbench.engine import flops
    from resbench.report.analysis import results_table

    fast = dataclasses.replace(
        result("small_resnet20", 32, ms=0.5, backend="openvino"), effective_precision="bf16"
    )
    slow = result("small_resnet20", 8, ms=50.0)
    env = {"cpu": "test", "bandwidth_gbs": {"cpu": 20.0}}
    frame = results_table([fast, slow], env).set_index("batch_size")
    assert bool(frame.loc[32, "over_roof"]) and frame.loc[32, "bound"] == ""
    assert frame.loc[32, "bandwidth_fraction"] != frame.loc[32, "bandwidth_fraction"]  # NaN
    assert not frame.loc[8, "over_roof"] and 0 < frame.loc[8, "bandwidth_fraction"] < 1
    # bytes at the precision that ran: OpenVINO ran this fp32 row in bf16
    assert frame.loc[32, "bytes_per_step"] == flops.count_bytes(
        "small_resnet20", 32, "inference", "bf16"
    ).bytes_per_step(32)
    paths = report.write_outputs(tmp_path, env, [fast, slow], "t")
    summary = paths["summary"].read_text()
    assert "BW not shown for 1 row: the naive byte count" in summary
    details = summary.split(": details", 1)[1]
    detail = next(line for line in details.splitlines() if "| small_resnet20 | 32" in line)
    assert "| over roof |" in detail.replace("  ", "") or "over roof" in detail
    assert "memory" not in detail and "compute" not in detail
    assert "over roof" in paths["html"].read_text()


def test_answers_under_load_are_withheld_with_the_size_of_the_effect_and_what_to_do(tmp_path):
    # the trial: one of 2 cores taken, 2 intra-op threads: fp32+cl "5.44x faster than fp32"
    base = dataclasses.replace(result("resnet18", 1, ms=914.0, threads=2), foreign_cpu=1.0)
    cl = dataclasses.replace(
        result("resnet18", 1, ms=168.0, channels_last=True, threads=2), foreign_cpu=1.0
    )
    quiet = [
        dataclasses.replace(result("resnet18", 8, ms=200.0 / f, threads=2, channels_last=f > 1),
                            foreign_cpu=0.0)
        for f in (1.0, 1.15)
    ]  # fmt: skip
    env = {"cpu": "test", "logical_cores": 2}
    paths = report.write_outputs(tmp_path, env, [base, cl, *quiet], "t")
    summary = paths["summary"].read_text()
    answers = summary.split("## Answers")[1].split("\n## ")[0]
    b1 = next(line for line in answers.splitlines() if "| resnet18 | 1 " in line)
    assert "no answer: measured under load (fp32+cl 1.00 cores busy elsewhere; fp32 1.00" in b1
    assert "5.44x" not in b1 and "1.15x" in answers  # the quiet batch keeps its answer
    assert "2 of them ran more intra-op threads than the cores left free" in summary
    assert "37x" in summary and "--wait-quiet" in summary and "--threads 1 or" not in summary
    assert "or with --threads 1, so the threads fit the free cores" in summary
    assert "no answer: measured under load" in paths["html"].read_text()


def test_the_summary_names_the_backends_not_tried_and_why(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(  # a machine without the deploy extra
        importlib.util, "find_spec", lambda name, *a: None if name in ("onnxruntime", "openvino")
        else real(name, *a),
    )  # fmt: skip
    rows = [result("resnet18", 8, ms=50.0), result("resnet18", 8, ms=40.0, compile="default")]
    paths = report.write_outputs(tmp_path, {"cpu": "test"}, rows, "t")
    summary = paths["summary"].read_text()
    said = next(line for line in summary.splitlines() if "Backends not tried" in line)
    assert 'onnxruntime, openvino (not installed: pip install -e ".[deploy]")' in said
    assert "aotinductor (not in this run's grid: add --backends aotinductor" in said
    assert "compile" not in said.split("aotinductor")[0]  # it ran
    assert "Backends not tried" in paths["html"].read_text()


def test_an_older_rows_probe_kernel_is_marked_and_a_rereads_kernels_are_its_own(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from resbench.report.tables import computed_in

    old = dataclasses.replace(
        result("small_resnet20", 1, ms=3.0), effective_precision="fp32",
        compute_kernel="brg_conv_fwd:avx512_core",
    )  # fmt: skip
    assert (
        computed_in(old.to_dict())
        == "fp32 (probe: brg_conv_fwd:avx512_core; not read off this row)"
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps(old.to_dict()) + "\n")
    script = Path(__file__).resolve().parent.parent / "scripts" / "reread_kernels.py"
    done = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = json.loads((run / "results.jsonl").read_text())
    assert row["kernels"].startswith("no oneDNN convolution") and row["compute_kernel"] is None
    assert (
        row["latency_ms_median"] == old.latency_ms_median and "re-read later" in row["kernels_read"]
    )
    assert (
        computed_in(row) == "fp32 (no oneDNN convolution (PyTorch's native kernels); re-read later)"
    )
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "none")], capture_output=True)
    assert bad.returncode == 2


def test_agreement_says_what_it_was_taken_on():
    from resbench.report.text import agreement

    noise = dataclasses.replace(result(), max_abs_diff=0.16, top1_agreement=1.0)
    assert agreement(noise.to_dict()) == "max abs diff 0.16; top-1 100.0% (on N(0,1) inputs)"
    real = dataclasses.replace(noise, agreement_inputs="10000 images of fmnist", max_abs_diff=11.0)
    assert agreement(real.to_dict()).endswith("(on real images)")
