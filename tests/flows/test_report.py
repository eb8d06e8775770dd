"""The HTML report: escaping, and the page as headless Chromium shows it (videos, timeline, failures)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from reports.page import Channel, ReportData, render
from stack.processes import terminate
from tests.support import CLASSIFIER

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1280,900",
]  # fmt: skip
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def test_text_from_data_is_escaped(tmp_path):
    evil = '<script>alert("x")</script>'
    channel = Channel(evil, 1)
    channel.segments.append({
        "recorder": evil, "channel": 1, "segment": evil, "start": T0, "end": T0 + timedelta(seconds=20),
        "duration_s": 20.0, "source_codec": evil, "transcode_mode": "remux", "output_path": str(tmp_path / "none.mp4"),
    })  # fmt: skip
    channel.frames = [(T0 + timedelta(seconds=i), evil if i % 2 else "cat", 0.5) for i in range(20)]
    runs = [{"name": evil, "id": "1", "recorder": evil, "state": "Failed", "message": evil, "when": T0}]
    page = render(ReportData(T0, T0 + timedelta(minutes=1), [channel], runs))
    assert "<script" not in page
    assert page.count("&lt;script&gt;") >= 6
    # The segment's MP4 does not exist: listed as a failure, no video element for it.
    assert "segments without an output file" in page and "<video" not in page


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        self._ws = ws_connect(url, max_size=64 * 2**20, open_timeout=10)
        self._next = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict:
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.events:
                if message["method"] == event:
                    return message
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        result = self.call(
            "Runtime.evaluate", timeout, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for m in self.events:
            p = m.get("params", {})
            if m["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                )
            elif m["method"] == "Runtime.exceptionThrown":
                found.append(str(p.get("exceptionDetails", {}).get("text")))
            elif m["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return found

    def close(self) -> None:
        self._ws.close()


@pytest.fixture
def chromium(tmp_path) -> Iterator[DevTools]:
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=log, stderr=log)  # fmt: skip
    try:
        # Chromium writes its debugging port here once it listens.
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text()
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(active.read_text().splitlines()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        yield tools
        tools.close()
    finally:
        terminate(proc, timeout=20)
        log.close()


VIDEO_STATES = """
(async () => {
  const videos = [...document.querySelectorAll('video')];
  const ready = v => new Promise(resolve => {
    if (v.readyState >= 1 || v.error) return resolve();
    v.addEventListener('loadedmetadata', resolve, {once: true});
    v.addEventListener('error', resolve, {once: true});
  });
  await Promise.race([Promise.all(videos.map(ready)), new Promise(r => setTimeout(r, 30000))]);
  return videos.map(v => ({segment: v.dataset.segment, readyState: v.readyState, duration: v.duration,
                          error: v.error ? v.error.code + ' ' + v.error.message : null, src: v.currentSrc}));
})()
"""
SVG_MARKS = """
[...document.querySelectorAll('svg.timeline')].map(svg => {
  const marks = [...svg.querySelectorAll('rect.mark')];
  return {marks: marks.length, drawn: marks.filter(m => m.getBBox().width > 0 && m.getBBox().height > 0).length,
          colours: new Set(marks.map(m => getComputedStyle(m).fill)).size};
})
"""


@pytest.fixture(scope="module")
def window_with_rows(stack) -> tuple[datetime, datetime]:
    """nvr-01's demo window, run through the pipeline unless an earlier test module did so."""
    from blocks.clickhouse import ClickHouseSink
    from flows.pipeline import recorder_pipeline
    from stack.simulator.spec import demo_window

    start, end = demo_window()
    with ClickHouseSink.load("nvrflow").connect() as ch:
        have = ch.query("SELECT count() FROM {db}.segments FINAL WHERE recorder = 'nvr-01'")[0][0]
    if have < 8:
        recorder_pipeline("nvr-01", start, end, model_block=CLASSIFIER)
    # A failed run for the same window, for the report's failures section.
    failed = recorder_pipeline("no-such-recorder", start, end, return_state=True)
    assert failed.is_failed()
    return start, end


@pytest.mark.stack
def test_report_plays_in_chromium_once_copied_elsewhere(window_with_rows, chromium, tmp_path):
    from blocks.clickhouse import ClickHouseSink
    from flows.report import main

    start, end = window_with_rows
    written = tmp_path / "out" / "report.html"
    assert main(["--start", start.isoformat(), "--end", end.isoformat(), "--out", str(written)]) == 0
    # The folder as an operator would hand it on: copied, the data folder out of reach.
    out = Path(shutil.copytree(written.parent, tmp_path / "elsewhere" / "report")) / "report.html"
    shutil.rmtree(written.parent)
    page = out.read_text()
    assert "no-such-recorder" in page  # the failed run is listed
    window = {"s": start.replace(tzinfo=None), "e": end.replace(tzinfo=None)}
    with ClickHouseSink.load("nvrflow").connect() as ch:
        durations = dict(ch.query(
            "SELECT segment, duration_s FROM {db}.segments FINAL "
            "WHERE start < {e:DateTime64(3, 'UTC')} AND end > {s:DateTime64(3, 'UTC')}", window,
        ))  # fmt: skip
        channels = ch.query(
            "SELECT uniqExact(recorder, channel) FROM {db}.detections FINAL "
            "WHERE frame_time >= {s:DateTime64(3, 'UTC')} AND frame_time < {e:DateTime64(3, 'UTC')}", window,
        )[0][0]  # fmt: skip
    assert len(durations) >= 8

    chromium.call("Page.navigate", url=out.as_uri())
    chromium.wait_for("Page.loadEventFired")
    videos = chromium.evaluate(VIDEO_STATES)
    assert {v["segment"] for v in videos} == set(durations)
    for v in videos:
        assert v["readyState"] >= 1 and not v["error"], v
        assert abs(v["duration"] - durations[v["segment"]]) <= 1.0, v
    marks = chromium.evaluate(SVG_MARKS)
    assert len(marks) == channels and all(m["marks"] > 0 and m["drawn"] == m["marks"] for m in marks), marks

    metrics = chromium.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = chromium.call(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], 4000), "scale": 1},
    )
    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {png}")
    assert png.stat().st_size > 10_000
    assert chromium.errors() == []
