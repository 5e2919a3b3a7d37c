"""The report of serving rows (issue 23): offline and server rows in the tables, the opener, the
latency-against-offered-rate plot and --compare. Synthetic Results, no measuring."""

from __future__ import annotations

import dataclasses
import math

import pytest
from test_report import result, write_run  # tests/ is on sys.path (no __init__.py)
from test_report_plots import _capture_figures

from resbench import report
from resbench.engine.measure import Config, Result
from resbench.report import serving, serving_plot


def serve(model="resnet18", batch=8, precision="fp32", streams=2, threads=1, rate=None,
          target=None, sustained=True, p99=20.0, peak=None, achieved=None, tries=(), queue=0.0,
          **kw):  # fmt: skip
    """A server row: at a fixed ``rate``, or a search under ``target`` that found ``peak``. Not
    sustained: no latency, as the measuring side records it."""
    config = Config(model, batch, device="cpu", precision=precision, scenario="server",
                    streams=streams, threads=threads, rate=rate, target_p99_ms=target,
                    max_queue_ms=queue)  # fmt: skip
    offered = rate if target is None else peak
    if achieved is None:
        achieved = (offered or 10.0) * (1.0 if sustained else 0.6)
    late = {"latency_ms_median": p99 / 2, "latency_ms_p99": p99, "latency_ms_p999": p99 * 1.3}
    return Result.for_config(
        config, offered_rate=offered, achieved_rate=achieved, sustained=sustained,
        throughput_ips=achieved, mean_batch=3.5, max_batch=batch, requests=500,
        peak_tries=list(tries), **(late if sustained else {}), **kw,
    )  # fmt: skip


def offline(model="resnet18", batch=8, streams=2, threads=1, ips=950.0, p99=19.0, **kw):
    config = Config(model, batch, device="cpu", scenario="offline", streams=streams,
                    threads=threads)  # fmt: skip
    return Result.for_config(config, throughput_ips=ips, latency_ms_median=p99 * 0.8,
                             latency_ms_p99=p99, latency_ms_p999=p99 * 1.2, mean_batch=float(batch),
                             max_batch=batch, requests=4000, **kw)  # fmt: skip


def tried(rate, p99=None, met=None, sustained=True):
    return {"rate": rate, "sustained": sustained, "met": met, "latency_ms_p99": p99,
            "achieved_rate": rate if sustained else rate * 0.6, "mean_batch": 2.0}  # fmt: skip


# a search under p99 <= 100 ms, in the order tried: 400 req/s not sustained (900 ms: no latency)
TRIES = [tried(10.0, 12.0, True), tried(400.0, 900.0, False, sustained=False),
         tried(205.0, 140.0, False), tried(107.5, 60.0, True),
         tried(156.0, 95.0, True)]  # fmt: skip


def serving_run() -> list[Result]:
    """resnet18: single-stream rows, an offline row, two fixed rates (one beyond capacity) and a
    peak search that met its bound; resnet50: a peak search that found no rate."""
    return [
        result(batch=1, ms=10.0),
        result(batch=8, ms=80.0),
        offline(),
        serve(rate=50.0, p99=30.0),
        serve(rate=200.0, sustained=False),
        serve(target=100.0, peak=156.0, p99=95.0, tries=TRIES, queue=2.0),
        serve("resnet50", target=15.0, peak=None, p99=40.0, tries=[tried(20.0, 40.0, False)]),
    ]


def _frame(rows):
    return report.results_frame(rows)


def test_a_single_stream_run_at_one_thread_count_reads_as_before(tmp_path):
    write_run(tmp_path / "run", [result(batch=b, precision=p, seed=b) for b in (1, 8)
                                 for p in ("fp32", "bf16")])  # fmt: skip
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert summary.splitlines()[2].startswith("**4 results")  # no opener before the headline
    for word in ("scenario", "stream", "sustained", "p99.9", "Serving", "serves"):
        assert word not in summary
    heads = [line for line in summary.splitlines() if line.startswith("| model")]
    assert len(heads) == 3 and not any("thread" in line for line in heads)
    assert "| resnet18 " in summary and "thread" not in summary.split("computed in")[-1]
    page = (tmp_path / "run" / "report.html").read_text()
    heads = page.split('id="results"')[1].split("</thead>")[0]
    assert "<th>scenario</th>" not in heads and "<th>threads</th>" not in heads
    assert "<th>queue ms</th>" not in heads and "What this machine serves" not in page
    assert not list((tmp_path / "run" / "plots").glob("latency_rate_*"))


def test_serving_rows_get_their_table_with_rates_sustained_and_tail_latencies(tmp_path):
    write_run(tmp_path / "run", serving_run())
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    table = [line.replace(" ", "") for line in summary.split("## Serving on cpu")[1].splitlines()
             if line.startswith("|")]  # fmt: skip
    head = table[0].split("|")
    for column in ("scenario", "streams", "threads", "offeredreq/s", "achievedreq/s", "sustained",
                   "p99ms", "p99.9ms", "meanbatch", "queuems", "p99boundms"):  # fmt: skip
        assert column in head
    cells = [dict(zip(head, line.split("|"), strict=True)) for line in table[2:]]
    assert len(cells) == 5  # offline, two fixed rates, two searches: no single-stream row
    beyond = next(c for c in cells if c["offeredreq/s"] == "200.0")
    assert beyond["sustained"] == "no" and beyond["p99ms"] == beyond["p99.9ms"] == ""
    assert beyond["medianms"] == "" and beyond["achievedreq/s"] == "120.0"
    peak = next(c for c in cells if c["offeredreq/s"] == "peak156.0")
    assert peak["p99boundms"] == "100" and peak["p99ms"] == "95.00" and peak["queuems"] == "2"
    assert any(c["offeredreq/s"] == "nonemetthebound" for c in cells)
    assert next(c for c in cells if c["scenario"] == "offline")["img/s"] == "950.0"
    # the single-stream tables keep their rows alone, and say which they are
    assert "## Answers: inference on cpu (cpu), single-stream" in summary
    details = summary.split("### inference on cpu: details")[1].split("##")[0]
    assert details.count("| resnet18") == 2 and "| threads" in details
    page = (tmp_path / "run" / "report.html").read_text()
    heads = page.split('id="results"')[1].split("</thead>")[0]
    for column in ("scenario", "streams", "threads", "sustained", "p99.9 ms", "offered req/s"):
        assert f"<th>{column}</th>" in heads
    csv = (tmp_path / "run" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"scenario", "streams", "threads", "offered_rate", "sustained", "mean_batch"} <= set(csv)


def test_the_opener_takes_a_met_peak_then_a_sustained_rate_then_the_highest_throughput():
    def said(rows):
        return {(o.model, o.source): (o.rate, o.p99_ms) for o in serving.openers(_frame(rows))}

    # a met peak answers, though a fixed rate achieved more and offline ran faster
    rows = [offline(ips=2000.0), serve(rate=300.0, p99=250.0),
            serve(target=100.0, peak=156.0, p99=95.0, tries=TRIES)]  # fmt: skip
    assert said(rows) == {("resnet18", "peak"): (156.0, 100.0)}
    # no peak met: the sustained fixed rate, never the faster one that was not sustained
    rows = [offline(ips=2000.0), serve(rate=50.0, p99=30.0), serve(rate=400.0, sustained=False),
            serve(target=5.0, peak=None, tries=[tried(10.0, 12.0, False)])]  # fmt: skip
    assert said(rows) == {("resnet18", "fixed"): (50.0, 30.0)}
    # no sustained server row: the highest images/s of offline and single-stream, its p99
    rows = [
        result(batch=8, ms=10.0),
        offline(ips=2000.0, p99=19.0),
        serve(rate=9e3, sustained=False),
    ]
    assert said(rows) == {("resnet18", "offline"): (2000.0, 19.0)}
    rows = [result(batch=8, ms=1.0), offline(ips=100.0)]
    ((_, source), (rate, p99)), = said(rows).items()  # fmt: skip
    assert source == "single-stream" and rate == pytest.approx(8000, rel=0.05)
    assert p99 == rows[0].latency_ms_p99  # the chosen row's own p99


def test_the_summary_and_the_page_open_with_what_each_model_serves(tmp_path):
    write_run(tmp_path / "run", serving_run())
    assert report.main([str(tmp_path / "run")]) == 0
    lines = (tmp_path / "run" / "summary.md").read_text().splitlines()
    assert lines[2] == (
        "- resnet18 on cpu serves 156.0 img/s at p99 \u2264 100 ms with fp32, 2 streams x 1 "
        "thread, batch 8, queue 2 ms (server: the highest of 5 rates tried whose p99 met the bound)"
    )
    assert lines[3] == (
        "- resnet50 on cpu: no rate met the p99 bound with fp32, 2 streams x 1 thread, batch 8 "
        "(p99 \u2264 15 ms, 1 rate tried, the lowest 20.0 req/s)"
    )
    assert lines[5].startswith("**7 results")
    page = (tmp_path / "run" / "report.html").read_text()
    first = page.split("<h2>")[1]
    assert first.startswith("What this machine serves") and "serves 156.0 img/s" in first


def test_a_peak_at_the_top_of_the_searched_range_says_it_may_lie_above():
    tries = [tried(10.0, 5.0, True), tried(80.0, 9.0, True)]
    rows = [serve(target=100.0, peak=80.0, p99=9.0, tries=tries)]
    (line,) = serving.opener_lines(_frame(rows))
    assert "serves 80.0 img/s" in line and "the peak may lie above it" in line


def test_single_stream_rows_at_two_thread_counts_keep_a_row_each_and_their_own_baseline(tmp_path):
    rows = [result(batch=8, precision=p, ms=ms, threads=t, seed=t)
            for t, fp32_ms in ((1, 40.0), (2, 20.0))
            for p, ms in (("fp32", fp32_ms), ("bf16", fp32_ms / 2))]  # fmt: skip
    write_run(tmp_path / "run", rows)
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    answer = summary.split("## Answers")[1].split("##")[0].replace(" ", "")
    assert "|resnet181thread|8|bf16|" in answer and "|resnet182threads|8|bf16|" in answer
    assert answer.count("|2.00x|") == 2  # bf16 over fp32 at its own thread count, not across


def test_the_latency_plot_draws_every_rate_tried_and_no_latency_for_a_rate_not_sustained(
    tmp_path, monkeypatch
):
    rows = serving_run()
    (panel, other) = serving.latency_panels(_frame(rows))
    assert (panel.model, other.model, panel.bounds) == ("resnet18", "resnet50", [100.0])
    fixed, search = panel.lines  # the queue window makes the search its own line
    assert [(p.rate, p.p99_ms, p.sustained) for p in fixed.points] == [
        (50.0, 30.0, True), (200.0, None, False)]  # fmt: skip
    assert [p.rate for p in search.points] == [10.0, 107.5, 156.0, 205.0, 400.0]
    beyond = search.points[-1]
    assert beyond.p99_ms is None and not beyond.sustained  # its recorded 900 ms is never drawn
    assert [p.rate for p in search.points if p.peak] == [156.0]

    saved = _capture_figures(monkeypatch)
    paths = serving_plot.write_latency_plots(_frame(rows), tmp_path / "plots")
    assert [p.name for p in paths] == ["latency_rate_cpu.png"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    ax = saved[0].axes[0]
    assert ax.get_yscale() == "log"
    drawn = {y for line in ax.get_lines() if line.get_gid() != "bound" for y in line.get_ydata()}
    assert 900.0 not in drawn and {30.0, 95.0, 140.0} <= drawn
    tops = [c for c in ax.collections if c.get_gid() == "not_sustained"]
    assert sorted(x for c in tops for x, _ in c.get_offsets()) == [200.0, 400.0]
    assert {y for c in tops for _, y in c.get_offsets()} == {0.97}  # the top edge, axes fraction
    bound = [line for line in ax.get_lines() if line.get_gid() == "bound"]
    assert [line.get_ydata()[0] for line in bound] == [100.0]

    (fig,) = serving_plot.latency_figures(_frame(rows))
    crosses = [t for t in fig.data if t.marker.symbol == "x"]
    drawn_top = max(y for t in fig.data if t.marker.symbol != "x" for y in t.y if y is not None)
    assert crosses and all(y > drawn_top for t in crosses for y in t.y)


def test_the_page_draws_the_latency_plot_interactively(tmp_path):
    write_run(tmp_path / "run", serving_run())
    assert report.main([str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "p99 against rate, cpu" in page and 'src="plots/latency_rate_cpu.png"' not in page
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "![latency_rate_cpu](plots/latency_rate_cpu.png)" in summary


def test_compare_judges_a_peak_on_its_rate_and_fails_on_a_fallen_one(tmp_path, capsys):
    def search(peak):
        return serve(target=100.0, peak=peak, p99=90.0, tries=[tried(peak or 10.0, 90.0, True)])

    table = report.compare([search(100.0)], [search(120.0)], 0.05)
    (row,) = table.to_dict("records")
    assert row["verdict"] == "slower" and row["speedup"] == pytest.approx(100 / 120)
    assert (row["old peak req/s"], row["new peak req/s"]) == (120.0, 100.0)
    assert math.isnan(row["old ms"]) and "-16.7%" in row["note"]
    assert report.compare([search(118.0)], [search(120.0)], 0.05)["verdict"][0] == "inconclusive"
    assert report.compare([search(150.0)], [search(120.0)], 0.05)["verdict"][0] == "faster"
    assert report.compare([search(None)], [search(120.0)], 0.05)["verdict"][0] == "slower"

    write_run(tmp_path / "old", [search(120.0), result(forks=3, seed=1)])
    write_run(tmp_path / "new", [search(100.0), result(forks=3, seed=2)])
    argv = [str(tmp_path / "new"), "--compare", str(tmp_path / "old"), "--fail-on", "slower"]
    assert report.main(argv) == 1
    assert "1 of 2 rows slower" in capsys.readouterr().err
    text = (tmp_path / "new" / "compare.md").read_text()
    assert "judged on its peak rate" in text and "server peak under p99" in text


def test_compare_never_compares_an_unsustained_side_as_a_latency():
    old, new = serve(rate=80.0, p99=30.0, forks=3), serve(rate=80.0, sustained=False)
    (row,) = report.compare([new], [old]).to_dict("records")
    assert row["verdict"] == "slower" and "no longer sustained at 80.0 req/s" in row["note"]
    assert row["sustained old/new"] == "yes/no" and math.isnan(row["new p99 ms"])
    assert math.isnan(row["speedup"]) and math.isnan(row["new ms"])
    (row,) = report.compare([old], [new]).to_dict("records")
    assert row["verdict"] == "faster" and row["sustained old/new"] == "no/yes"
    (row,) = report.compare([new], [new]).to_dict("records")
    assert row["verdict"] == "inconclusive" and "in either run" in row["note"]
    # sustained on both sides: on latency as every other row, with the p99s beside it
    (row,) = report.compare([old], [dataclasses.replace(old, latency_ms_p99=33.0)]).to_dict(
        "records"
    )
    assert row["basis"] == "latency" and (row["old p99 ms"], row["new p99 ms"]) == (33.0, 30.0)
    md = report.compare_markdown({}, [new], {}, [old], 0.05)
    assert "geometric-mean speedup none" in md and "nan" not in md.lower()


def test_compare_judges_offline_on_latency_shows_images_per_s_and_matches_the_full_key():
    old = [offline(ips=900.0, streams=1, threads=2), offline(ips=950.0)]
    new = [offline(ips=1000.0, streams=1, threads=2), offline(ips=700.0, streams=4, threads=1)]
    table = report.compare(new, old)
    (row,) = table.to_dict("records")  # 2 streams and 4 streams are other Configs
    assert (row["streams"], row["threads"], row["basis"]) == (1, 2, "latency")
    assert (row["old img/s"], row["new img/s"]) == (900.0, 1000.0)
    assert row["verdict"].startswith("inconclusive") and "one process" in row["note"]
    text = report.compare_markdown({}, new, {}, old, 0.05)
    assert "| old img/s" in text and "1 ok Config of the new run and 1 of the old matched" in text
    # single-stream rows alone: the comparison's columns as they always were
    plain = report.compare([result(forks=3, seed=1)], [result(forks=3, seed=2)])
    assert not {"scenario", "streams", "threads", "old img/s"} & set(plain.columns)


def test_a_model_whose_every_rate_failed_says_so_and_serves_nothing(tmp_path):
    rows = [serve(rate=200.0, sustained=False), serve("resnet50", rate=5.0, p99=9.0)]
    rows.append(Result.for_config(Config("resnet34", 8, device="cpu", scenario="offline",
                                         streams=2), status="error", error="boom"))  # fmt: skip
    write_run(tmp_path / "run", rows)
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    lines = summary.splitlines()
    assert lines[2] == ("- resnet18 on cpu: no rate offered was sustained: fp32, 2 streams x 1 "
                        "thread, batch 8 at 200.0 req/s")  # fmt: skip
    assert lines[3].startswith("- resnet50 on cpu serves 5.0 img/s at p99 \u2264 9.0 ms")
    assert lines[4] == "" and lines[5].startswith("**3 results")  # the errored model: no line
    assert "## Answers" not in summary  # no single-stream row: no per-batch tables
    assert "| error: boom" in summary.replace("  ", " ")
