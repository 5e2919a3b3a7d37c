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
