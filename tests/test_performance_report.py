"""The performance report page and the timeline image, from real computes on the local pool.

The page's Bokeh document is read back from its embedded JSON: the timeline's ColumnDataSource has
exactly one row per invocation record collected in the block. The page is then opened in a real
headless Chromium (Debian's ``chromium``), and its console is read through the Chrome DevTools
protocol on ``--remote-debugging-port`` with the small websocket client below (the standard library
only). The protocol, rather than ``--enable-logging=stderr``, because the stderr lines carry no
level (``console.log`` and ``console.error`` both print as ``INFO:CONSOLE``) and miss what the
DevTools console shows besides: failed resource loads and uncaught exceptions come as typed events
here, and every request the page makes is seen (only the page itself may be loaded). The wait for
rendering is Bokeh's own "document idle" message, not a sleep. The screenshot is Chromium's
``--screenshot`` in a second, plain headless run.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from fixtures_platforms import PLATFORMS, executor_settings

import dask_faas
from dask_faas import plot, records

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium missing (Debian's chromium package; .ci/run installs it)"
)
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
]
DEADLINE_S = 60  # bounds every wait on the browser, to catch hangs


# -- the page's Bokeh document -------------------------------------------------------------------


def column_values(value: Any) -> list[Any]:
    """A ColumnDataSource column from Bokeh's serialized form (a list, or a base64 ndarray, maybe gzipped)."""
    if isinstance(value, list):
        return value
    assert value["type"] == "ndarray", value
    array = value["array"]
    if isinstance(array, list):
        return array
    raw = base64.b64decode(array["data"])
    if raw[:2] == b"\x1f\x8b":  # Bokeh gzips larger arrays
        raw = gzip.decompress(raw)
    return (
        np.frombuffer(raw, dtype=np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"]).tolist()
    )


def page_sources(page: str) -> dict[str, dict[str, list[Any]]]:
    """Every named ColumnDataSource of the page's embedded Bokeh document: name -> column -> values."""
    blocks = re.findall(r'<script type="application/json" id="[^"]*">\s*(.*?)\s*</script>', page, re.S)
    assert len(blocks) == 1, f"expected one embedded Bokeh document, found {len(blocks)}"
    sources: dict[str, dict[str, list[Any]]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and node.get("name") == "ColumnDataSource":
                attributes = node["attributes"]
                entries = attributes["data"]["entries"]
                sources[attributes["name"]] = {k: column_values(v) for k, v in entries}
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(json.loads(blocks[0]))
    return sources


# -- a headless Chromium and its DevTools protocol --------------------------------------------------


class DevTools:
    """A Chrome DevTools protocol client over one websocket (RFC 6455 text frames, client-masked)."""

    def __init__(self, url: str) -> None:
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=DEADLINE_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.receive_some()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.ids = iter(range(1, 1 << 30))
        self.events: list[dict[str, Any]] = []

    def receive_some(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        assert chunk, "DevTools closed the connection"
        return chunk

    def take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.receive_some()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, method: str, **params: Any) -> int:
        ident = next(self.ids)
        payload = json.dumps({"id": ident, "method": method, "params": params}).encode()
        n, mask = len(payload), os.urandom(4)
        if n < 126:
            size = bytes([0x80 | n])
        elif n < 1 << 16:
            size = bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            size = bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81]) + size + mask + masked)
        return ident

    def message(self) -> dict[str, Any]:
        """The next message (frames of a fragmented one joined; pings answered)."""
        parts: list[bytes] = []
        while True:
            first, second = self.take(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self.take(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self.take(8))
            data = self.take(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 0x9:  # ping: pong with the same data (masked, as a client must)
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            parts.append(data)
            if first & 0x80:
                return json.loads(b"".join(parts))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command; keep the events that arrive before its answer."""
        ident = self.send(method, **params)
        while True:
            msg = self.message()
            if msg.get("id") == ident:
                assert "error" not in msg, (method, msg)
                return msg.get("result", {})
            self.events.append(msg)

    def until(self, done: Any) -> None:
        """Read events until ``done(event)`` is true (the socket timeout bounds each read)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            event = self.message()
            self.events.append(event)
            if done(event):
                return
        raise TimeoutError(f"no such event within {DEADLINE_S} s; events: {self.events[-5:]}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A headless Chromium with a blank page, and a DevTools client of that page."""
    profile = tmp_path / "chromium-profile"
    with open(tmp_path / "chromium.log", "wb") as log:
        proc = subprocess.Popen(
            [
                str(CHROMIUM),
                *BROWSER_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its helper processes share its process group: ended with it
        )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + DEADLINE_S
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            assert proc.poll() is None, f"chromium exited: {(tmp_path / 'chromium.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "chromium wrote no DevToolsActivePort"
            time.sleep(0.05)
        port = int(active.read_text().splitlines()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        while True:
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=DEADLINE_S) as answer:
                pages = [t for t in json.load(answer) if t["type"] == "page"]
            if pages:
                break
            assert time.monotonic() < deadline, "chromium opened no page"
            time.sleep(0.05)
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Network", "Page"):
            devtools.call(f"{domain}.enable")
        yield devtools
        devtools.sock.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=DEADLINE_S)


def console_text(event: dict[str, Any]) -> str:
    args = event["params"]["args"]
    return " ".join(str(a.get("value", a.get("description", ""))) for a in args)


def open_page(browser: DevTools, url: str, *, rendered: str | None) -> list[str]:
    """Load ``url``; return the problems the DevTools console shows (and any request elsewhere).

    ``rendered``: the console message (a substring) that says the page is done; without one, the
    load event.
    """
    browser.call("Page.navigate", url=url)

    def done(event: dict[str, Any]) -> bool:
        if rendered is None:
            return event.get("method") == "Page.loadEventFired"
        return event.get("method") == "Runtime.consoleAPICalled" and rendered in console_text(event)

    browser.until(done)
    browser.call("Runtime.evaluate", expression="1")  # events sent before this answer are in
    problems = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
            problems.append(f"console.{params['type']}: {console_text(event)}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            problems.append(f"exception: {details.get('exception', {}).get('description', details['text'])}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            problems.append(f"log {params['entry']['level']}: {params['entry']['text']}")
        elif method == "Network.loadingFailed":
            problems.append(f"load failed: {params['errorText']}")
        elif method == "Network.requestWillBeSent":
            requested = params["request"]["url"]
            if requested != url and not requested.startswith(("data:", "blob:")):
                problems.append(f"requested {requested}")
    return problems


def screenshot(url: str, target: Path, tmp_path: Path) -> bytes:
    """Chromium's ``--screenshot`` of ``url`` (1400 x 1800), as PNG bytes."""
    profile = tmp_path / "screenshot-profile"
    done = subprocess.run(
        [str(CHROMIUM), *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--screenshot={target}", url],
        capture_output=True,
        timeout=DEADLINE_S,
        start_new_session=True,
    )
    assert done.returncode == 0 and target.exists(), done.stderr.decode(errors="replace")[-2000:]
    return target.read_bytes()


def colourful_pixels(png: bytes) -> int:
    """Pixels of a saturated colour (the plots' bars and lines; text and a blank page have none)."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 80).sum())


# -- the computes ---------------------------------------------------------------------------------


def monte_carlo(ex: Any) -> float:
    """pi from 20 chunks of random points."""
    xy = da.random.default_rng(5).random((2, 200_000), chunks=(2, 10_000))
    inside = ((xy**2).sum(axis=0) < 1).mean() * 4
    (pi,) = dask.compute(inside, scheduler=ex)
    return float(pi)


def groupby_with_a_shuffle(ex: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A groupby whose reduction goes through the storage exchange (split_out=4, the task shuffle)."""
    rng = np.random.default_rng(11)
    pdf = pd.DataFrame({"key": rng.integers(0, 60, 2_000), "x": rng.standard_normal(2_000)})
    grouped = dd.from_pandas(pdf, npartitions=8).groupby("key").x.sum(split_out=4, shuffle_method="tasks")
    got = grouped.compute(scheduler=ex).sort_index()
    return got, pdf.groupby("key").x.sum()


def test_the_report_of_a_monte_carlo_and_a_shuffle_has_one_bar_per_invocation_and_renders(
    make_executor, tmp_path, request
):
    ex = make_executor()
    report = tmp_path / "report.html"
    with records.collecting() as seen, dask_faas.performance_report(report):
        pi = monte_carlo(ex)
        got, want = groupby_with_a_shuffle(ex)
    assert abs(pi - np.pi) < 0.05
    pdt.assert_series_equal(got, want, check_names=False)
    assert any("exchange-map" in task for record in seen.invocations for task in record.tasks)
    assert len(seen.computes) >= 2 and len(seen.invocations) >= 20

    page = report.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page), "the page loads something from outside"
    sources = page_sources(page)
    bars = sources["timeline"]
    assert len(bars["call"]) == len(bars["start"]) == len(seen.invocations)
    assert sorted(zip(bars["call"], bars["attempt"], strict=True)) == sorted(
        (r.call, r.attempt) for r in seen.invocations
    )
    assert all(s <= e for s, e in zip(bars["start"], bars["end"], strict=True))
    assert len(sources["computes"]["tasks"]) == len(seen.computes)
    assert sum(sources["durations"]["count"]) == sum(r.running_s is not None for r in seen.invocations)

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium missing (Debian's chromium package; .ci/run installs it)")
    browser = request.getfixturevalue("browser")
    assert open_page(browser, report.as_uri(), rendered="document idle") == []
    png = screenshot(report.as_uri(), tmp_path / "report.png", tmp_path)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert colourful_pixels(png) > 20_000, "the screenshot shows no plots"


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_report_of_each_platform_shows_its_request_ids(request, platform, make_executor, tmp_path):
    """Through a platform's emulator (functions in its instances, storage on S3): a bar per invocation,
    each with the platform's own request id in its hover data."""
    ex = make_executor(**executor_settings(request, platform, ""))
    report = tmp_path / "report.html"
    with records.collecting() as seen, dask_faas.performance_report(report):
        assert list(ex.map(abs, range(-3, 3))) == [3, 2, 1, 0, 1, 2]
        assert dask.compute(da.ones(40, chunks=10).sum(), scheduler=ex) == (40,)
    bars = page_sources(report.read_text(encoding="utf-8"))["timeline"]
    assert len(bars["call"]) == len(seen.invocations) >= 7
    assert sorted(bars["request_id"]) == sorted(str(r.request_id) for r in seen.invocations)
    assert all(bars["request_id"]) and {r.platform for r in seen.invocations} == {platform}


SENTINEL_KEY = "AKIAREPORTSENTINEL0KEY"
SENTINEL_SECRET = "sentinel/report/secret-never-seen-0123456"
SENTINEL_TOKEN = "sentinel-report-session-token-0123456789"


def nosy(x: int) -> int:
    """Print, and fail with, what a function sees of its storage and context."""
    from dask_faas import worker

    context = worker.current()
    print("storage", context.storage, context.storage.locator())
    if x < 0:
        raise RuntimeError(f"context {context!r} storage {context.storage.locator()!r}")
    return x


@pytest.mark.slow
def test_no_credential_reaches_the_report(s3_endpoint, s3_bucket, make_executor, tmp_path):
    """Sentinel storage credentials and signing key: in no part of the page, errors included."""
    key = os.urandom(32).hex()
    s3 = {"bucket": s3_bucket, "endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    s3 |= {"key": SENTINEL_KEY, "secret": SENTINEL_SECRET, "token": SENTINEL_TOKEN}
    ex = make_executor(storage="s3", s3=s3, signing_key=key, logs={"directory": str(tmp_path / "logs")})
    report = tmp_path / "report.html"
    with dask_faas.performance_report(report):
        assert list(ex.map(nosy, [1, 2])) == [1, 2]
        assert dask.compute(dask.delayed(nosy)(3), scheduler=ex) == (3,)
        with pytest.raises(RuntimeError, match="context"):
            ex.submit(nosy, -1).result()
    page = report.read_text(encoding="utf-8")
    assert "context" in "".join(page_sources(page)["timeline"]["error"])  # the error text is in the page
    for secret in (SENTINEL_KEY, SENTINEL_SECRET, SENTINEL_TOKEN, key):
        assert secret not in page, f"{secret} appears in the report"


@needs_chromium
def test_the_console_check_sees_errors_failed_loads_and_outside_requests(browser, tmp_path):
    """The check above can fail: a page with faults of each kind is reported for every one."""
    page = tmp_path / "faulty.html"
    page.write_text(
        "<html><body><img src='missing.png'><script>console.error('sentinel-error');"
        "console.warn('sentinel-warning'); setTimeout(() => { throw new Error('sentinel-throw'); }, 1);"
        "setTimeout(() => console.log('all done'), 50);</script></body></html>"
    )
    problems = open_page(browser, page.as_uri(), rendered="all done")
    assert any("sentinel-error" in p for p in problems), problems
    assert any("sentinel-warning" in p for p in problems), problems
    assert any("sentinel-throw" in p for p in problems), problems
    assert any("missing.png" in p for p in problems), problems


@needs_chromium
def test_a_blank_page_has_no_colourful_pixels(tmp_path):
    page = tmp_path / "blank.html"
    page.write_text("<html><body><h1>dask-faas performance report</h1><p>no plots</p></body></html>")
    png = screenshot(page.as_uri(), tmp_path / "blank.png", tmp_path)
    assert colourful_pixels(png) < 100


# -- the image -------------------------------------------------------------------------------------


def test_plot_timeline_draws_one_bar_per_invocation_and_the_histogram(make_executor, tmp_path):
    ex = make_executor()
    assert list(ex.map(abs, range(-6, 6))) == [abs(i) for i in range(-6, 6)]
    (total,) = dask.compute(da.ones(100, chunks=10).sum(), scheduler=ex)
    assert total == 100
    frame = ex.invocations()
    assert len(frame) >= 12

    (both,) = plot.figures(frame)
    timeline_axes, histogram_axes = both.axes[:2]
    assert len(timeline_axes.patches) == len(frame)  # the bars; submit/receive marks are not patches
    assert sum(p.get_height() for p in histogram_axes.patches) == frame.running_s.notna().sum()

    written = plot.timeline(frame, tmp_path / "timeline.png")
    assert written == [tmp_path / "timeline.png"]
    assert written[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    ex.plot(str(tmp_path / "ex.png"))
    assert (tmp_path / "ex.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    apart = plot.timeline(frame, tmp_path / "job.png", separate=True)
    assert apart == [tmp_path / "job-timeline.png", tmp_path / "job-histogram.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in apart)
    timeline_fig, _ = plot.figures(frame, separate=True)
    assert len(timeline_fig.axes[0].patches) == len(frame)


def test_the_report_of_a_block_without_invocations(tmp_path):
    empty = tmp_path / "empty.html"
    with dask_faas.performance_report(empty):
        pass
    sources = page_sources(empty.read_text())
    assert len(sources["timeline"]["call"]) == 0 and len(sources["computes"]["tasks"]) == 0


def test_a_failing_block_still_writes_its_report_with_the_failure_marked(make_executor, tmp_path):
    ex = make_executor()
    failed = tmp_path / "failed.html"
    with (
        records.collecting() as seen,
        pytest.raises(ValueError, match="invalid literal"),
        dask_faas.performance_report(failed),
    ):
        assert ex.submit(int, "12").result() == 12
        ex.submit(int, "twelve").result()
    bars = page_sources(failed.read_text())["timeline"]
    assert len(bars["call"]) == len(seen.invocations) >= 2
    want = sorted((r.call, r.attempt, r.outcome) for r in seen.invocations)
    assert sorted(zip(bars["call"], bars["attempt"], bars["outcome"], strict=True)) == want
    assert "error" in bars["outcome"] and "ok" in bars["outcome"]
    assert {m for m, o in zip(bars["mark"], bars["outcome"], strict=True) if o == "error"} == {"error"}


@pytest.mark.parametrize(
    ("blocked", "code", "extra"),
    [
        ("bokeh", "with dask_faas.performance_report(sys.argv[1]): pass", "dask-faas[report]"),
        ("matplotlib", "dask_faas.plot.timeline(records.frame([]), sys.argv[1])", "dask-faas[plot]"),
    ],
)
def test_without_the_extra_the_error_names_it(tmp_path, blocked, code, extra):
    """In a fresh interpreter where the library cannot be imported (``sys.modules[name] = None``)."""
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import dask_faas, dask_faas.plot\nfrom dask_faas import records\n"
        f"try:\n    {code}\nexcept ImportError as e:\n    print(e)\n"
    )
    target = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install {extra}" in done.stdout
    assert not target.exists()


def test_a_report_into_a_missing_directory_fails_before_the_block_runs(tmp_path):
    ran = []
    with (
        pytest.raises(FileNotFoundError, match="nowhere"),
        dask_faas.performance_report(tmp_path / "nowhere" / "r.html"),
    ):
        ran.append(True)
    assert ran == []
