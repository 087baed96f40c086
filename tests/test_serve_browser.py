"""The browser page at ``/`` in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): it loads, streams play (the picture moves), a prompt typed into a tile changes
the colour on screen within a second, tiles side by side are added and removed, the MJPEG
fallback is taken where MSE cannot play H.264, and the page logs no console errors.

Pixels are read from the page itself: ``window.t2v.sample(i)`` draws tile i's <video>/<img>
into a canvas and averages its bright pixels.

``python tests/test_serve_browser.py --measure [--n 10]`` prints the latencies that
docs/serving.md quotes (first frame, PATCH -> colour on screen) for each transport.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from t2v_rt.serve.process import ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
RED = "a large red circle moving left and right slowly on a black background"
BLUE = "a large blue circle moving left and right slowly on a black background"


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return (f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium; .ci/run "
                "installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs Playwright's Python package (pip install -e '.[test]'; .ci/run installs it)"
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            return f"needs {module} (pip install -e '.[serve]')"
    return None


# Page-side helpers (run in the page by Playwright's evaluate).
# Wait until tile i shows the wanted colour: ms waited, or -1 past the limit.
WAIT_COLOUR = """async ([i, want, limit]) => {
  const t0 = performance.now();
  for (;;) {
    const s = window.t2v.sample(i);
    const shown = want === "red" ? s && s.r > s.b + 60 : s && s.b > s.r + 60;
    if (shown && s.n > 20) return performance.now() - t0;
    if (performance.now() - t0 > limit) return -1;
    await new Promise((r) => requestAnimationFrame(r));
  }
}"""
# Start a stream from the page and wait for its first red frame: ms from the POST on.
FIRST_FRAME = """async ([prompt, transport, size, limit]) => {
  const t0 = performance.now();
  const tile = await window.t2v.add(prompt, {transport, size});
  const i = window.t2v.tiles.indexOf(tile);
  for (;;) {
    const s = window.t2v.sample(i);
    if (s && s.n > 20 && s.r > s.b + 60) return [i, performance.now() - t0];
    if (performance.now() - t0 > limit) return [i, -1];
    await new Promise((r) => requestAnimationFrame(r));
  }
}"""
# PATCH tile i's prompt (morph 0: a cut) and wait for the colour on screen: [ms, PATCH ms].
SWITCH = """async ([i, prompt, want, limit]) => {
  const tile = window.t2v.tiles[i];
  const t0 = performance.now();
  let answered = -1;
  const done = fetch(`api/streams/${tile.id}`, {method: "PATCH",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({prompt, morph_seconds: 0})})
    .then(() => answered = performance.now() - t0);
  for (;;) {
    const s = window.t2v.sample(i);
    if (s && s.n > 20 && (want === "red" ? s.r > s.b : s.b > s.r)) {
      await done;
      return [performance.now() - t0, answered];
    }
    if (performance.now() - t0 > limit) return [-1, answered];
    await new Promise((r) => requestAnimationFrame(r));
  }
}"""


class Server(ServerProcess):
    """``t2v-rt serve --port 0`` in a subprocess, and the streams it holds."""

    def streams(self) -> list[str]:
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + "/api/streams", timeout=10) as r:
            return [s["id"] for s in json.load(r)]


class Browser:
    """Headless Chromium (never a browser Playwright downloads) on one page, its console
    errors collected."""

    def __init__(self):
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        self.errors: list[str] = []

    def page(self, url: str, init_script: str | None = None):
        page = self.browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        if init_script:
            page.add_init_script(init_script)
        page.goto(url)
        page.wait_for_function("() => window.t2v !== undefined")
        return page

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


_why = _missing()
needs_browser = pytest.mark.skipif(_why is not None, reason=_why or "")


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def _tile_count(page) -> int:
    return page.evaluate("() => window.t2v.tiles.length")


def _add_from_form(page, prompt: str, transport: str, size: str = "128") -> int:
    """Add a stream through the page's form; the new tile's index."""
    n = _tile_count(page)
    page.fill("#prompt", prompt)
    page.select_option("#transport", transport)
    page.select_option("#size", size)
    page.click("#add")
    page.wait_for_function(f"() => window.t2v.tiles.length > {n}", timeout=10_000)
    return n


def _moves(page, i: int) -> tuple[dict, dict, float]:
    """Tile i sampled 5 times over 0.6 s: the first and last samples and how far the
    shape's centre went left-right (a slow left-right motion has a 2 s period)."""
    samples = []
    for k in range(5):
        if k:
            page.wait_for_timeout(150)
        samples.append(page.evaluate("(i) => window.t2v.sample(i)", i))
    xs = [s["x"] for s in samples]
    return samples[0], samples[-1], max(xs) - min(xs)


@needs_browser
@pytest.mark.parametrize("transport", ["fmp4", "mjpeg"])
def test_page_plays_a_stream_and_a_typed_prompt_changes_its_colour(server, browser, transport):
    page = browser.page(server.url + "/")
    try:
        page.fill("#morph", "0.25")
        i = _add_from_form(page, RED, transport)
        tile = page.locator(".tile").nth(i)
        assert tile.get_attribute("data-transport") == transport
        media = tile.locator("video" if transport == "fmp4" else "img")
        assert media.count() == 1
        # it plays: red shows, the circle moves (and the video's clock runs)
        assert page.evaluate(WAIT_COLOUR, [i, "red", 10_000]) >= 0, browser.errors
        a, b, moved = _moves(page, i)
        assert moved > 0.03, (a, b, moved)
        if transport == "fmp4":
            assert b["time"] > a["time"] and b["frames"] > a["frames"]
        # a prompt typed into the tile (PATCH, morph 0.25 s) turns it blue within a second
        tile.locator(".tile-prompt").fill(BLUE)
        start = time.monotonic()
        tile.locator(".tile-prompt").press("Enter")
        waited = page.evaluate(WAIT_COLOUR, [i, "blue", 3000])
        elapsed = time.monotonic() - start
        assert 0 <= waited and elapsed < 1.0, (waited, elapsed)
        assert not browser.errors, browser.errors
        # a prompt the model cannot read: the model's message in the tile, the video goes on
        # (Chromium logs the 422 answer itself as a console error: that one is expected)
        tile.locator(".tile-prompt").fill("a blu ball")
        tile.locator(".tile-prompt").press("Enter")
        page.wait_for_function(f"() => document.querySelectorAll('.tile-error')[{i}].textContent"
                               ".includes(\"'blu'\")", timeout=5000)
        assert page.evaluate(WAIT_COLOUR, [i, "blue", 1000]) >= 0
        expected = "status of 422 (Unprocessable Entity)"
        assert [e for e in browser.errors if expected not in e] == [], browser.errors
        assert len(browser.errors) == 1, browser.errors
        browser.errors.clear()
    finally:
        page.close()


@needs_browser
def test_tiles_side_by_side_are_added_and_removed(server, browser):
    page = browser.page(server.url + "/")
    try:
        first = _add_from_form(page, RED, "auto")
        second = _add_from_form(page, BLUE, "mjpeg")
        ids = page.evaluate("() => window.t2v.tiles.map((t) => t.id)")
        assert page.locator(".tile").count() == 2
        # auto took H.264 through MSE: this Chromium plays it
        assert page.locator(".tile").nth(first).get_attribute("data-transport") == "fmp4"
        assert page.evaluate(WAIT_COLOUR, [first, "red", 10_000]) >= 0
        assert page.evaluate(WAIT_COLOUR, [second, "blue", 10_000]) >= 0
        boxes = [page.locator(".tile").nth(k).bounding_box() for k in (first, second)]
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]   # side by side
        assert set(ids) <= set(server.streams())
        # remove the first: its stream is closed on the server, the other plays on
        page.locator(".tile").nth(first).locator(".remove").click()
        deadline = time.monotonic() + 2
        while ids[0] in server.streams():
            assert time.monotonic() < deadline, "the removed tile's stream is still open"
            time.sleep(0.05)
        assert page.locator(".tile").count() == 1
        a, b, moved = _moves(page, 0)
        assert b["b"] > b["r"] and moved > 0.03, (a, b, moved)
        assert not browser.errors, browser.errors
    finally:
        page.close()


@needs_browser
def test_auto_falls_back_to_mjpeg_where_mse_cannot_play_h264(server, browser):
    no_h264 = """{ const real = MediaSource.isTypeSupported.bind(MediaSource);
      MediaSource.isTypeSupported = (t) => !t.includes("avc1") && real(t); }"""
    page = browser.page(server.url + "/", init_script=no_h264)
    try:
        i = _add_from_form(page, RED, "auto")
        assert page.locator(".tile").nth(i).get_attribute("data-transport") == "mjpeg"
        assert page.evaluate(WAIT_COLOUR, [i, "red", 10_000]) >= 0
        assert not browser.errors, browser.errors
    finally:
        page.close()


# --- the transports' bytes, without a browser ---------------------------------------------

def _viewer_bytes(cls, frames: list, size: int = 96, fps: int = 30) -> bytes:
    """Frames through a transport's viewer (in-process, the pool a thread), its bytes."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from fractions import Fraction

    from t2v_rt.serve.session import Session, StreamSpec, ViewerStats

    async def run():
        session = Session("s", StreamSpec("p", fps=Fraction(fps), size=size), 0.0)
        with ThreadPoolExecutor(1) as pool:
            viewer = cls(session, pool, ViewerStats(), asyncio.get_running_loop())
            viewer.max_queue = viewer.max_lag = 1000       # take every frame
            for k, rgb in frames:
                viewer.push(k, rgb, 0.0, 0.0)
            viewer.finish()
            data = bytearray()
            while (chunk := await viewer.channel.read()) is not None:
                data += chunk
        assert viewer.failure is None, viewer.failure
        return bytes(data)

    # on a thread of its own: Playwright's sync API holds an event loop on this one
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(lambda: asyncio.run(run())).result(60)


def _square(k: int):
    import numpy as np

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[20:40, k % 40 : k % 40 + 20] = (220, 30, 30)
    return rgb


def test_fmp4_is_one_fragment_per_frame_and_decodes():
    import io
    from fractions import Fraction

    import av

    from t2v_rt.serve.transports import Fmp4Sink, Fmp4Viewer

    writes = []
    sink = Fmp4Sink(writes.append, Fraction(30000, 1001), 96)
    sink.write(_square(0)[None])
    assert [w[4:8] for w in writes] == [b"ftyp", b"moof"]     # init segment, then frame 0 at once
    sink.write(_square(1)[None])
    assert len(writes) == 3 and writes[2][4:8] == b"moof"       # nothing held back
    # 40 frames with a gap (a slow reader's drops): every frame decodes, timestamps kept
    ks = list(range(20)) + list(range(25, 45))
    data = _viewer_bytes(Fmp4Viewer, [(k, _square(k)) for k in ks])
    with av.open(io.BytesIO(data), format="mp4") as c:
        stream = c.streams.video[0]
        decoded = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
        assert stream.codec_context.name == "h264" and stream.width == 96
    assert [round(p * stream.time_base * 30) for p, _ in decoded] == ks
    assert decoded[0][1][45, 20:30].mean(0)[0] > 150                    # the red square


def test_mjpeg_parts_are_whole_jpegs_each_followed_by_the_boundary():
    import av

    from t2v_rt.serve.transports import BOUNDARY, MjpegViewer

    data = _viewer_bytes(MjpegViewer, [(k, _square(k)) for k in range(5)])
    sep = f"--{BOUNDARY}\r\n".encode()
    assert data.startswith(sep) and data.endswith(b"\r\n" + sep)
    parts = [p for p in data.split(sep) if p]
    assert len(parts) == 5
    for k, part in enumerate(parts):
        head, jpeg = part.split(b"\r\n\r\n", 1)
        jpeg = jpeg.removesuffix(b"\r\n")
        assert b"Content-Type: image/jpeg" in head and f"X-Frame: {k}".encode() in head
        assert f"Content-Length: {len(jpeg)}".encode() in head
        frame = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg))[0]
        assert (frame.width, frame.height) == (96, 96)


# --- measuring: python tests/test_serve_browser.py --measure -----------------------------

def measure(n: int, size: int) -> dict:
    """First frame (POST -> red on screen) and PATCH -> colour on screen (morph 0), n times
    per transport, in headless Chromium, server and browser on this machine."""
    import statistics

    server, browser = Server(), Browser()
    out = {}
    try:
        page = browser.page(server.url + "/")
        for transport in ("fmp4", "mjpeg"):
            first, switch, patch = [], [], []
            for _ in range(n):
                i, ms = page.evaluate(FIRST_FRAME, [RED, transport, size, 10_000])
                first.append(ms)
                page.wait_for_timeout(500)
                for want, prompt in (("blue", BLUE), ("red", RED)):
                    ms, answered = page.evaluate(SWITCH, [i, prompt, want, 5000])
                    switch.append(ms)
                    patch.append(answered)
                    page.wait_for_timeout(300)
                page.evaluate("(i) => window.t2v.tiles[i].remove()", i)
                page.wait_for_timeout(200)

            def stats(xs):
                xs = sorted(xs)
                return {"median_ms": round(statistics.median(xs)), "min_ms": round(xs[0]),
                        "max_ms": round(xs[-1]), "n": len(xs)}

            out[transport] = {"first_frame": stats(first), "patch_to_pixels": stats(switch),
                              "patch_answered": stats(patch)}
        out["console_errors"] = browser.errors
    finally:
        browser.close()
        server.stop()
    return out


if __name__ == "__main__":
    import argparse
    import json
    import os

    ap = argparse.ArgumentParser(description=measure.__doc__)
    ap.add_argument("--measure", action="store_true", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    why = _missing()
    if why:
        sys.exit(why)
    result = measure(args.n, args.size)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=1))
