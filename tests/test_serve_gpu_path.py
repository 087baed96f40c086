"""The server's GPU path, on the CPU: a CUDA-like backend stand-in (``on_cuda`` True, its
tensors on the CPU) and a recording stand-in for NVENC (``takes == "tensor"``), both defined
here, in the test only. Proves the scheduler's plumbing: one ``backend.frames`` call per tick
for every stream, each tensor viewer gets exactly its own stream's frames (equal to that
stream generated alone) with its batch's generation event, host RGB only for the streams that
have a host viewer, an NVENC session that cannot open falls back to x264 for that viewer only
(logged once, counted, shown per viewer), and ``serve --encoder nvenc`` without NVENC is the
``stream`` command's one-line refusal. Nothing here runs on a GPU or NVENC."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from t2v_rt.backends import create_backend  # noqa: E402
from t2v_rt.backends.base import Backend, to_display  # noqa: E402
from t2v_rt.errors import RuntimeUnavailable  # noqa: E402
from t2v_rt.pipeline import Video  # noqa: E402
from t2v_rt.serve import scheduler as scheduler_mod  # noqa: E402
from t2v_rt.serve import session as session_mod  # noqa: E402
from t2v_rt.serve.scheduler import Scheduler  # noqa: E402
from t2v_rt.serve.session import ContainerViewer, StreamSpec  # noqa: E402

RED = "a large red circle moving left and right slowly on a black background"
BLUE = "a large blue circle moving left and right slowly on a black background"
STREAMS = [(RED, 1), (BLUE, 2), (RED, 7)]
FRAMES = 12


class CudaLike(Backend):
    """A real backend (onnxruntime) that says its frames are on a CUDA GPU; ``frames`` gives
    torch tensors (on the CPU). Counts its calls."""

    name = "cuda-like"
    device = "cpu"

    def __init__(self, inner: Backend):
        self.inner, self.config = inner, inner.config
        self.calls: list[tuple[str, int]] = []

    @property
    def on_cuda(self) -> bool:
        return True

    def style(self, tokens, z):
        return torch.as_tensor(self.inner.style(tokens, z))

    def frames(self, w, features):
        self.calls.append(("frames", len(w)))
        return torch.as_tensor(self.inner.frames(w, features))

    def display(self, w, features):
        self.calls.append(("display", len(w)))
        return to_display(self.inner.frames(w, features))


class RecordingSink:
    """Stands in for an NVENC session: takes tensors, records (pts, frame) it gets."""

    takes = "tensor"

    def __init__(self, *args, **kwargs):
        self.index = 0
        self.got: list[tuple[int, torch.Tensor]] = []
        self.closed = False

    def write(self, frames) -> None:
        assert isinstance(frames, torch.Tensor) and frames.dim() == 4 and frames.shape[1] == 3
        for f in frames:
            self.got.append((self.index, f.clone()))
            self.index += 1

    def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return "recording"


class FakeEvent:
    """Stands in for the generation's CUDA event: which batch it follows."""

    def __init__(self, batch: int):
        self.batch = batch
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1


@pytest.fixture(scope="module")
def inner():
    b = create_backend("onnxruntime")
    yield b
    b.close()


@pytest.fixture
def rig(inner, monkeypatch):
    """The stand-ins wired in; records each batch, its event and every host conversion."""
    backend = CudaLike(inner)
    rec = {"batches": [], "events": [], "to_display_rows": [], "waits": [], "logs": []}
    monkeypatch.setitem(session_mod.CONTAINER_SINKS, "nvenc", RecordingSink)

    real_batch = Scheduler._batch

    def batch(self, work, gathered):
        before = len(backend.calls)
        real_batch(self, work, gathered)
        rec["batches"].append(([(s.id, list(ks)) for s, ks in work], backend.calls[before:]))

    def generation_done(self, frames):
        event = FakeEvent(len(rec["batches"]))
        rec["events"].append(event)
        return event

    def counted_to_display(frames):
        rec["to_display_rows"].append(len(frames))
        return to_display(frames)

    @contextlib.contextmanager
    def after_generation(self, frame, ready):
        rec["waits"].append((self, ready))
        yield

    monkeypatch.setattr(Scheduler, "_batch", batch)
    monkeypatch.setattr(Scheduler, "_generation_done", generation_done)
    monkeypatch.setattr(scheduler_mod, "to_display", counted_to_display)
    monkeypatch.setattr(ContainerViewer, "_after_generation", after_generation)
    return backend, rec


def run_streams(backend, rec, viewers_of, encoder="nvenc", frames=FRAMES):
    """Open STREAMS on one scheduler, attach ``viewers_of(i, session, sched, loop)``'s viewers,
    read every viewer's bytes to the end. -> (sched, sessions, [[(viewer, bytes)]])"""
    sched = Scheduler(backend, workers=2, encoder=encoder, log=rec["logs"].append)
    sched.max_behind = 30.0         # a loaded test machine skips no frames
    sched.start()

    async def main():
        loop = asyncio.get_running_loop()
        sessions = [sched.open(StreamSpec(p, seed=seed, fps=Fraction(30), size=32,
                                          frames=frames)).result(30) for p, seed in STREAMS]
        per = [viewers_of(i, s, sched, loop) for i, s in enumerate(sessions)]
        # all attached between two ticks: every viewer gets every frame
        sched.call(lambda: [sched.attach(s, v) for s, vs in zip(sessions, per)
                            for v in vs]).result(30)
        infos = [s.info() for s in sessions]

        async def read(v):
            data = bytearray()
            while (chunk := await v.channel.read()) is not None:
                data += chunk
            return bytes(data)

        out = [[(v, await read(v)) for v in vs] for vs in per]
        return sessions, out, infos

    try:
        sessions, out, infos = asyncio.run(main())
    finally:
        sched.stop()
    for vs in out:
        for v, _ in vs:
            assert v.failure is None, v.failure
    return sched, sessions, out, infos


def decode(data: bytes) -> list[int]:
    """The frame numbers of a Matroska stream's decoded frames."""
    with av.open(io.BytesIO(data), format="matroska") as c:
        stream = c.streams.video[0]
        pts = [f.pts for f in c.decode(video=0)]
    return [round(p * stream.time_base * 30) for p in pts]


def reference(inner, prompt, seed, session, ks) -> np.ndarray:
    """The stream's frames ``ks`` generated alone: [len(ks), 3, R, R]."""
    return np.asarray(Video(inner, prompt, seed).frames_at(session.times(ks)))


def test_one_frames_call_per_tick_each_viewer_gets_its_own_frames(inner, rig):
    backend, rec = rig

    def viewers(i, s, sched, loop):
        n = 2 if i == 0 else 1          # two readers of stream 0: each its own session
        return [ContainerViewer(s, sched.pool, sched, loop, encoder="nvenc") for _ in range(n)]

    sched, sessions, out, infos = run_streams(backend, rec, viewers)
    # one backend call per tick, `frames` (on the device), never `display`
    assert rec["batches"]
    for work, calls in rec["batches"]:
        assert calls == [("frames", sum(len(ks) for _, ks in work))]
    assert max(len(work) for work, _ in rec["batches"]) == len(STREAMS)   # batched across streams
    assert sched.m_batch.count == len(rec["batches"])
    # no viewer takes host frames: none made
    assert rec["to_display_rows"] == []
    assert all(e.synchronized == 1 for e in rec["events"])
    # every viewer: its own stream's frames, in order, equal to that stream generated alone
    made = {sid: [] for sid in (s.id for s in sessions)}
    for b, (work, _) in enumerate(rec["batches"]):
        for sid, ks in work:
            made[sid] += [(k, b) for k in ks]
    assert len(rec["waits"]) == sum(len(vs) for vs in out) * FRAMES
    for (prompt, seed), s, vs in zip(STREAMS, sessions, out):
        assert [k for k, _ in made[s.id]] == list(range(FRAMES))
        ref = reference(inner, prompt, seed, s, list(range(FRAMES)))
        others = [reference(inner, p, sd, s, list(range(FRAMES)))
                  for (p, sd) in STREAMS if (p, sd) != (prompt, seed)]
        for v, data in vs:
            assert v.encoder == "nvenc" and v.takes == "tensor" and v.sink.closed
            assert data == b""                              # the stand-in writes nothing
            ks = [pts + v.first_index for pts, _ in v.sink.got]
            assert ks == list(range(FRAMES))
            got = np.stack([f.numpy() for _, f in v.sink.got])
            np.testing.assert_allclose(got, ref, atol=1e-4)
            for other in others:                             # not another stream's frames
                assert np.abs(got - other).max() > 0.1
            # each frame was encoded after the event recorded after the batch that made it
            waited = [ready for w, ready in rec["waits"] if w is v]
            assert [e.batch for e in waited] == [dict(made[s.id])[k] for k in ks]
            assert all(e is rec["events"][e.batch] for e in waited)
        assert infos[sessions.index(s)]["encoders"] == ["nvenc"] * len(vs)


def test_host_rgb_only_for_streams_with_a_host_viewer(inner, rig):
    backend, rec = rig

    def viewers(i, s, sched, loop):
        # stream 1 is read through x264 (host RGB); streams 0 and 2 through the GPU stand-in
        return [ContainerViewer(s, sched.pool, sched, loop, encoder="x264" if i == 1 else "nvenc")]

    sched, sessions, out, _ = run_streams(backend, rec, viewers)
    assert [calls for _, calls in rec["batches"]] == [
        [("frames", sum(len(ks) for _, ks in work))] for work, _ in rec["batches"]]
    # one conversion per tick that had stream 1's frames, of stream 1's rows only
    x264_sid = sessions[1].id
    expected = [len(ks) for work, _ in rec["batches"] for sid, ks in work if sid == x264_sid]
    assert rec["to_display_rows"] == expected
    v, data = out[1][0]
    assert v.encoder == "x264" and v.takes == "rgb"
    assert decode(data) == list(range(FRAMES))
    assert all((ready is None) == (w is v) for w, ready in rec["waits"])
    for i in (0, 2):
        v, _ = out[i][0]
        assert [pts for pts, _ in v.sink.got] == list(range(FRAMES))


def test_x264_everywhere_keeps_display_on_a_cuda_backend(inner, rig):
    backend, rec = rig

    def viewers(i, s, sched, loop):
        return [ContainerViewer(s, sched.pool, sched, loop)]

    sched, sessions, out, _ = run_streams(backend, rec, viewers, encoder="x264")
    for work, calls in rec["batches"]:
        assert calls == [("display", sum(len(ks) for _, ks in work))]
    assert rec["events"] == [] and rec["to_display_rows"] == []
    assert all(ready is None for _, ready in rec["waits"])      # host frames: no event
    for vs in out:
        assert decode(vs[0][1]) == list(range(FRAMES))


def test_session_open_failure_falls_back_to_x264_for_that_viewer(inner, rig, monkeypatch):
    backend, rec = rig
    opened = []

    def nvenc(*args, **kwargs):
        opened.append(1)
        if len(opened) == 2:     # the second session is refused (a consumer GPU's cap)
            raise RuntimeUnavailable("OpenEncodeSessionEx failed: out of memory\n(NV_ENC_ERR_OUT_OF_MEMORY)")
        return RecordingSink()

    monkeypatch.setitem(session_mod.CONTAINER_SINKS, "nvenc", nvenc)

    def viewers(i, s, sched, loop):
        return [ContainerViewer(s, sched.pool, sched, loop, encoder="nvenc")
                for _ in range(2 if i == 0 else 1)]

    sched, sessions, out, infos = run_streams(backend, rec, viewers)
    (v0, _), (v1, data1) = out[0]
    assert (v0.encoder, v0.takes) == ("nvenc", "tensor")
    assert (v1.encoder, v1.takes) == ("x264", "rgb")       # this viewer only
    assert all(vs[0][0].encoder == "nvenc" for vs in out[1:])
    assert decode(data1) == list(range(FRAMES))             # the x264 viewer: every frame
    assert [pts for pts, _ in v0.sink.got] == list(range(FRAMES))
    assert infos[0]["encoders"] == ["nvenc", "x264"]
    assert sched.m_fallbacks.value == 1
    assert "t2v_rt_encoder_fallbacks_total 1" in sched.registry.render()
    fallback_lines = [x for x in rec["logs"] if "could not open" in x]
    assert len(fallback_lines) == 1 and "\n" not in fallback_lines[0]
    assert sessions[0].id in fallback_lines[0] and "NV_ENC_ERR_OUT_OF_MEMORY" in fallback_lines[0]
    # stream 0's batches made host RGB for its rows (the x264 viewer), not the others'
    sid = sessions[0].id
    assert rec["to_display_rows"] == [len(ks) for work, _ in rec["batches"]
                                      for s, ks in work if s == sid]


def test_stream_info_api_shows_each_viewers_encoder(inner, rig):
    backend, rec = rig
    from fastapi.testclient import TestClient

    from t2v_rt.serve.app import create_app

    sched = Scheduler(backend, workers=1, encoder="nvenc")
    sched.start()
    try:
        with TestClient(create_app(sched)) as client:
            r = client.post("/api/streams", json={"prompt": RED, "size": 32, "frames": 300})
            assert r.status_code == 201 and r.json()["encoders"] == []
            sid = r.json()["id"]
            session = sched.get(sid)

            async def attach():
                loop = asyncio.get_running_loop()
                for enc in ("nvenc", "x264"):
                    sched.attach(session, ContainerViewer(session, sched.pool, sched, loop,
                                                          encoder=enc))

            asyncio.run(attach())
            assert client.get(f"/api/streams/{sid}").json()["encoders"] == ["nvenc", "x264"]
            assert client.get("/api/health").json()["encoder"] == "nvenc"
            text = client.get("/metrics").text
            assert 't2v_rt_viewers_by_encoder{encoder="nvenc"} 1' in text
            assert 't2v_rt_viewers_by_encoder{encoder="x264"} 1' in text
            assert "t2v_rt_encoder_fallbacks_total 0" in text
            client.delete(f"/api/streams/{sid}")
    finally:
        sched.stop()


def test_serve_encoder_choice(monkeypatch):
    from t2v_rt.encode import encoders
    from t2v_rt.serve.session import serve_encoder

    logs = []
    assert serve_encoder("auto", False, logs.append) == "x264" and logs == []
    assert serve_encoder("x264", False) == "x264"
    with pytest.raises(RuntimeUnavailable, match="not on a CUDA GPU"):
        serve_encoder("nvenc", False)
    # a CUDA GPU without NVENC (an H100/H200): auto says why and takes x264, not nvjpeg
    real = encoders.encoder_problem
    monkeypatch.setattr(encoders, "encoder_problem",
                        lambda name, fmt, on_cuda, codec="h264":
                        "no NVENC on this GPU" if name == "nvenc" else real(name, fmt, False, codec))
    assert serve_encoder("auto", True, logs.append) == "x264"
    assert logs == ["encoder auto: x264 (skipped nvenc: no NVENC on this GPU)"]
    monkeypatch.setattr(encoders, "encoder_problem", lambda *a, **k: None)
    assert serve_encoder("auto", True) == "nvenc"


def test_serve_encoder_nvenc_refused_in_one_line_like_stream():
    cmd = [sys.executable, "-m", "t2v_rt"]
    serve = subprocess.run([*cmd, "serve", "--port", "0", "--encoder", "nvenc"],
                           capture_output=True, text=True, timeout=60)
    stream = subprocess.run([*cmd, "stream", RED, "--frames", "1", "--encoder", "nvenc"],
                            capture_output=True, text=True, timeout=60)
    lines = [x for x in serve.stderr.splitlines() if x.strip()]
    assert serve.returncode == 2 and len(lines) == 1, serve.stderr
    assert "encoder 'nvenc' cannot run here" in lines[0]
    assert lines == [x for x in stream.stderr.splitlines() if x.strip()]


@pytest.mark.parametrize("fmt", ["matroska", "fmp4"])
def test_real_nvenc_sink_that_cannot_open_here_falls_back(fmt):
    """No stand-in: the real NVENC sinks (container, fMP4) fail to open on this machine (no
    driver, or no NVENC), and the viewer encodes with x264; its bytes decode."""
    from concurrent.futures import ThreadPoolExecutor

    from t2v_rt.serve.session import Session, ViewerStats
    from t2v_rt.serve.transports import Fmp4Viewer

    class Stats(ViewerStats):
        def __init__(self):
            self.fallbacks = []

        def encoder_fallback(self, viewer, wanted, error):
            self.fallbacks.append((wanted, str(error)))

    stats = Stats()

    async def run():
        session = Session("s", StreamSpec("p", fps=Fraction(30), size=32), 0.0)
        with ThreadPoolExecutor(1) as pool:
            loop = asyncio.get_running_loop()
            viewer = (Fmp4Viewer(session, pool, stats, loop, encoder="nvenc") if fmt == "fmp4"
                      else ContainerViewer(session, pool, stats, loop, encoder="nvenc"))
            viewer.max_queue = viewer.max_lag = 1000
            for k in range(6):
                rgb = np.zeros((16, 16, 3), np.uint8)
                rgb[:, : 2 * k + 2] = 200
                viewer.push(k, rgb, 0.0, 0.0)
            viewer.finish()
            data = bytearray()
            while (chunk := await viewer.channel.read()) is not None:
                data += chunk
        assert viewer.failure is None, viewer.failure
        return viewer, bytes(data)

    viewer, data = asyncio.run(run())
    assert (viewer.encoder, viewer.takes) == ("x264", "rgb")
    assert len(stats.fallbacks) == 1 and stats.fallbacks[0][0] == "nvenc"
    with av.open(io.BytesIO(data), format="mp4" if fmt == "fmp4" else "matroska") as c:
        assert len(list(c.decode(video=0))) == 6
