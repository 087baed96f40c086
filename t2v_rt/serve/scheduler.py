"""The cross-stream batcher: one thread owns the backend and serves every stream.

Each tick it takes, from every live session, the frames due soon (continuous batching: a
stream joins or leaves between any two ticks), stacks their style rows (each session's own
``w``, or its morph's rows) and features (each session's own frame times; a recurrent
model's steps from that session's own state) and makes them in **one** backend call; then
splits the frames per session and hands them to its viewers, whose encoders run on a worker
pool (one encoder per viewer, in parallel, off this thread).

Which call: where every viewer encodes host frames (x264; always on a CPU backend) it is
``backend.display`` (uint8 RGB on the host). Where the backend is on a CUDA GPU and some
viewer's encoder takes tensors (NVENC), it is ``backend.frames`` on the scheduler's own CUDA
stream: the batch stays on the GPU, each tensor viewer gets views of its stream's rows and the
CUDA event recorded after the generation (its encoder's stream waits on it), and host RGB is
made (``to_display``) only for the streams that also have a host viewer.

Deadlines drive the batch size: the tick starts when the most urgent frame must start (its due
time less the expected batch and encode time), and takes every frame due up to one frame
period after that, so with N streams at the same rate a batch holds about N frames.

Everything else that touches the backend (a new stream's style, a prompt change) runs on this
thread too, between ticks (:meth:`Scheduler.call`).
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from t2v_rt.backends.base import Backend, is_torch, to_display
from t2v_rt.errors import UsageError
from t2v_rt.serve.capacity import CapacityModel
from t2v_rt.serve.metrics import Registry
from t2v_rt.serve.session import (
    CLOSED,
    ENDING,
    LIVE,
    PENDING,
    AtCapacity,
    Session,
    StreamGone,
    StreamNotFound,
    StreamSpec,
    Viewer,
)

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05,
                   0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


def _cat(parts: list):
    if is_torch(parts[0]):
        import torch

        return torch.cat([torch.as_tensor(p) for p in parts])
    return np.concatenate(parts)


class Scheduler:
    """Sessions, admission and the batching thread. Thread-safe entry points: :meth:`admit`,
    :meth:`get`, :meth:`call`, :meth:`attach`, :meth:`detach`, :meth:`close_stream`,
    :meth:`drain`."""

    def __init__(self, backend: Backend, *, max_streams: int = 64, margin: float = 0.2,
                 max_batch: int = 64, connect_timeout: float = 30.0, max_behind: float = 0.5,
                 workers: int | None = None, log: Callable[[str], None] | None = None,
                 capacity: CapacityModel | None = None, id_prefix: str = "",
                 encoder: str = "x264"):
        self.backend = backend
        # the viewers' encoder (session.serve_encoder): x264, or nvenc on a CUDA GPU
        self.encoder = encoder
        self._gen_stream = None     # the generation's CUDA stream (device batches on a GPU)
        self.id_prefix = id_prefix      # every stream id starts with it (Ray: the replica's)
        self.max_streams = max_streams
        self.max_batch = max_batch
        self.connect_timeout = connect_timeout
        self.max_behind = max_behind
        self.log = log or (lambda msg: None)
        self.capacity = capacity or CapacityModel(margin=margin)
        self.pool = ThreadPoolExecutor(max_workers=workers or self.capacity.cores,
                                       thread_name_prefix="t2v-rt-encode")
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._calls: list[tuple[Callable, Future]] = []
        self._stopping = False
        self.draining = False
        self._thread: threading.Thread | None = None
        self._enc_frame = 6e-4      # x264 wall time per frame at 256 x 256 (calibrated)
        self._batch_s = 5e-3        # generator wall time per batch (EMA)
        self._ids = itertools.count()
        self._metrics()

    # --- metrics --------------------------------------------------------------------------

    def _metrics(self) -> None:
        r = self.registry = Registry()
        r.gauge("t2v_rt_active_streams", "streams admitted and not closed",
                lambda: len(self.sessions))
        r.gauge("t2v_rt_viewers", "readers attached to streams",
                lambda: sum(len(s.viewers) for s in list(self.sessions.values())))
        self.m_generated = r.counter("t2v_rt_frames_generated_total",
                                     "frames made by the generator")
        self.m_sent = r.counter("t2v_rt_frames_sent_total", "frames encoded and sent to readers")
        self.m_late = r.counter("t2v_rt_late_frames_total",
                                "frames sent more than one frame period after they were due")
        self.m_skipped = r.counter("t2v_rt_skipped_frames_total",
                                   "frames not made because a stream fell too far behind")
        self.m_dropped = r.counter("t2v_rt_dropped_frames_total",
                                   "frames dropped for one reader (slow reader or full queue)")
        self.m_rejected = r.counter("t2v_rt_rejected_streams_total",
                                    "stream requests refused with 503 (capacity)")
        self.m_fps = r.gauge("t2v_rt_frames_per_second", "frames generated per second (last 2 s)")
        r.gauge("t2v_rt_capacity_frames_per_second",
                "measured capacity in 256x256 frames per second (cores less the margin)",
                lambda: self.capacity.describe()["capacity_fps_at_256"])
        r.gauge("t2v_rt_load", "admitted streams' predicted CPU use over the usable cores",
                lambda: self.load())
        r.gauge("t2v_rt_generator_seconds_per_frame", "generator wall time per frame (EMA)",
                lambda: self.capacity.gen_wall)
        self.m_batch = r.histogram("t2v_rt_batch_size", "frames per generator call",
                                   BATCH_BUCKETS)
        self.m_latency = r.histogram("t2v_rt_frame_latency_seconds",
                                     "from the start of a frame's batch to its bytes ready to send",
                                     LATENCY_BUCKETS)
        r.gauge("t2v_rt_stream_dropped_frames", "frames dropped per active stream and reason",
                self._dropped_per_stream)
        self.m_fallbacks = r.counter("t2v_rt_encoder_fallbacks_total",
                                     "viewers whose GPU encoder session could not open "
                                     "(encoding with x264 instead)")
        r.gauge("t2v_rt_viewers_by_encoder", "readers attached, per encoder",
                self._viewers_by_encoder)
        self._fps_window: list[tuple[float, int]] = []

    def _dropped_per_stream(self) -> dict:
        out = {}
        for s in list(self.sessions.values()):
            totals: dict[str, int] = {}
            for v in list(s.viewers):
                for reason, n in v.dropped.items():
                    totals[reason] = totals.get(reason, 0) + n
            for reason in ("slow_reader", "queue_full"):
                out[(("stream", s.id), ("reason", reason))] = totals.get(reason, 0)
        return out

    def _viewers_by_encoder(self) -> dict:
        out = {(("encoder", name),): 0 for name in sorted({"x264", self.encoder})}
        for s in list(self.sessions.values()):
            for v in list(s.viewers):
                key = (("encoder", v.encoder),)
                out[key] = out.get(key, 0) + 1
        return out

    # the viewers' stats sink (ViewerStats)
    def frame_out(self, latency: float, late: bool) -> None:
        self.m_sent.inc()
        self.m_latency.observe(latency)
        if late:
            self.m_late.inc()
        self.capacity.observe_frames(time.monotonic(), 1, int(late))

    def dropped(self, reason: str) -> None:
        self.m_dropped.inc()

    def encoder_fallback(self, viewer: Viewer, wanted: str, error: BaseException) -> None:
        self.m_fallbacks.inc()
        why = " ".join(str(error).split()) or type(error).__name__
        self.log(f"stream {viewer.session.id}: a viewer's {wanted} session could not open "
                 f"({why}); that viewer encodes with x264")

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="t2v-rt-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for s in list(self.sessions.values()):
            s.close()
        self.sessions.clear()
        self.pool.shutdown(wait=True, cancel_futures=False)

    def drain(self) -> None:
        """Stop admitting; every stream ends cleanly after the frame it is on (its readers get
        the container's end) and pending ones close. Returns at once."""
        with self._lock:
            self.draining = True
            sessions = list(self.sessions.values())
        for s in sessions:
            if s.state == PENDING:
                self._remove(s)
            else:
                s.end()
        self._notify()

    def calibrate(self, sizes: tuple[int, ...] = (64, 256, 1024)) -> dict:
        """Warm the generator and x264 and measure them (the capacity model's starting point):
        generator wall time per frame at batch 8, encode CPU per frame at ``sizes`` (the
        per-pixel cost is fitted across the widest span: x264 at 2048 costs about four times
        what a line through 64 and 256 predicts)."""
        from fractions import Fraction

        from t2v_rt.encode.encoders import open_sink
        from t2v_rt.pipeline import Video, frame_times

        cfg = self.backend.config
        prompt = _probe_prompt(cfg)
        video = Video(self.backend, prompt, 0)
        t = frame_times(0, 8, Fraction(30))
        w, feats = video.style_rows(t), video.features_at(t)
        self.backend.display(w[:1], feats[:1])       # warm
        rgb = self.backend.display(w, feats)
        best, cpu = float("inf"), float("inf")
        for _ in range(5):
            t0, c0 = time.perf_counter(), time.process_time()
            rgb = self.backend.display(w, feats)
            best = min(best, time.perf_counter() - t0)
            cpu = min(cpu, time.process_time() - c0)
        gen = best / len(t)

        class _Null:
            def write(self, data) -> int:
                return len(data)

        enc = {}
        for size in sizes:
            sink = open_sink("x264", _Null(), "matroska", Fraction(30), size)
            sink.stream.options = {**sink.stream.options, "threads": "1"}
            sink.write(rgb[:1])
            c0 = time.thread_time()
            for i in range(16):
                sink.write(rgb[i % len(rgb):][:1])
            enc[size] = (time.thread_time() - c0) / 16
            sink.close()
        self.capacity.calibrate(gen, cpu / len(t), enc)
        self._batch_s = best
        self._enc_frame = enc[256] if 256 in enc else enc[max(enc)]
        return {"generator_ms_per_frame_b8": 1e3 * gen,
                "generator_ms_cpu_per_frame_b8": 1e3 * cpu / len(t),
                **{f"x264_ms_cpu_per_frame_{s}": 1e3 * c for s, c in enc.items()}}

    # --- the request side -----------------------------------------------------------------

    def load(self) -> float:
        cpu = sum(self.capacity.stream_cost(float(s.spec.fps), s.spec.size)
                  for s in list(self.sessions.values()))
        return cpu / self.capacity.cores

    def admit(self, spec: StreamSpec) -> Session:
        """Reserve capacity for a new stream, or :class:`AtCapacity` (HTTP 503)."""
        with self._lock:
            if self.draining or self._stopping:
                raise AtCapacity("the server is shutting down", retry_after=5)
            if len(self.sessions) >= self.max_streams:
                self.m_rejected.inc()
                raise AtCapacity(f"at capacity: {len(self.sessions)} streams playing "
                                 f"(--max-streams {self.max_streams})")
            streams = [(float(s.spec.fps), s.spec.size) for s in self.sessions.values()]
            why = self.capacity.check(streams, (float(spec.fps), spec.size))
            if why:
                self.m_rejected.inc()
                raise AtCapacity(why)
            sid = f"{self.id_prefix}{next(self._ids):x}{secrets.token_hex(4)}"
            session = Session(sid, spec, self.capacity.stream_cost(float(spec.fps), spec.size))
            self.sessions[sid] = session
        return session

    def open(self, spec: StreamSpec) -> Future:
        """Admit (raises :class:`AtCapacity` now) and make the stream's style on the
        scheduler thread; the future gives the :class:`Session`."""
        session = self.admit(spec)

        def bind():
            from t2v_rt.pipeline import Video

            try:
                session.video = Video(self.backend, spec.prompt, spec.seed)
            except BaseException:
                self._remove(session)
                raise
            return session

        return self.call(bind)

    def get(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None or s.state == CLOSED:
            raise StreamNotFound(f"no stream '{sid[:40]}' (it has ended, or never existed)")
        return s

    def set_prompt(self, sid: str, prompt: str, morph_seconds: float) -> Future:
        """Change a stream's prompt on the scheduler thread, morphing from the next frame not
        yet made. The prompt is checked first: a bad one raises and the stream goes on."""
        session = self.get(sid)
        if session.state in (ENDING, CLOSED):
            raise StreamGone(f"stream {sid} has ended")
        session.video.config.front_end().check(prompt)

        def change():
            start = float(session.times([session.next_index])[0])
            session.video.set_prompt(prompt, morph_seconds, start=start)
            return session

        return self.call(change)

    def attach(self, session: Session, viewer: Viewer) -> None:
        session.attach(viewer, time.monotonic())
        self._notify()

    def detach(self, session: Session, viewer: Viewer) -> None:
        viewer.abort()
        if session.detach(viewer):
            self._remove(session)

    def close_stream(self, sid: str) -> None:
        self._remove(self.get(sid))

    def call(self, fn: Callable) -> Future:
        """Run ``fn()`` on the scheduler thread between ticks; its result in the future."""
        fut: Future = Future()
        with self._lock:
            if self._stopping:
                fut.set_exception(UsageError("the server is shutting down"))
                return fut
            self._calls.append((fn, fut))
            self._wake.notify_all()
        return fut

    def _remove(self, session: Session) -> None:
        with self._lock:
            self.sessions.pop(session.id, None)
        session.close()

    def _notify(self) -> None:
        with self._lock:
            self._wake.notify_all()

    # --- the batching thread --------------------------------------------------------------

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, fut in calls:
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def _loop(self) -> None:
        last_cpu = time.monotonic()
        while True:
            self._run_calls()
            with self._lock:
                if self._stopping:
                    return
            now = time.monotonic()
            self._housekeeping(now)
            if now - last_cpu > 1.0:
                self.capacity.observe_cpu()
                last_cpu = now
            live = [s for s in list(self.sessions.values()) if s.state == LIVE]
            # how early a batch must start: its generation, then its frames' encoding spread
            # over the pool, and a little slack
            encode = self._enc_frame * max(1.0, sum(len(s.viewers) for s in live)
                                           / self.capacity.cores)
            lead = self._batch_s + encode + 0.005
            window = min((s.period for s in live), default=0.0)
            work, ks_total = [], 0
            for s in live:
                skipped = s.skipped
                ks = s.take_due(now + lead + window, now, self.max_behind,
                                self.max_batch - ks_total)
                if s.skipped != skipped:
                    self.m_skipped.inc(s.skipped - skipped)
                if ks:
                    work.append((s, ks))
                    ks_total += len(ks)
                if ks_total >= self.max_batch:
                    break
            if not work:
                self._sleep(now, lead)
                continue
            try:
                self._batch(work, now)
            except BaseException as e:  # noqa: BLE001 - a failed batch ends its streams, not the server
                self.log(f"error: generating a batch failed: {type(e).__name__}: {e}")
                for s, _ in work:
                    s.end()

    def _sleep(self, now: float, lead: float) -> None:
        due = [s.release(s.next_index) - lead for s in list(self.sessions.values())
               if s.state == LIVE and s.video is not None and not s.exhausted]
        timeout = min(due, default=now + 0.25) - time.monotonic()
        timeout = min(max(timeout, 0.0), 0.25)
        with self._lock:
            if not self._calls and not self._stopping and timeout > 0:
                self._wake.wait(timeout)

    def _batch(self, work: list[tuple[Session, list[int]]], gathered: float) -> None:
        # the viewers this batch is for (one attaching later starts after these frames)
        plan = [(s, ks, s.viewers_now()) for s, ks in work]
        on_device = self.backend.on_cuda and any(
            v.takes == "tensor" for _, _, viewers in plan for v in viewers)
        with self._generating(on_device):
            rows, feats = [], []
            for s, ks in work:
                t = s.times(ks)
                rows.append(s.video.style_rows(t))
                feats.append(s.video.features_at(t))
            t0 = time.perf_counter()
            if on_device:
                device, host, ready = self._device_batch(plan, _cat(rows), _cat(feats))
            else:
                device, ready = None, None
                host = self.backend.display(_cat(rows), _cat(feats))    # [N, R, R, 3] uint8
            dt = time.perf_counter() - t0
        n = sum(len(ks) for _, ks in work)
        self.capacity.observe_batch(n, dt)
        self._batch_s += 0.2 * (dt - self._batch_s)
        self.m_batch.observe(n)
        self.m_generated.inc(n)
        pixels = []
        at = 0
        for s, ks, viewers in plan:
            part = slice(at, at + len(ks))
            s.deliver(ks, None if host is None else host[part], gathered, viewers,
                      None if device is None else device[part], ready)
            # what the capacity model predicts: host (x264) encodes; a GPU encoder's CPU
            # cost is not in the model
            hosted = sum(1 for v in viewers if v.takes != "tensor")
            pixels += [s.spec.size * s.spec.size] * (len(ks) * hosted)
            at += len(ks)
            if s.exhausted:
                s.end()
        self.capacity.account(n, pixels)
        self._fps_window.append((time.monotonic(), n))

    def _device_batch(self, plan, rows, feats):
        """One ``backend.frames`` call for the whole batch, left on the device:
        (frames [N, 3, R, R], host uint8 RGB [N, R, R, 3] with only the rows of streams that
        have a host viewer filled (None when no stream has one), the generation's CUDA event
        or None). Waits for the generation to end, so the batch's measured time (the
        deadlines') is the GPU's, not the launch's; the encoders' streams still wait on the
        event, which is what orders their work after it."""
        frames = self.backend.frames(rows, feats)                # [N, 3, R, R] on the device
        ready = self._generation_done(frames)
        host = None
        spans, at = [], 0
        for s, ks, viewers in plan:
            if any(v.takes != "tensor" for v in viewers):
                spans.append((at, at + len(ks)))
            at += len(ks)
        # one conversion (one device-to-host copy) for the rows that need it
        if spans == [(0, at)]:
            host = to_display(frames)
        elif spans:
            idx = np.concatenate([np.arange(a, b) for a, b in spans])
            rgb = to_display(frames[_index(frames, idx)])
            host = np.zeros((at, *rgb.shape[1:]), np.uint8)
            host[idx] = rgb
        elif ready is not None:
            ready.synchronize()
        return frames, host, ready

    def _generating(self, on_device: bool):
        """The context a batch is generated in: the scheduler's own CUDA stream for a device
        batch on a CUDA GPU (the viewers' encoders run on theirs), else nothing."""
        import contextlib

        if not on_device:
            return contextlib.nullcontext()
        import torch

        if not torch.cuda.is_available():
            return contextlib.nullcontext()
        if self._gen_stream is None:
            self._gen_stream = torch.cuda.Stream()
        return torch.cuda.stream(self._gen_stream)

    def _generation_done(self, frames):
        """A CUDA event recorded on the current stream after ``frames`` were made (the
        encoders' streams wait on it), or None for frames not on a CUDA GPU."""
        if not getattr(frames, "is_cuda", False):
            return None
        import torch

        event = torch.cuda.Event()
        event.record()
        return event

    def _housekeeping(self, now: float) -> None:
        for s in list(self.sessions.values()):
            if s.state == PENDING and now - s.created > self.connect_timeout:
                self.log(f"stream {s.id}: nobody connected within {self.connect_timeout:g} s; "
                         "closed")
                self._remove(s)
            elif s.state == ENDING and not s.viewers:
                self._remove(s)
        w = self._fps_window
        while w and w[0][0] < now - 2.0:
            w.pop(0)
        self.m_fps.set(sum(n for _, n in w) / 2.0)


def _index(frames, idx: np.ndarray):
    """``idx`` as an index of ``frames`` (a tensor on its device, or the numpy array)."""
    if is_torch(frames):
        import torch

        return torch.as_tensor(idx, device=frames.device)
    return idx


def _probe_prompt(cfg) -> str:
    """A prompt the model's front end accepts, for warming up (model-agnostic: tries a few)."""
    front = cfg.front_end()
    for prompt in ("a red ball", "a ball", "a shape", "a video", ""):
        try:
            front.check(prompt)
            return prompt
        except Exception:  # noqa: BLE001
            continue
    return "a red ball"
