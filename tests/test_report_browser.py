"""report.html in a real browser: headless Chromium driven over the DevTools protocol (a pipe).

Needs Debian's ``chromium`` (``.ci/run`` installs it); skipped with a reason where it is absent.
No network and no extra Python package: the protocol runs over file descriptors 3 and 4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
from test_report import result, write_run  # tests/ is on sys.path (no __init__.py)

from resbench import report
from resbench.engine.measure import Config, Result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (apt-get install chromium)"
)


class Browser:
    """A headless Chromium with one page, spoken to over --remote-debugging-pipe."""

    def __init__(self, profile) -> None:
        to_chrome_r, self._write = os.pipe()
        self._read, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: Chromium reads commands on fd 3, answers on fd 4
            high_r, high_w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(high_r, 3, inheritable=True)
            os.dup2(high_w, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=wire,
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _message(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._message(deadline - time.monotonic())
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)

    def js(self, expression: str):
        reply = self.call("Runtime.evaluate", session=True, expression=expression,
                          returnByValue=True, awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in reply:
            raise RuntimeError(reply["exceptionDetails"])
        return reply["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, TimeoutError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._read)
        os.close(self._write)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_report_html_renders_sorts_and_filters_in_chromium(tmp_path, browser):
    results = [
        result(
            model,
            b,
            precision=p,
            ms=(5 if model == "resnet18" else 20) * b / (2 if p == "bf16" else 1),
            seed=b,
        )
        for model in ("resnet18", "resnet50")
        for b in (1, 8)
        for p in ("fp32", "bf16")
    ]
    results.append(result("resnet34", 4, ms=9))  # one batch size only
    results.append(
        Result.for_config(Config("resnet152", 64, device="cpu"), status="oom", error="x")
    )
    write_run(tmp_path / "run", results)
    assert report.main([str(tmp_path / "run")]) == 0
    page = tmp_path / "run" / "report.html"
    assert (tmp_path / "run" / "plotly.min.js").exists()  # offline: the script lies beside it

    browser.events.clear()
    browser.call("Page.navigate", session=True, url=page.as_uri())
    browser.wait_for("Page.loadEventFired")
    errors = browser.js("window.__errors")
    thrown = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    logged = [
        e for e in browser.events
        if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]  # fmt: skip
    assert errors == [] and thrown == [] and logged == []
    assert browser.js("typeof Plotly") == "object"
    assert browser.js("document.querySelectorAll('.js-plotly-plot').length") >= 2
    assert browser.js("document.querySelectorAll('#results tbody tr').length") == len(results)
    hover = browser.js(
        "Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(p => p.data)"
        ".flatMap(t => t.hovertext || [])"
    )
    assert any("resnet50 batch 8" in h and "img/s" in h and "bf16" in h for h in hover)

    heads = browser.js(
        "Array.from(document.querySelectorAll('#results th')).map(h => h.textContent)"
    )
    col = heads.index("img/s")
    column = f"Array.from(document.querySelectorAll('#results tbody tr')).map(r => r.cells[{col}].dataset.v)"
    browser.js(f"document.querySelectorAll('#results th')[{col}].click()")
    values = [float(v) for v in browser.js(column) if v]
    assert values == sorted(values) and len(values) == len(results) - 1
    browser.js(f"document.querySelectorAll('#results th')[{col}].click()")
    values = [float(v) for v in browser.js(column) if v]
    assert values == sorted(values, reverse=True)

    choose(browser, "model", "resnet50")
    assert shown_cells(browser, "model") == ["resnet50"] * 4
    assert browser.js("document.getElementById('shown').textContent") == "4"


def open_page(browser, page) -> None:
    browser.events.clear()  # a load event from an earlier page must not count
    browser.call("Page.navigate", session=True, url=page.as_uri())
    browser.wait_for("Page.loadEventFired")


def choose(browser, header: str, value: str) -> None:
    """Pick ``value`` in the filter of the column headed ``header``."""
    label = f"l => l.textContent.startsWith({json.dumps(header + ' ')})"
    sel = f"Array.from(document.querySelectorAll('#filters label')).find({label}).querySelector('select')"
    browser.js(f"(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')) }})"
               f"({sel})")  # fmt: skip


def search(browser, text: str) -> None:
    browser.js(
        f"(b => {{ b.value = {json.dumps(text)}; b.dispatchEvent(new Event('input')) }})"
        "(document.getElementById('search'))"
    )


def shown_cells(browser, header: str) -> list[str]:
    """The text of the column headed ``header`` in the rows the filters leave shown."""
    return browser.js(
        "(() => { const heads = Array.from(document.querySelectorAll('#results th'))"
        ".map(h => h.textContent);"
        f" const i = heads.indexOf({json.dumps(header)});"
        " return Array.from(document.querySelectorAll('#results tbody tr'))"
        ".filter(r => r.style.display !== 'none').map(r => r.cells[i].textContent); })()"
    )


def test_throughput_bars_stay_positive_and_bounded_on_the_page(tmp_path, browser):
    from test_report import _wild

    wild = _wild()
    p25, p75 = np.percentile(wild.samples_ms, [25, 75])
    bare = dataclasses.replace(result(batch=8, ms=10), samples_ms=[])
    write_run(tmp_path / "run", [wild, bare])
    assert report.main([str(tmp_path / "run")]) == 0
    open_page(browser, tmp_path / "run" / "report.html")
    plot = "document.querySelector('.js-plotly-plot')"
    ends = browser.js(
        f"{plot}._fullData.filter(t => t.error_y && t.error_y.array).map(t => Array.from(t.y).map((y, i) =>"
        " [y - t.error_y.arrayminus[i], y + t.error_y.array[i]]))"
    )
    (low, high), bare_end = next(e for e in ends if len(e) == 2)
    assert (low, high) == pytest.approx((4 / (p75 / 1e3), 4 / (p25 / 1e3)))
    assert bare_end == [None, None]  # NaN: no bar for the row without samples
    bottom, top = browser.js(f"Array.from({plot}._fullLayout.yaxis.range)")
    assert bottom == 0 and high < top < 2 * high


def test_filters_match_a_column_exactly_and_errors_sit_under_a_header(tmp_path, browser):
    results = [
        result("resnet18", b, precision=p, channels_last=cl, ms=b, seed=b)
        for b in (1, 16, 128)
        for p, cl in (("fp32", False), ("fp32", True), ("bf16", False))
    ]
    error = "RuntimeError: the runtime failed to compile the model " + "x" * 60
    results.append(
        Result.for_config(Config("resnet50", 16, device="cpu"), status="error", error=error)
    )
    write_run(tmp_path / "run", results)
    assert report.main([str(tmp_path / "run")]) == 0
    open_page(browser, tmp_path / "run" / "report.html")

    choose(browser, "batch", "1")  # not 16, not 128
    assert shown_cells(browser, "batch") == ["1"] * 3
    choose(browser, "batch", "")
    choose(browser, "setting", "fp32")  # not fp32+cl
    assert shown_cells(browser, "setting") == ["fp32"] * 4
    choose(browser, "setting", "")
    search(browser, "fp32")
    assert len(shown_cells(browser, "setting")) == 7  # free text still finds substrings
    search(browser, "")

    # every cell lies under a header: the error row's text is in the labelled status column
    layout = browser.js(
        "(() => { const heads = Array.from(document.querySelectorAll('#results th'));"
        " const rows = Array.from(document.querySelectorAll('#results tbody tr'));"
        " return {heads: heads.length, cells: rows.map(r => r.cells.length),"
        " status: rows.map(r => r.cells[heads.findIndex(h => h.textContent === 'status')]"
        ".getAttribute('title') || '')}; })()"
    )
    assert set(layout["cells"]) == {layout["heads"]}
    assert f"error: {error}" in layout["status"]


def test_the_accuracy_tradeoff_draws_on_the_page(tmp_path, browser):
    from test_report_accuracy import trade_run

    write_run(tmp_path / "run", trade_run())
    assert report.main([str(tmp_path / "run")]) == 0
    browser.events.clear()
    browser.call("Page.navigate", session=True, url=(tmp_path / "run" / "report.html").as_uri())
    browser.wait_for("Page.loadEventFired")
    assert browser.js("window.__errors") == []
    assert not [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    traces = browser.js(
        "Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(p => p.data)"
        ".map(t => ({name: t.name || '', text: t.text || [], hover: t.hovertext || []}))"
    )
    points = next(t for t in traces if "int8+openvino" in t["text"])
    assert sorted(points["text"]) == ["bf16", "fp32", "int8+openvino"]
    assert any("top-1 88.80%" in h and "McNemar p 1e-9" in h for h in points["hover"])
    assert any(t["name"] == "Pareto front" for t in traces)
    assert shown_cells(browser, "top-1") == ["92.00%", "91.70%", "88.80%"]


def test_the_serving_rows_draw_on_the_page(tmp_path, browser):
    from test_report_serving import serving_run

    write_run(tmp_path / "run", serving_run())
    assert report.main([str(tmp_path / "run")]) == 0
    open_page(browser, tmp_path / "run" / "report.html")
    assert browser.js("window.__errors") == []
    assert not [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    hover = browser.js(
        "Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(p => p.data)"
        ".flatMap(t => t.hovertext || [])"
    )
    assert any("offered 400.0 req/s" in h and "not sustained" in h for h in hover)
    assert any("offered 156.0 req/s" in h and "the peak found" in h for h in hover)
    choose(browser, "scenario", "server")
    assert shown_cells(browser, "sustained") == ["yes", "no", "yes", "yes"]
    assert shown_cells(browser, "p99 ms")[1] == ""  # not sustained: no latency


def test_the_page_fits_1400_px_and_a_calibration_keeps_to_one_line(tmp_path, browser):
    import shutil as sh
    from pathlib import Path

    committed = Path(__file__).resolve().parent.parent / "results" / "accuracy-cpu"
    if not committed.exists():
        pytest.skip("the committed accuracy run is not in this checkout")
    run = tmp_path / "acc"
    run.mkdir()
    for name in ("results.jsonl", "env.json", "run.json"):
        if (committed / name).exists():
            sh.copy(committed / name, run / name)
    assert report.main([str(run)]) == 0
    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=1400, height=900,
                 deviceScaleFactor=1, mobile=False)  # fmt: skip
    try:
        browser.events.clear()
        browser.call("Page.navigate", session=True, url=(run / "report.html").as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.js("document.documentElement.scrollWidth") <= 1400
        heights = browser.js(
            "JSON.stringify([...document.querySelectorAll('table.dataframe td')]"
            ".filter(td => /images/.test(td.textContent)).map(td => td.getBoundingClientRect()"
            ".height / parseFloat(getComputedStyle(td).fontSize)))"
        )
        ratios = json.loads(heights)
        assert ratios and max(ratios) < 2.2  # one line and its padding (3-4 lines: over 4)
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride", session=True)
