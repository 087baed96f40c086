"""`t2v-rt serve` end to end: a real uvicorn on a free port, real HTTP (httpx), streams decoded
with PyAV; prompt changes mid-stream (server and `stream --interactive`); bad requests;
admission; disconnects; SIGTERM; the cross-stream batcher's slow-reader drops."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from t2v_rt.serve.process import ServerProcess

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

CMD = [sys.executable, "-m", "t2v_rt"]
RED = "a large red circle moving left and right slowly on a black background"
BLUE = "a large blue circle moving left and right slowly on a black background"


class Server(ServerProcess):
    """``t2v-rt serve --port 0`` in a subprocess, with an HTTP client."""

    def __init__(self, *args: str):
        super().__init__(*args, start_timeout=60)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> int:
        self.http.close()
        return super().stop()

    def new(self, **body) -> dict:
        r = self.http.post("/api/streams", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def metric(self, name: str) -> float:
        text = self.http.get("/metrics").text
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert m, text
        return float(m.group(1))


@pytest.fixture(scope="module")
def server():
    s = Server("--max-streams", "6")
    yield s
    s.stop()


def decode(data: bytes, fmt: str = "matroska"):
    """(frames [N, H, W, 3] uint8, pts [N], rate)"""
    with av.open(io.BytesIO(data), format=fmt) as c:
        stream = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(f.pts)
        rate = stream.average_rate or stream.guessed_rate
    tb = stream.time_base
    return np.stack(frames), [round(p * tb * rate) for p in pts], rate


def shape_colour(frame: np.ndarray) -> np.ndarray:
    """Mean RGB of the shape on a black background (pixels clearly above black)."""
    px = frame.reshape(-1, 3).astype(np.float64)
    fg = px[px.max(1) > 80]
    assert len(fg) > 20
    return fg.mean(0)


def _model_message(prompt: str) -> str:
    """The bundled model's one-line refusal of ``prompt`` (what the CLI prints after 'error: ')."""
    from t2v_rt.errors import UsageError
    from t2v_rt.generators.io import read_config, require_weights

    with pytest.raises(UsageError) as e:
        read_config(require_weights(None)).front_end().check(prompt)
    return str(e.value)


def test_round_trip_decoded_stream(server):
    info = server.new(prompt=RED, seed=3, fps=24, size=96, frames=24)
    assert info["video_url"].endswith(f"/api/streams/{info['id']}/video")
    assert info["state"] == "pending" and info["fps"] == 24 and info["size"] == 96
    assert server.http.get(f"/api/streams/{info['id']}").json()["prompt"] == RED
    start = time.monotonic()
    r = server.http.get(info["video_url"])
    elapsed = time.monotonic() - start
    assert r.status_code == 200 and r.headers["content-type"] == "video/x-matroska"
    frames, pts, rate = decode(r.content)
    assert frames.shape == (24, 96, 96, 3)
    assert Fraction(rate) == 24
    assert pts == list(range(24))                   # continuous timestamps
    assert frames.std() > 0
    assert 0.8 <= elapsed < 10                      # paced in real time: 24 frames at 24 fps
    # the same stream through MPEG-TS (one container per reader)
    info = server.new(prompt=RED, seed=3, fps=24, size=96, frames=5)
    r = server.http.get(info["video_url"], params={"format": "mpegts"})
    assert r.headers["content-type"] == "video/mp2t"
    assert decode(r.content, "mpegts")[0].shape == (5, 96, 96, 3)
    # a finished stream is freed
    deadline = time.monotonic() + 2
    while server.http.get(f"/api/streams/{info['id']}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _read_stream(server, url: str, during=None) -> bytes:
    """All of a finite stream; ``during(seconds_read)`` called as bytes arrive."""
    out = bytearray()
    start = time.monotonic()
    with server.http.stream("GET", url) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            out += chunk
            if during:
                during(time.monotonic() - start)
    return bytes(out)


def test_prompt_change_mid_stream_morphs_with_continuous_time(server):
    info = server.new(prompt=RED, fps=15, size=64, frames=40)
    sid = info["id"]
    expected = _model_message("a blu ball")
    changed = []

    def during(t):
        if t > 0.8 and not changed:
            r = server.http.patch(f"/api/streams/{sid}", json={"prompt": "a blu ball"})
            assert r.status_code == 422 and r.json() == {"error": expected}     # refused ...
            r = server.http.patch(f"/api/streams/{sid}", json={"prompt": BLUE,
                                                               "morph_seconds": 0.4})
            assert r.status_code == 200, r.text
            assert r.json()["prompt"] == BLUE
            changed.append(t)

    frames, pts, _ = decode(_read_stream(server, info["video_url"], during))
    assert changed
    assert pts == list(range(40))                   # ... and the stream went on, no gap
    colours = np.array([shape_colour(f) for f in frames])
    assert colours[0, 0] > 150 and colours[0, 2] < 80      # red first
    assert colours[-1, 2] > 150 and colours[-1, 0] < 80    # blue at the end
    blueness = colours[:, 2] - colours[:, 0]
    switch = int(np.argmax(blueness > 0))
    assert 5 <= switch <= 34
    # a morph, not a cut: the colour moves over several frames, monotonically
    moving = np.flatnonzero(np.abs(np.diff(blueness)) > 5)
    assert len(moving) >= 3, blueness
    assert np.all(np.diff(blueness[moving.min() : moving.max() + 2]) > -5), blueness


def test_bad_requests_get_4xx_with_the_cli_words(server):
    cli = subprocess.run([*CMD, "stream", "a blu ball"], capture_output=True, text=True,
                         timeout=60)
    cli_message = cli.stderr.strip().removeprefix("t2v-rt: error: ")
    h = server.http
    cases = [
        (h.post("/api/streams", json={"prompt": "a blu ball"}), 422, cli_message),
        (h.post("/api/streams", json={}), 422, "prompt is required"),
        (h.post("/api/streams", json={"prompt": 3}), 422, "prompt"),
        (h.post("/api/streams", json={"prompt": RED, "fps": 500}), 422,
         "fps must be in (0, 240], got 500"),
        (h.post("/api/streams", json={"prompt": RED, "size": 255}), 422,
         "--size must be even (4:2:0 video), got 255; try 256"),
        (h.post("/api/streams", json={"prompt": RED, "seed": -1}), 422, "seed must be in"),
        (h.post("/api/streams", json={"prompt": RED, "frames": 3, "seconds": 1}), 422,
         "frames or seconds"),
        (h.post("/api/streams", content=b"{not json", headers={"content-type": "application/json"}),
         400, "not valid JSON"),
        (h.post("/api/streams", json=[1]), 400, "JSON object"),
        (h.get("/api/streams/nope"), 404, "no stream 'nope'"),
        (h.get("/api/streams/nope/video"), 404, "no stream 'nope'"),
        (h.patch("/api/streams/nope", json={"prompt": RED}), 404, "no stream 'nope'"),
        (h.delete("/api/streams/nope"), 404, "no stream 'nope'"),
    ]
    sid = server.new(prompt=RED)["id"]
    cases += [
        (h.get(f"/api/streams/{sid}/video", params={"format": "avi"}), 422, "unknown format 'avi'"),
        (h.patch(f"/api/streams/{sid}", json={"prompt": RED, "morph_seconds": -1}), 422,
         "morph_seconds must be in [0, 60]"),
        (h.patch(f"/api/streams/{sid}", json={}), 422, "prompt is required"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (r.request.url, r.text)
        body = r.json()
        assert set(body) == {"error"} and words in body["error"], (r.request.url, body)
        assert "\n" not in body["error"]
    assert cli.returncode == 2 and cli_message
    assert h.delete(f"/api/streams/{sid}").status_code == 204
    assert h.get(f"/api/streams/{sid}").status_code == 404


def test_admission_hard_cap_and_measured_capacity(server):
    # measured: one stream that would need more than the machine
    r = server.http.post("/api/streams", json={"prompt": RED, "fps": 240, "size": 2048})
    if r.status_code == 201:      # fail this test alone: no pending stream left for the next
        server.http.delete(f"/api/streams/{r.json()['id']}")
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "at capacity" in r.json()["error"] and "cores" in r.json()["error"]
    # the hard cap (--max-streams 6), streams waiting for a reader count
    ids = []
    for _ in range(6):
        ids.append(server.new(prompt=RED, size=64, fps=10)["id"])
    r = server.http.post("/api/streams", json={"prompt": RED, "size": 64, "fps": 10})
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert "--max-streams 6" in r.json()["error"]
    assert server.http.delete(f"/api/streams/{ids.pop()}").status_code == 204
    ids.append(server.new(prompt=RED, size=64, fps=10)["id"])     # room again
    assert server.metric("t2v_rt_rejected_streams_total") >= 2
    for sid in ids:
        server.http.delete(f"/api/streams/{sid}")


def test_client_disconnect_frees_its_stream_within_a_second(server):
    info = server.new(prompt=RED, size=64)        # endless
    with server.http.stream("GET", info["video_url"]) as r:
        got = 0
        for chunk in r.iter_raw():
            got += len(chunk)
            if got > 2000:
                break
    gone = time.monotonic()
    while server.http.get(f"/api/streams/{info['id']}").status_code != 404:
        assert time.monotonic() - gone < 1.0, "stream still there 1 s after its reader left"
        time.sleep(0.02)
    # and many connect / disconnect cycles leave nothing behind
    pid = server.proc.pid

    def rss() -> int:
        with open(f"/proc/{pid}/status") as f:
            return int(next(x for x in f if x.startswith("VmRSS")).split()[1])

    def cycle():
        info = server.new(prompt=RED, size=64)
        with server.http.stream("GET", info["video_url"]) as r:
            next(r.iter_raw())

    for _ in range(30):
        cycle()
    before = rss()
    for _ in range(90):
        cycle()
    time.sleep(0.5)
    assert server.http.get("/api/health").json()["streams"] == 0
    assert rss() - before < 20_000, (before, rss())         # kB


def test_openapi_health_and_metrics(server):
    spec = server.http.get("/openapi.json").json()
    assert {"/api/streams", "/api/streams/{sid}", "/api/streams/{sid}/video",
            "/api/health"} <= set(spec["paths"])
    assert set(spec["paths"]["/api/streams/{sid}"]) >= {"get", "patch", "delete"}
    health = server.http.get("/api/health").json()
    assert health["status"] == "ok" and health["capacity"]["cores"] >= 1
    r = server.http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = set()
    for line in r.text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
        assert m, line
        float(m.group(3))
        names.add(m.group(1))
    for name in ("t2v_rt_active_streams", "t2v_rt_frames_per_second", "t2v_rt_late_frames_total",
                 "t2v_rt_batch_size_bucket", "t2v_rt_frame_latency_seconds_bucket",
                 "t2v_rt_dropped_frames_total", "t2v_rt_frames_sent_total"):
        assert name in names, name
    assert server.metric("t2v_rt_frames_sent_total") > 0


def test_sigterm_ends_streams_cleanly_and_exits():
    s = Server()
    try:
        info = s.new(prompt=RED, size=64)           # endless
        data = bytearray()
        with s.http.stream("GET", info["video_url"]) as r:
            for chunk in r.iter_raw():
                data += chunk
                if len(data) > 3000 and s.proc.poll() is None and not getattr(s, "signalled", 0):
                    s.proc.send_signal(signal.SIGTERM)
                    s.signalled = time.monotonic()
        ended = time.monotonic() - s.signalled
        rc = s.proc.wait(15)
        frames, pts, _ = decode(bytes(data))        # the container's end was written
        assert len(frames) >= 2 and pts == list(range(len(frames)))
        assert ended < 3
        assert rc == 0, s.stderr
        assert "Traceback" not in s.stderr and "stopping" in s.stderr
    finally:
        s.stop()


def test_slow_reader_drops_its_own_frames_only():
    """In process: two streams on one scheduler; one reader never reads. Its viewer drops
    frames (counted, per stream) once a second of video waits unread; the other stream gets
    every frame, in one generator call per tick with the other's."""
    from t2v_rt.backends import create_backend
    from t2v_rt.serve.scheduler import Scheduler
    from t2v_rt.serve.session import ContainerViewer, StreamSpec

    backend = create_backend("onnxruntime")
    sched = Scheduler(backend, workers=2)
    sched.calibrate()
    sched.start()

    async def main():
        loop = asyncio.get_running_loop()
        fast = sched.open(StreamSpec(RED, fps=Fraction(30), size=64, frames=45)).result(30)
        slow = sched.open(StreamSpec(BLUE, fps=Fraction(30), size=64)).result(30)
        v_fast = ContainerViewer(fast, sched.pool, sched, loop)
        v_slow = ContainerViewer(slow, sched.pool, sched, loop, max_lag_s=0.5)
        sched.attach(slow, v_slow)
        sched.attach(fast, v_fast)
        data = bytearray()
        while (chunk := await v_fast.channel.read()) is not None:
            data += chunk
        return bytes(data), v_slow, slow

    try:
        data, v_slow, slow = asyncio.run(main())
        frames, pts, _ = decode(data)
        assert len(frames) == 45 and pts == list(range(45))
        assert v_slow.dropped["slow_reader"] > 10
        text = sched.registry.render()
        assert f't2v_rt_stream_dropped_frames{{stream="{slow.id}",reason="slow_reader"}}' in text
        sizes = sched.m_batch
        assert sizes.sum / sizes.count > 1.5         # frames of both streams batched together
    finally:
        sched.stop()
        backend.close()


def test_calibrated_capacity_prices_a_large_stream_near_its_measured_cost():
    """The capacity model, calibrated as `serve` does, prices an x264 frame at 2048 x 2048
    within a factor of three of what encoding the model's frames at that size really costs
    (thread CPU time, so a busy machine does not skew it). A line through 64 and 256 alone
    priced it at a quarter, and let a 240 fps 2048 x 2048 stream in on two cores. The band
    is three, not two: identical runs of the calibration's own measurement differed by 1.2x
    to 1.5x on the 2-core CI machine (`python bench/x264_price.py --repeats 8`), and a
    calibration in a slow spell against a measurement in a fast one came to 2.04x in CI."""
    from t2v_rt.backends import create_backend
    from t2v_rt.encode.encoders import open_sink
    from t2v_rt.pipeline import Video, frame_times
    from t2v_rt.serve.scheduler import Scheduler

    backend = create_backend("onnxruntime")
    try:
        sched = Scheduler(backend, workers=1)
        measured = sched.calibrate()
        assert {"x264_ms_cpu_per_frame_64", "x264_ms_cpu_per_frame_256",
                "x264_ms_cpu_per_frame_1024"} <= set(measured)
        cap = sched.capacity
        predicted = cap.enc0 + cap.enc1 * 2048 * 2048

        class _Null:
            def write(self, data) -> int:
                return len(data)

        # What serve encodes: the model's own frames, here of another prompt and a fresh seed
        # than the calibration's (a frame of noise costs x264 two to three times as much
        # at 2048; the in-operation correction, from the process's real CPU time, covers it).
        seed = int(np.random.default_rng().integers(1, 2**31))
        video = Video(backend, "a large blue square moving diagonally quickly on a white "
                      "background", seed)
        t = frame_times(0, 8, Fraction(30))
        rgb = backend.display(video.style_rows(t), video.features_at(t))
        assert rgb.shape[0] == 8 and rgb.std() > 1.0          # real frames, never constant
        sink = open_sink("x264", _Null(), "matroska", Fraction(30), 2048)
        sink.stream.options = {**sink.stream.options, "threads": "1"}
        sink.write(rgb[:1])
        costs = []
        for i in range(8):
            c0 = time.thread_time()
            sink.write(rgb[i:i + 1])
            costs.append(time.thread_time() - c0)
        sink.close()
        cost = float(np.median(costs))
        assert cost / 3 <= predicted <= 3 * cost, (predicted, cost, measured)
        if cap.cores <= 2:       # so the largest, fastest stream the API takes is refused here
            assert "cores" in cap.check([], (240.0, 2048))
    finally:
        sched.stop()
        backend.close()


def test_video_set_prompt_morphs_between_the_two_prompts_videos():
    from t2v_rt.backends import create_backend
    from t2v_rt.errors import UsageError
    from t2v_rt.pipeline import Video

    backend = create_backend("onnxruntime")
    red, blue = Video(backend, RED, 5), Video(backend, BLUE, 5)
    v = Video(backend, RED, 5)
    t = np.arange(30) / 10
    np.testing.assert_array_equal(v.display_at(t[:10]), red.display_at(t[:10]))
    with pytest.raises(UsageError, match="blu"):
        v.set_prompt("a blu ball", 0.5)
    assert v.prompt == RED
    v.set_prompt(BLUE, 0.5)                 # from the last frame made (t = 0.9) to t = 1.4
    assert v.prompt == BLUE
    out = v.display_at(t[9:])
    np.testing.assert_array_equal(out[0], red.display_at(t[9:10])[0])     # no jump at the start
    np.testing.assert_array_equal(out[6:], blue.display_at(t[15:]))     # the new prompt's video
    rows = v.style_rows(t[9:15])
    steps = np.linalg.norm(np.diff(rows, axis=0), axis=1)
    assert np.all(steps > 0) and steps.max() < 0.6 * np.linalg.norm(rows[-1] - rows[0])
    backend.close()


def test_stream_interactive_changes_prompt_from_stdin():
    p = subprocess.Popen([*CMD, "stream", RED, "--interactive", "--frames", "36", "--fps", "12",
                          "--size", "64", "--morph", "0.3"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = bytearray()
    reader = threading.Thread(target=lambda: out.extend(p.stdout.read()), daemon=True)
    reader.start()
    time.sleep(1.0)
    p.stdin.write(b"a blu ball\n\n")
    p.stdin.flush()
    time.sleep(0.3)
    p.stdin.write((BLUE + "\n").encode())
    p.stdin.close()
    rc = p.wait(60)
    reader.join(10)
    err = p.stderr.read().decode()
    assert rc == 0, err
    assert f"error: {_model_message('a blu ball')} (still showing '{RED}')" in err
    assert f"prompt: '{BLUE}'" in err and "Traceback" not in err
    frames, pts, _ = decode(bytes(out))
    assert len(frames) == 36 and pts == list(range(36))
    first, last = shape_colour(frames[0]), shape_colour(frames[-1])
    assert first[0] > 150 and first[2] < 80
    assert last[2] > 150 and last[0] < 80


def test_serve_without_its_extra_names_it():
    code = ("import sys, importlib.util as u; real = u.find_spec\n"
            "u.find_spec = lambda n, *a: None if n in ('fastapi', 'uvicorn') else real(n, *a)\n"
            "from t2v_rt.cli import main; sys.exit(main(['serve']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pip install 't2v-rt[serve]'" in r.stderr and "Traceback" not in r.stderr


def test_recurrent_model_streams_batched_with_a_prompt_change(tmp_path):
    """A recurrent generator (mocogan, tiny, random weights) on the scheduler: each stream
    keeps its own state, frames of all streams in one call per tick, a prompt change morphs
    the style the state steps with; every frame arrives in order."""
    model = tmp_path / "moco.safetensors"
    proc = subprocess.run([*CMD, "init-model", "mocogan", "--preset", "tiny", "-o", str(model)],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    from t2v_rt.backends import create_backend
    from t2v_rt.serve.scheduler import Scheduler
    from t2v_rt.serve.session import ContainerViewer, StreamSpec

    from t2v_rt.serve.capacity import CapacityModel

    class AdmitAll(CapacityModel):
        """Admission is tested on its own (test_admission_hard_cap_and_measured_capacity); here a loaded CI machine must not
        refuse the three streams this test is about."""

        def check(self, streams, new):
            return None

    backend = create_backend("torch", model)
    sched = Scheduler(backend, workers=2, capacity=AdmitAll())
    sched.calibrate()           # warm, as `serve` does: a cold first call would skip frames
    sched.start()

    async def main():
        loop = asyncio.get_running_loop()
        fps = backend.config.default_fps
        sessions = [sched.open(StreamSpec("a red ball", seed=i, fps=fps, size=32,
                                          frames=20)).result(60) for i in range(3)]
        viewers = [ContainerViewer(s, sched.pool, sched, loop) for s in sessions]
        for s, v in zip(sessions, viewers):
            sched.attach(s, v)
        await asyncio.sleep(0.2)
        await asyncio.wrap_future(sched.set_prompt(sessions[0].id, "a blue ball", 0.2))

        async def read(v):
            data = bytearray()
            while (chunk := await v.channel.read()) is not None:
                data += chunk
            return bytes(data)

        return await asyncio.gather(*(read(v) for v in viewers))

    try:
        for data in asyncio.run(main()):
            frames, pts, _ = decode(data)
            assert len(frames) == 20 and pts == list(range(20))
        assert sched.m_batch.sum / sched.m_batch.count > 1.5
    finally:
        sched.stop()
        backend.close()


def test_serve_options_refused_in_one_line(server):
    port = server.url.rsplit(":", 1)[1]
    for args, words in ((["--port", port], "cannot listen on 127.0.0.1:" + port),
                        (["--port", "70000"], "must be in [0, 65535], got 70000"),
                        (["--max-streams", "0"], "must be at least 1")):
        r = subprocess.run([*CMD, "serve", *args], capture_output=True, text=True, timeout=60)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr


def test_a_server_that_cannot_start_is_one_error_with_its_log():
    """t2v_rt.serve.process: a serve that exits instead of listening raises at once with
    what it said (here: an unknown option, exit 2), leaving no process behind."""
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start(.|\n)*unrecognized arguments"):
        ServerProcess("--no-such-option")
    assert time.monotonic() - t0 < 30
