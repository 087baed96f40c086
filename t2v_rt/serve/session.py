"""One live stream (a :class:`Session`) and its readers (each a :class:`Viewer`).

A session is a prompt + seed at a frame rate and size: its :class:`~t2v_rt.pipeline.Video`
(style, morphs, a recurrent model's state), its clock (frame k is due at ``t0 + k / fps``) and
the frames the scheduler has made so far. The scheduler hands each batch's frames (uint8 RGB
at the model's resolution, [R, R, 3]) to every viewer of the session.

A viewer is one client on one transport. :class:`Viewer` holds what every transport shares: a
bounded queue of frames to send, serial work on the shared encoder pool (one job at a time per
viewer, so its frames stay in order), drops that touch this viewer only, and the per-frame
latency and lateness it reports. :class:`ContainerViewer` is the HTTP transport: H.264
through :mod:`t2v_rt.encode` (the same sinks as ``t2v-rt stream``) into a streamable container
(Matroska, MPEG-TS or NUT), bytes handed to the event loop through a :class:`ByteChannel`.

Each viewer has its own encoder, picked from the server's (:func:`serve_encoder`, once at
start): ``x264`` (host uint8 RGB frames; the viewer's ``takes`` is ``"rgb"``) or ``nvenc`` (one
NVENC session per viewer, fed the backend's float frames where they are, on the GPU:
``takes == "tensor"``). A viewer whose NVENC session cannot open (consumer GPUs cap concurrent
sessions) encodes with x264 instead; the scheduler logs it and counts it
(``t2v_rt_encoder_fallbacks_total``). Tensor frames come with the CUDA event the generation
recorded; the viewer's encoding runs on its own CUDA stream after that event.
Another transport is another subclass with its own ``_encode``/``_close``/``backlogged``: the
browser's (fragmented MP4 for MSE, MJPEG) are in :mod:`t2v_rt.serve.transports`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from t2v_rt.errors import T2VError, UsageError

PENDING, LIVE, ENDING, CLOSED = "pending", "live", "ending", "closed"

# what ``t2v-rt serve --encoder`` takes (nvjpeg is left out on purpose: the server's H.264
# containers would silently become MJPEG on GPUs without NVENC)
SERVE_ENCODERS = ("auto", "x264", "nvenc")


def serve_encoder(name: str, on_cuda: bool, log: Callable[[str], None] | None = None) -> str:
    """The server's encoder, ``nvenc`` or ``x264``, through the ``stream`` command's chain
    (:func:`t2v_rt.encode.encoders.choose_encoder`): ``auto`` is NVENC where it can run (the
    frames are on a CUDA GPU whose driver has NVENC), else libx264, saying why it skipped
    NVENC on a GPU; a named encoder that cannot run here is the same one-line refusal as
    ``stream --encoder``."""
    from t2v_rt.encode.encoders import choose_encoder, encoder_problem

    if name not in SERVE_ENCODERS:
        raise UsageError(f"unknown encoder '{name[:20]}' for serve; choose one of: "
                         f"{', '.join(SERVE_ENCODERS)}")
    if name != "auto":
        return choose_encoder(name, "matroska", on_cuda, log)
    why = encoder_problem("nvenc", "matroska", on_cuda) if on_cuda else "not on a CUDA GPU"
    if why is None:
        return "nvenc"
    chosen = choose_encoder("x264", "matroska", on_cuda, log)
    if on_cuda and log:
        log(f"encoder auto: x264 (skipped nvenc: {why})")
    return chosen


class StreamNotFound(UsageError):
    """No stream with that id (never made, or already closed). HTTP 404."""

    status = 404


class StreamGone(UsageError):
    """The stream has ended or is ending: nothing more to read. HTTP 410."""

    status = 410


class AtCapacity(T2VError):
    """Admitting one more stream would slow down the ones playing. HTTP 503 + Retry-After."""

    exit_code = 2
    status = 503

    def __init__(self, message: str, retry_after: int = 2):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class StreamSpec:
    prompt: str
    seed: int = 0
    fps: Fraction = Fraction(30)
    size: int = 256
    frames: int | None = None        # None: until closed


class Session:
    """One live stream. Its frame clock starts when its first viewer attaches; it closes
    when its last viewer leaves, when its frames are all sent, or when nobody attaches
    within the scheduler's connect timeout."""

    def __init__(self, sid: str, spec: StreamSpec, cost: float):
        self.id, self.spec = sid, spec
        self.cost = cost                  # predicted CPU-seconds per second (admission)
        self.video = None                 # t2v_rt.pipeline.Video, made on the scheduler thread
        self.state = PENDING
        self.created = time.monotonic()
        self.t0: float | None = None      # monotonic time frame 0 was due
        self.next_index = 0               # the next frame to generate
        self.period = float(1 / spec.fps)
        self.viewers: list[Viewer] = []
        self.generated = 0
        self.skipped = 0                  # frames the scheduler fell too far behind to make
        self.lock = threading.Lock()

    # --- clock ----------------------------------------------------------------------------

    def release(self, k: int) -> float:
        """When frame k is due on the monotonic clock (exact rational rate)."""
        return self.t0 + k * self.spec.fps.denominator / self.spec.fps.numerator

    def times(self, ks: list[int]) -> np.ndarray:
        """Video times of frames ``ks`` [N] float64 seconds (continuous across prompt changes)."""
        f = self.spec.fps
        return np.asarray(ks, dtype=np.float64) * f.denominator / f.numerator

    def take_due(self, horizon: float, now: float, max_behind: float, limit: int) -> list[int]:
        """The frames due by ``horizon`` not made yet, at most ``limit``. A stream more than
        ``max_behind`` seconds behind its clock skips ahead to now (counted in ``skipped``):
        a live stream stays live."""
        if self.state != LIVE or self.video is None:
            return []
        k = self.next_index
        if self.release(k) < now - max_behind:
            ahead = int((now - self.t0) * self.spec.fps)
            if self.spec.frames is not None:
                ahead = min(ahead, self.spec.frames - 1)
            if ahead > k:
                self.skipped += ahead - k
                k = ahead
        ks = []
        while len(ks) < limit and self.release(k) <= horizon and (
                self.spec.frames is None or k < self.spec.frames):
            ks.append(k)
            k += 1
        self.next_index = k
        return ks

    @property
    def exhausted(self) -> bool:
        return self.spec.frames is not None and self.next_index >= self.spec.frames

    # --- viewers --------------------------------------------------------------------------

    def attach(self, viewer: Viewer, now: float) -> None:
        with self.lock:
            if self.state not in (PENDING, LIVE):
                raise StreamGone(f"stream {self.id} has ended")
            if self.t0 is None:
                self.t0 = now
                self.state = LIVE
            viewer.first_index = self.next_index
            self.viewers.append(viewer)

    def detach(self, viewer: Viewer) -> bool:
        """Remove ``viewer``; True when it was the last one (the session should close)."""
        with self.lock:
            if viewer in self.viewers:
                self.viewers.remove(viewer)
            return not self.viewers and self.state != PENDING

    def viewers_now(self) -> list[Viewer]:
        with self.lock:
            return list(self.viewers)

    def deliver(self, ks: list[int], frames: np.ndarray | None, gathered: float,
                viewers: list[Viewer] | None = None, device=None, ready=None) -> None:
        """Frames ``ks``, made in a batch started at ``gathered`` (monotonic), to ``viewers``
        (default: every viewer now): ``frames`` [len(ks), R, R, 3] uint8 on the host to those
        that take RGB, ``device`` [len(ks), 3, R, R] (the backend's frames where they are,
        ``ready`` the CUDA event after their generation, or None) to those that take tensors.
        A viewer that attached after these frames were taken gets none of them."""
        self.generated += len(ks)
        if viewers is None:
            viewers = self.viewers_now()
        for v in viewers:
            tensor = v.takes == "tensor"
            batch = device if tensor else frames
            if batch is None:
                raise RuntimeError(f"no {'device' if tensor else 'host'} frames for a viewer "
                                   f"that takes {v.takes}")
            for k, frame in zip(ks, batch):
                if k >= v.first_index:
                    v.push(k, frame, self.release(k), gathered, ready if tensor else None)

    def end(self) -> None:
        """No more frames: each viewer finishes its stream (container trailer) and ends."""
        with self.lock:
            if self.state in (ENDING, CLOSED):
                return
            self.state = ENDING
            viewers = list(self.viewers)
        for v in viewers:
            v.finish()

    def close(self) -> None:
        """Gone for good: viewers still attached stop at once."""
        with self.lock:
            self.state = CLOSED
            viewers, self.viewers = list(self.viewers), []
        for v in viewers:
            v.abort()

    def info(self) -> dict:
        dropped = sum(v.dropped_total for v in self.viewers)
        return {"id": self.id, "prompt": self.video.prompt if self.video else self.spec.prompt,
                "seed": self.spec.seed, "fps": float(self.spec.fps),
                "fps_exact": f"{self.spec.fps.numerator}/{self.spec.fps.denominator}",
                "size": self.spec.size, "frames": self.spec.frames, "state": self.state,
                "frames_generated": self.generated, "frames_skipped": self.skipped,
                "viewers": len(self.viewers), "frames_dropped": dropped,
                "encoders": [v.encoder for v in list(self.viewers)]}


class ViewerStats:
    """Where a viewer reports frames sent, late, dropped and their latency (the scheduler's
    metrics, shared by all viewers)."""

    def frame_out(self, latency: float, late: bool) -> None: ...

    def dropped(self, reason: str) -> None: ...

    def encoder_fallback(self, viewer: Viewer, wanted: str, error: BaseException) -> None:
        """``viewer`` could not open encoder ``wanted`` (``error``) and uses x264 instead."""


class Viewer:
    """One reader of a session on one transport.

    ``push`` (the scheduler thread; never blocks) queues a frame; at most ``max_queue`` wait,
    the oldest dropped beyond that. Work runs on the shared ``pool``, one job at a time per
    viewer. A transport that cannot take more (``backlogged``: its reader is slow) has further
    frames dropped before encoding, so the stream it gets stays decodable and in real time
    (timestamps keep counting) and no other viewer or stream waits for it.

    ``takes`` says which frames the scheduler hands it: ``"rgb"`` (host uint8 [R, R, 3]) or
    ``"tensor"`` (the backend's float [3, R, R] on its device, with the generation's CUDA
    event); ``encoder`` names what encodes them (shown per viewer in the stream's info).
    """

    takes = "rgb"
    encoder = "x264"

    def __init__(self, session: Session, pool: Executor, stats: ViewerStats, max_queue: int = 8):
        self.session, self.pool, self.stats = session, pool, stats
        self.max_queue = max_queue
        self.first_index = 0
        self.period = session.period
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._running = False
        self._ending = False       # finish(): send what is queued, then close
        self._aborted = False      # abort(): close now
        self._closed = False
        self.frames_sent = 0
        self._anchor: float | None = None     # monotonic time the reader's frame 0 is shown
        self.dropped = {"slow_reader": 0, "queue_full": 0}
        self.failure: BaseException | None = None
        self._cuda_stream = None   # this viewer's own CUDA stream (tensor frames on a GPU)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    # --- the scheduler's side --------------------------------------------------------------

    def push(self, k: int, rgb: np.ndarray, release: float, gathered: float,
             ready=None) -> None:
        """Frame ``k`` (rgb [R, R, 3] uint8, or for a viewer that takes tensors the backend's
        [3, R, R] and ``ready``, the CUDA event recorded after its generation), due at
        ``release``, its batch started at ``gathered`` (both monotonic)."""
        with self._lock:
            if self._ending or self._aborted:
                return
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.dropped["queue_full"] += 1
                self.stats.dropped("queue_full")
            self._queue.append((k, rgb, release, gathered, ready))
            self._kick()

    def finish(self) -> None:
        with self._lock:
            self._ending = True
            self._kick()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            self._queue.clear()
            self._kick()

    def _kick(self) -> None:   # under self._lock
        if not self._running and not self._closed:
            self._running = True
            try:
                self.pool.submit(self._work)
            except RuntimeError:        # the pool has shut down: the server is stopping
                self._running = False

    # --- the pool's side -----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._aborted or (self._ending and not self._queue):
                    item = None
                elif self._queue:
                    item = self._queue.popleft()
                else:
                    self._running = False
                    return
            if item is None:
                self._shut()
                return
            k, rgb, _release, gathered, ready = item
            try:
                if self.backlogged():
                    self.dropped["slow_reader"] += 1
                    self.stats.dropped("slow_reader")
                    continue
                with self._after_generation(rgb, ready):
                    self._encode(k - self.first_index, rgb)
            except BaseException as e:  # noqa: BLE001 - the viewer ends; the server goes on
                self.failure = e
                with self._lock:
                    self._aborted = True
                continue
            self.frames_sent += 1
            now = time.monotonic()
            # late: after the reader's clock says it is shown. A player starts its clock at
            # the first frame it gets, so that is the anchor (the first frame is never late),
            # with one frame period of slack.
            due = (k - self.first_index) * self.period
            if self._anchor is None:
                self._anchor = now - due
            self.stats.frame_out(now - gathered, now > self._anchor + due + self.period)

    def _shut(self) -> None:
        with self._lock:
            if self._closed:
                self._running = False
                return
            self._closed = True
        try:
            self._close(clean=not self._aborted)
        except BaseException as e:  # noqa: BLE001
            self.failure = self.failure or e
        finally:
            with self._lock:
                self._running = False

    @contextlib.contextmanager
    def _after_generation(self, frame, ready):
        """Around one frame's encoding: with a CUDA event ``ready`` (tensor frames on a GPU),
        the work runs on this viewer's own CUDA stream, queued after the generation that made
        ``frame``, and ``frame``'s memory is kept from reuse until that work is done; else
        nothing."""
        if ready is None:
            yield
            return
        import torch

        if self._cuda_stream is None:
            self._cuda_stream = torch.cuda.Stream(frame.device)
        stream = self._cuda_stream
        with torch.cuda.stream(stream):
            stream.wait_event(ready)
            frame.record_stream(stream)
            yield

    def _open_encoder(self, wanted: str, factories: dict[str, Callable[[], object]]):
        """(sink, name): ``factories[wanted]()``; a GPU encoder that cannot open (NVENC's
        session cap, a driver error) falls back to ``factories["x264"]()`` for this viewer
        only, reported to the stats (one log line, ``t2v_rt_encoder_fallbacks_total``)."""
        try:
            return factories[wanted](), wanted
        except Exception as e:  # noqa: BLE001 - any failure to open: x264 instead
            if wanted == "x264":
                raise
            self.stats.encoder_fallback(self, wanted, e)
            return factories["x264"](), "x264"

    # --- what a transport implements -------------------------------------------------------

    def backlogged(self) -> bool:
        """The reader has not taken what was already sent (drop instead of queueing more)."""
        return False

    def _encode(self, pts: int, rgb: np.ndarray) -> None:
        """Send frame ``rgb`` [R, R, 3] uint8 with timestamp ``pts`` (in frame periods)."""
        raise NotImplementedError

    def _close(self, clean: bool) -> None:
        """End the transport: ``clean``, after the last frame (write the container's end);
        else at once."""


class ByteChannel:
    """Bytes from a worker thread (PyAV's muxer calls ``write``) to an asyncio reader (the HTTP
    response), with no lock held across the loop. Counts frames the reader has not taken
    yet (``lag``), which is how a slow reader is told apart."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._chunks: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._event = asyncio.Event()
        self._wake_pending = False
        self.closed = False
        self.bytes_written = 0
        self.frames_in = 0
        self.frames_taken = 0

    # worker side
    def write(self, data) -> int:
        b = bytes(data)
        with self._lock:
            self._chunks.append(b)
            self.bytes_written += len(b)
        self._wake()
        return len(b)

    def frame_done(self) -> None:
        with self._lock:
            self.frames_in += 1

    @property
    def lag(self) -> int:
        return self.frames_in - self.frames_taken

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._set)
        except RuntimeError:       # the loop is closed: nobody is reading
            pass

    def _set(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._event.set()

    # loop side
    async def read(self) -> bytes | None:
        """Everything written since the last read, or None once closed and drained."""
        while True:
            with self._lock:
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    self.frames_taken = self.frames_in
                    return data
                if self.closed:
                    return None
            await self._event.wait()
            self._event.clear()


CONTAINERS = {"matroska": "video/x-matroska", "mpegts": "video/mp2t", "nut": "video/x-nut"}


def _x264_container_sink(target, fmt: str, fps: Fraction, size: int, options=None):
    """libx264 through PyAV (the ``stream`` command's sink), one thread: the server's
    parallelism is across streams, and x264's slice threads cost more in hand-offs than they
    save at these sizes (256 x 256 on the 2-core CPU: 0.53 ms wall per frame with one thread,
    3.7 ms with its default threads)."""
    from t2v_rt.encode.encoders import open_sink

    sink = open_sink("x264", target, fmt, fps, size, options)
    sink.stream.options = {**sink.stream.options, "threads": "1"}
    return sink


def _nvenc_container_sink(target, fmt: str, fps: Fraction, size: int, options=None):
    """One NVENC session (the ``stream`` command's NVENC sink): CUDA frames in, packets muxed
    into the container without re-encoding."""
    from t2v_rt.encode.encoders import NvencSink
    from t2v_rt.encode.sink import EncoderOptions

    return NvencSink(target, fmt, fps, (size, size), options or EncoderOptions())


# encoder name -> the sink of a ContainerViewer (a table, so a test can stand in for NVENC)
CONTAINER_SINKS: dict[str, Callable] = {"x264": _x264_container_sink,
                                        "nvenc": _nvenc_container_sink}


class ContainerViewer(Viewer):
    """The HTTP transport: H.264 in a streamable container, written to a :class:`ByteChannel`
    the response reads; encoded by the server's encoder (``encoder``: ``x264``, one thread, or
    ``nvenc``, one session of this viewer's own; see :data:`CONTAINER_SINKS`)."""

    def __init__(self, session: Session, pool: Executor, stats: ViewerStats,
                 loop: asyncio.AbstractEventLoop, fmt: str = "matroska", max_lag_s: float = 1.0,
                 options=None, encoder: str = "x264"):
        super().__init__(session, pool, stats)
        self.fmt = fmt
        self.channel = ByteChannel(loop)
        self.max_lag = max(2, round(max_lag_s * float(session.spec.fps)))
        spec = session.spec
        self.sink, self.encoder = self._open_encoder(encoder, {
            name: (lambda f=f: f(self.channel, fmt, spec.fps, spec.size, options))
            for name, f in CONTAINER_SINKS.items()})
        self.takes = getattr(self.sink, "takes", "rgb")
        self.media_type = CONTAINERS[fmt]

    def backlogged(self) -> bool:
        return self.channel.lag >= self.max_lag

    def _encode(self, pts: int, frame) -> None:
        # the sink stamps frames with its index (a GPU sink's muxer holds it)
        getattr(self.sink, "packets", self.sink).index = pts
        self.sink.write(frame[None])
        self.channel.frame_done()

    def _close(self, clean: bool) -> None:
        try:
            if clean:
                self.sink.close()
            else:
                # the reader is gone: end the muxer without waiting for anyone
                self.channel.closed = True
                self.sink.close()
        finally:
            self.channel.close()
