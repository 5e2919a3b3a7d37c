"""The load in the headline and in comparisons, measured for real: a busy child process."""

from __future__ import annotations

import dataclasses
import json

from resbench import report, sweep


def test_a_sweep_under_load_says_so_and_compare_warns(tmp_path, busy_cpu, capsys):
    out = tmp_path / "busy"
    argv = ["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "2", "--budget",
            "0.2", "--isolate", "off", "--no-progress", "--out", str(out)]  # fmt: skip
    assert sweep.main(argv) == 0
    results = report.read_results(out)
    assert results and all(r.foreign_cpu >= report.LOAD_MEDIAN_CORES for r in results)
    cores = json.loads((out / "env.json").read_text())["logical_cores"]
    warning = report.load_warning(results, cores)
    assert warning and f"{len(results)} of {len(results)}" in warning
    top = (out / "summary.md").read_text().split("## Answers")[0]
    assert f"**Warning: {warning}.**" in top
    assert f"and {len(results)} under load" in top
    assert "measured under load" in (out / "report.html").read_text().lower()
    assert json.loads((out / "env.json").read_text())["bandwidth_gbs"]["cpu"] > 0

    quiet = tmp_path / "quiet"
    quiet.mkdir()
    rows = [dataclasses.replace(r, foreign_cpu=0.0) for r in results]
    (quiet / "results.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    (quiet / "env.json").write_text((out / "env.json").read_text())
    assert report.main([str(out), "--compare", str(quiet)]) == 0
    text = (out / "compare.md").read_text()
    assert "The new run was measured under load" in text and "different loads" in text
    assert "measured under load (new run:" in text  # in the row itself
