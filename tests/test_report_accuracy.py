"""The report respects accuracy: answers within --max-accuracy-drop, the Pareto front, the trade-off
plot, and --compare's "less accurate"; a run without accuracy renders as before."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from test_report import result, write_run

from resbench import report
from resbench.report import accuracy, tradeoff
from resbench.report.analysis import results_table
from resbench.report.tables import answers_rows


def scored(r, top1, drop, ci=None, lost=None, gained=None, p=None, **kw):
    """``r`` scored on 1,000 labelled images: top-1 (a fraction) and its drop in points."""
    return dataclasses.replace(
        r, top1_accuracy=top1, top5_accuracy=0.99, accuracy_drop=drop, accuracy_drop_ci=ci,
        flips_lost=lost, flips_gained=gained, accuracy_drop_p=p, kl_divergence=0.01,
        eval_images=1000, eval_data="/data/fashion-mnist", **kw,
    )  # fmt: skip


def trade_run():
    """fp32 eager; bf16 a little faster and 0.3 points lower; int8+openvino fastest at 3.2 points."""
    return [
        scored(result(ms=10, seed=1), 0.920, 0.0, [0.0, 0.0], 0, 0, 1.0),
        scored(result(precision="bf16", ms=6, seed=2), 0.917, 0.3, [0.1, 0.5], 4, 1, 0.38),
        scored(
            result(precision="int8", backend="openvino", ms=2, seed=3), 0.888, 3.2, [2.6, 3.8],
            40, 8, 1e-9, calibration="512 training images", calibration_method="minmax",
        ),
    ]  # fmt: skip


def answers_line(summary: str, model: str = "resnet18") -> str:
    start = summary.index("## Answers")
    return next(line for line in summary[start:].splitlines() if line.startswith(f"| {model}"))


def test_the_answer_names_the_fastest_within_the_drop_and_the_fastest_overall(tmp_path):
    write_run(tmp_path / "run", trade_run())
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "| fastest within 1.0 point " in summary
    row = answers_line(summary)
    within, overall = row.split("|")[3].strip(), row.split("|")[8].strip()
    assert within == "bf16"  # int8 is faster, but 3.2 points down
    assert overall.startswith("int8+openvino: ")
    assert "at a drop of 3.20 points (95% CI 2.60 to 3.80; McNemar p 1e-9)" in overall
    # the accuracy table: every setting, fastest first, with its numbers and the front
    table = summary[summary.index(": accuracy on 1,000 images of /data/fashion-mnist") :]
    lines = [line for line in table.splitlines() if line.startswith("| resnet18")][:3]
    assert [line.split("|")[3].strip() for line in lines] == ["int8+openvino", "bf16", "fp32"]
    assert "88.80%" in lines[0] and "3.20 (2.60 to 3.80)" in lines[0] and "40 / 8" in lines[0]
    assert "512 training images, minmax" in lines[0] and "| no " in lines[0]
    assert all(line.rstrip(" |").endswith("yes") for line in lines)  # all three on the front
    # a wider bound makes int8 the answer, and then there is no second row
    assert report.main([str(tmp_path / "run"), "--max-accuracy-drop", "5"]) == 0
    row = answers_line((tmp_path / "run" / "summary.md").read_text())
    assert row.split("|")[3].strip() == "int8+openvino" and "the same" in row


def test_the_within_drop_choice_skips_rows_over_the_drop_or_not_measured():
    fp32, bf16, int8 = trade_run()
    unscored = result(precision="fp32", backend="onnxruntime", ms=1, seed=4)  # fastest of all
    frame = results_table([fp32, bf16, int8, unscored], {})
    picks = report.accuracy_picks(frame, max_drop=1.0).set_index("setting")
    assert picks.loc["bf16", "fastest_within"] and not picks.loc["int8+openvino", "within"]
    assert picks.loc["fp32+onnxruntime", "fastest_overall"]
    assert not picks.loc["fp32+onnxruntime", "within"]  # not measured: never within
    assert picks["fastest_within"].sum() == 1 and picks["fastest_overall"].sum() == 1
    row = answers_rows(frame, 1.0).iloc[0]
    assert row["fastest within 1.0 point"] == "bf16"
    assert row["fastest overall"].endswith("accuracy not measured")
    # tighter than bf16's drop: only fp32 eager itself is within
    assert answers_rows(frame, 0.25).iloc[0]["fastest within 0.25 points"] == "fp32"


def test_a_drop_whose_interval_passes_the_bound_is_said_so():
    fp32, _, int8 = trade_run()
    wide = scored(result(precision="bf16", ms=6, seed=2), 0.915, 0.5, [-0.3, 1.4], 9, 4, 0.27)
    frame = results_table([fp32, wide, int8], {})
    row = answers_rows(frame, 1.0).iloc[0]
    assert row["fastest within 1.0 point"] == "bf16"
    assert row["drop"] == "0.50 points (95% CI -0.30 to 1.40): the interval reaches past 1.0 point"
    table = accuracy.accuracy_rows(frame, 1.0).set_index("setting")
    assert table.loc["bf16", "within 1.0 point"] == "yes, but its interval reaches past it"


def brute_front(ips, drop) -> list[bool]:
    """A point is on the front when no other beats it in both, strictly in one (by definition)."""
    front = []
    for i in range(len(ips)):
        if not (math.isfinite(ips[i]) and math.isfinite(drop[i])):
            front.append(False)
            continue
        beaten = any(
            ips[j] >= ips[i] and drop[j] <= drop[i] and (ips[j] > ips[i] or drop[j] < drop[i])
            for j in range(len(ips))
            if j != i and math.isfinite(ips[j]) and math.isfinite(drop[j])
        )
        front.append(not beaten)
    return front


def test_the_pareto_front_matches_a_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        ips = rng.integers(1, 6, n).astype(float)  # few values: ties in speed and in drop
        drop = rng.integers(-2, 4, n).astype(float) / 2
        drop[rng.random(n) < 0.15] = np.nan
        assert list(report.pareto_front(ips, drop)) == brute_front(ips, drop), (ips, drop)


def test_the_tradeoff_png_and_page_show_the_front_and_the_bound(tmp_path):
    rows = [*trade_run(), result(precision="fp32", backend="onnxruntime", ms=9, seed=4)]
    frame = results_table(rows, {})
    (panel,) = tradeoff.panels(frame, 1.0)
    assert set(panel.rows["setting"]) == {"fp32", "bf16", "int8+openvino"}
    assert list(panel.front["setting"]) == ["fp32", "bf16", "int8+openvino"]  # by drop
    assert panel.unplaced == ["fp32+onnxruntime"]
    paths = report.write_outputs(tmp_path, {}, rows, "t", max_accuracy_drop=2.0)
    png = (tmp_path / "plots" / "accuracy_tradeoff.png").read_bytes()
    assert png.startswith(b"\x89PNG") and paths["accuracy_tradeoff"].name == tradeoff.PNG
    page = (tmp_path / "report.html").read_text()
    assert "Speed against accuracy" in page and "the allowed drop, 2.0 points" in page
    assert "Accuracy: inference on cpu" in page and "fastest within 2.0 points" in page
    assert 'src="plots/accuracy_tradeoff.png"' not in page  # drawn interactively instead


def test_the_tradeoff_png_marks_the_front_and_draws_the_bound(tmp_path, monkeypatch):
    plt = report.pyplot()
    saved = []
    monkeypatch.setattr(plt, "close", lambda *a: saved.append(a[0]))
    tradeoff.write_tradeoff(results_table(trade_run(), {}), tmp_path, 0.5)
    ax = saved[0].axes[0]
    assert [line.get_xdata()[0] for line in ax.lines if line.get_gid() == "allowed_drop"] == [0.5]
    labels = {t.get_text() for t in ax.texts}
    assert {"fp32", "bf16", "int8+openvino"} <= labels
    (ring,) = [c for c in ax.collections if c.get_gid() == "pareto"]
    assert sorted(map(tuple, ring.get_offsets())) == sorted(
        (r.accuracy_drop, r.throughput_ips) for r in trade_run()
    )


def test_compare_says_less_accurate_beside_the_speed_verdict(tmp_path):
    fp32, bf16, int8 = trade_run()
    old = [
        fp32,
        dataclasses.replace(bf16, top1_accuracy=0.9175, accuracy_drop=0.25),
        dataclasses.replace(int8, top1_accuracy=0.915, accuracy_drop=0.5, accuracy_drop_p=0.3),
    ]
    new = [fp32, bf16, int8]  # int8 fell 2.7 points; bf16 0.05, not significantly
    table = report.compare(new, old).set_index("setting")
    assert table.loc["int8+openvino", "accuracy"] == "less accurate"
    assert table.loc["int8+openvino", "accuracy change"] == pytest.approx(-2.7)
    assert "more than the allowed 1.0 point" in table.loc["int8+openvino", "note"]
    assert table.loc["bf16", "accuracy"] == "" and table.loc["fp32", "accuracy"] == ""
    # within the allowed drop, but now significantly below fp32 eager where it was not
    sig = dataclasses.replace(int8, top1_accuracy=0.912, accuracy_drop=0.8, accuracy_drop_p=1e-4)
    assert report.compare([sig], [old[2]]).loc[0, "accuracy"] == "less accurate"
    assert report.compare([sig], [old[2]], max_accuracy_drop=0.2).loc[0, "accuracy"] != ""
    write_run(tmp_path / "old", old)
    write_run(tmp_path / "new", new)
    assert report.main([str(tmp_path / "new"), "--compare", str(tmp_path / "old")]) == 0
    text = (tmp_path / "new" / "compare.md").read_text()
    assert "Accuracy compared on 3 Configs scored in both runs: 1 less accurate" in text
    assert "resnet18 b8 inference int8+openvino (-2.70)" in text
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[cells.index("verdict") + 1 : cells.index("verdict") + 3] == [
        "top-1 change, points",
        "accuracy",
    ]


def test_a_run_without_accuracy_renders_as_before(tmp_path):
    rows = [result(ms=10, seed=1), result(precision="bf16", ms=6, seed=2)]
    write_run(tmp_path / "run", rows)
    (tmp_path / "run" / "run.json").write_text(
        json.dumps({"invocations": [{"options": {"max_accuracy_drop": 3.0}}]})
    )
    texts = []
    for flags in ([], ["--max-accuracy-drop", "0.1"]):
        assert report.main([str(tmp_path / "run"), *flags]) == 0
        texts.append((tmp_path / "run" / "summary.md").read_text())
        assert not (tmp_path / "run" / "plots" / "accuracy_tradeoff.png").exists()
    assert texts[0] == texts[1]
    assert (
        "| model    | batch   | fastest   | img/s   | vs fp32   | MFU   | agreement   |" in texts[0]
    )
    assert "accuracy" not in texts[0].lower() and "drop" not in texts[0]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Speed against accuracy" not in page and "Accuracy:" not in page
    columns = set(report.compare(rows, rows).columns)
    assert not {"accuracy", "accuracy change"} & columns
    assert "Accuracy compared" not in report.compare_markdown({}, rows, {}, rows, 0.05)


def test_the_report_reads_the_runs_recorded_drop_and_the_flag_wins(tmp_path):
    run = tmp_path / "run"
    write_run(run, trade_run())
    record = {"invocations": [{"options": {"max_accuracy_drop": 4.0}}, {"command": "resume"}]}
    (run / "run.json").write_text(json.dumps(record))
    report.write_report(run)  # as the sweep calls it at its end
    assert answers_line((run / "summary.md").read_text()).split("|")[3].strip() == "int8+openvino"
    assert report.main([str(run), "--max-accuracy-drop", "1"]) == 0
    assert answers_line((run / "summary.md").read_text()).split("|")[3].strip() == "bf16"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf"])
def test_a_bad_max_accuracy_drop_is_one_line_and_exit_2(tmp_path, capsys, value):
    write_run(tmp_path / "run", trade_run())
    assert report.main([str(tmp_path / "run"), f"--max-accuracy-drop={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-accuracy-drop" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "summary.md").exists()  # refused before anything is written


def test_a_bad_recorded_drop_is_one_line_and_exit_2(tmp_path, capsys):
    write_run(tmp_path / "run", trade_run())
    record = {"invocations": [{"options": {"max_accuracy_drop": "lots"}}]}
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    assert report.main([str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "max_accuracy_drop 'lots'" in err and len(err.splitlines()) == 1
    write_run(tmp_path / "old", [result()])  # a run without accuracy never needed run.json
    (tmp_path / "old" / "run.json").write_text("{damaged")
    assert report.main([str(tmp_path / "old")]) == 0
