"""prompt -> text -> model (backend) -> frames -> encoder/muxer -> sink, paced in real time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from t2v_rt.backends.base import Backend, is_torch
from t2v_rt.errors import UsageError


def _rows(w, n: int):
    """Style ``w`` [1, S] as ``n`` rows (a view where the array type allows)."""
    if is_torch(w):
        return w.expand(n, -1)
    return np.broadcast_to(w, (n, w.shape[1]))


def _cat(parts: list):
    if parts and is_torch(parts[0]):
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


@dataclass(frozen=True)
class StreamOptions:
    fps: Fraction = Fraction(30)
    size: int = 256
    frames: int | None = None     # None: forever
    realtime: bool = True
    batch: int = 16               # frames per generator call once the first frame is out


class Video:
    """One prompt + seed on one backend, through the generator interface only
    (:mod:`t2v_rt.generators.interface`): the model's text front end and latent, its style
    once, then frames.

    A continuous-time generator gives frames at any times, in any order and batches (their
    features come from the config's ``time_features``, on the host). A recurrent one plays
    forward: the video keeps its state (on the backend's device) between batches, frame k at
    time t_k shows step floor(t_k * native_fps), steps between frames are run and the
    features of the shown ones kept, so any output frame rate maps onto the model's own and
    the cost per frame stays constant for hours.

    The prompt can change while the video plays (:meth:`set_prompt`): the style moves from the
    one on screen to the new prompt's over a set time, frame times running on, so the picture
    morphs with no gap, restart or timestamp jump. ``w`` is the current prompt's style; the
    rows of a batch come from :meth:`style_rows` (the morph's, where one is under way).
    """

    def __init__(self, backend: Backend, prompt: str, seed: int):
        self.backend = backend
        cfg = self.config = backend.config
        self.prompt = prompt
        # the style network's text input: token ids [1, L], or a sentence embedding [1, E]
        text = cfg.front_end().features([prompt])
        z = np.asarray(cfg.latent(seed), dtype=np.float32)[None]     # [1, Z]
        self._z = z
        self.w = backend.style(text, z)     # [1, S]
        # (start s, end s, w at start [1, S], w at end [1, S]); one tuple, swapped whole, so
        # a thread reading it between batches never sees half a morph
        self._morph: tuple | None = None
        self.t_last = 0.0                   # the latest frame time generated so far
        self.recurrent = cfg.FORM == "recurrent"
        if self.recurrent:
            self._state = backend.initial_state(self.w)     # before step 0
            self._next = 0                                  # the step the state produces next
            self._last = None                               # features of step _next - 1

    def steps_at(self, t) -> np.ndarray:
        """Recurrent generators: the step each time shows, [N] int64."""
        rate = float(self.config.native_fps)
        return np.floor(np.asarray(t, dtype=np.float64) * rate + 1e-6).astype(np.int64)

    def features_at(self, t):
        """t [N] float64 seconds -> the frames' features [N, F] (on the backend's device for a
        recurrent generator, on the host for a continuous one)."""
        if not self.recurrent:
            return self.config.time_features(t)
        steps = self.steps_at(t).tolist()
        out = []
        for s in steps:
            if s < self._next - 1 or (s == self._next - 1 and self._last is None):
                raise UsageError(f"a recurrent generator ({self.config.ARCH}) plays forward "
                                 f"only: step {s} is behind step {self._next - 1}")
            while self._next <= s:
                w = self.w if self._morph is None else self.style_rows(
                    np.array([self._next / float(self.config.native_fps)]))
                self._last, self._state = self.backend.step(w, self._state)
                self._next += 1
            out.append(self._last)
        return _cat(out) if out else np.empty((0, self.config.feature_dim), np.float32)

    def frames_at(self, t):
        """t [N] float64 seconds -> [N, 3, R, R] in [-1, 1] (the backend's array type)."""
        return self.backend.frames(self.style_rows(t), self.features_at(t))

    def display_at(self, t) -> np.ndarray:
        """t [N] float64 seconds -> uint8 RGB [N, R, R, 3], as the encoder takes them."""
        return self.backend.display(self.style_rows(t), self.features_at(t))

    def style_rows(self, t):
        """t [N] float64 seconds -> the style of each frame [N, S]: ``w``'s rows, or during a
        morph the old style eased into the new one (smoothstep: no jump in the picture's
        speed of change at either end). Records the latest time asked for."""
        t = np.asarray(t, dtype=np.float64)
        if len(t):
            self.t_last = max(self.t_last, float(t.max()))
        morph = self._morph
        if morph is None:
            return _rows(self.w, len(t))
        if len(t) and t.min() >= morph[1]:
            return _rows(morph[3], len(t))
        start, end, w0, w1 = morph
        a = np.clip((t - start) / max(end - start, 1e-9), 0.0, 1.0)
        a = (a * a * (3 - 2 * a)).astype(np.float32)[:, None]      # [N, 1]
        if is_torch(w0):
            import torch

            a = torch.from_numpy(a).to(device=w0.device, dtype=w0.dtype)
        return w0 + a * (w1 - w0)

    def set_prompt(self, prompt: str, morph_seconds: float = 1.0,
                   start: float | None = None) -> None:
        """Show ``prompt`` from now on, same seed: the style moves from what is on screen at
        ``start`` (default: the latest frame generated, so frames already made stay as they
        are) to the new prompt's over ``morph_seconds`` of video time (0: at once).

        A prompt the model cannot read raises :class:`UsageError` (the model's own one-line
        message) before anything changes: the video goes on with its old prompt.
        """
        if not 0 <= morph_seconds < float("inf"):
            raise UsageError(f"the morph time must be zero or a positive number of seconds, "
                             f"got {morph_seconds}")
        front = self.config.front_end()
        front.check(prompt)
        w_new = self.backend.style(front.features([prompt]), self._z)   # [1, S]
        start = self.t_last if start is None else float(start)
        w_from = self.style_rows(np.array([start]))[:1]
        if is_torch(w_from):
            w_from = w_from.clone()
        else:
            w_from = np.array(w_from)
        self._morph = (start, start + morph_seconds, w_from, w_new)
        self.w, self.prompt = w_new, prompt


def frame_times(start: int, count: int, fps: Fraction) -> np.ndarray:
    """Exact times of frames start..start+count-1, float64 seconds."""
    idx = np.arange(start, start + count, dtype=np.float64)
    return idx * fps.denominator / fps.numerator


def batches(total: int | None, first: int, rest: int) -> Iterator[tuple[int, int]]:
    """(start, count) of successive batches: ``first`` frames, then ``rest`` at a time."""
    start, count = 0, first
    while total is None or start < total:
        n = count if total is None else min(count, total - start)
        yield start, n
        start, count = start + n, rest


class _Pacer:
    """Hands frames to ``write`` in order; in real time frame k no earlier than k / fps after
    the first; ``stop`` polled before each frame. A real-time stream that falls behind (the
    frames come, or the reader takes them, slower than ``fps``) says so once through ``log``,
    with the rate it reaches."""

    LATE_S = 0.5          # behind by this much (after the first second): said once

    def __init__(self, opts: StreamOptions, stop: Callable[[], bool] | None, log=None):
        self.fps = opts.fps
        self.period = float(1 / opts.fps)
        self.realtime, self.stop, self.log = opts.realtime, stop, log
        self.t0: float | None = None
        self.written = 0
        self.warned = False

    def emit(self, index: int, write: Callable[[], None]) -> bool:
        """Write frame ``index``; False when stopped instead."""
        if self.stop is not None and self.stop():
            return False
        if self.realtime and self.t0 is not None:
            now = time.monotonic()
            delay = self.t0 + index * self.period - now
            if delay > 0:
                time.sleep(delay)
            elif -delay > self.LATE_S and not self.warned and now - self.t0 >= 1.0:
                self._behind(now)
        write()
        self.written += 1
        if self.t0 is None:
            self.t0 = time.monotonic()
        return True

    def _behind(self, now: float) -> None:
        self.warned = True
        if self.log is not None:
            rate = (self.written - 1) / (now - self.t0)
            self.log(f"falling behind real time: {rate:.1f} fps of the {float(self.fps):g} "
                     "asked (frames are made, or read, slower than that); lower --fps or "
                     "--size, use a faster backend, or pass --no-realtime")


def run_stream(video: Video, sink, opts: StreamOptions,
               stop: Callable[[], bool] | None = None, log=None) -> int:
    """Generate frames and hand them to ``sink`` (its ``write``); returns how many it wrote.

    The first frame is generated alone and written at once; then frames come in batches (in
    real time short ones, <= ~1/4 s of video, so pacing stays smooth). A sink that takes host
    RGB (``sink.takes == "rgb"``: x264, raw) gets the backend's uint8 display frames; one that
    takes tensors (the GPU encoders) gets the float frames where they are, through
    :func:`_run_overlapped`.
    """
    rest = opts.batch if not opts.realtime else max(1, min(opts.batch, int(opts.fps / 4)))
    if getattr(sink, "takes", "rgb") == "tensor":
        return _run_overlapped(video, sink, opts, stop, rest, log)
    pacer = _Pacer(opts, stop, log)
    for start, n in batches(opts.frames, 1, rest):
        frames = video.display_at(frame_times(start, n, opts.fps))
        for k in range(n):
            if not pacer.emit(start + k, lambda k=k, f=frames: sink.write(f[k : k + 1])):
                return pacer.written
    return pacer.written


def _run_overlapped(video: Video, sink, opts: StreamOptions, stop, rest: int, log=None) -> int:
    """Generation and encoding overlapped, double-buffered: this thread generates batch k + 1
    (on its own CUDA stream) while a writer thread converts and encodes batch k (on another),
    ordered by a CUDA event per batch. At most one batch waits between them. On the CPU the
    same two threads run without streams."""
    import contextlib
    import queue
    import threading

    import torch

    cuda = video.backend.on_cuda
    gen_stream = torch.cuda.Stream() if cuda else None
    enc_stream = torch.cuda.Stream() if cuda else None
    pending: queue.Queue = queue.Queue(maxsize=1)
    pacer = _Pacer(opts, stop, log)
    failure: list[BaseException] = []
    done = threading.Event()

    def on(stream):
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def writer() -> None:
        try:
            with on(enc_stream):
                while (item := pending.get()) is not None:
                    start, frames, ready = item
                    if ready is not None:
                        enc_stream.wait_event(ready)
                        frames.record_stream(enc_stream)   # not reused before encoding ends
                    for k in range(len(frames)):
                        if not pacer.emit(start + k, lambda k=k, f=frames: sink.write(f[k : k + 1])):
                            return
        except BaseException as e:  # noqa: BLE001 - raised again in the generating thread
            failure.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=writer, name="t2v-rt-encoder", daemon=True)
    thread.start()

    def hand_over(item) -> bool:
        while not done.is_set():
            try:
                pending.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for start, n in batches(opts.frames, 1, rest):
            if done.is_set():
                break
            with on(gen_stream):
                frames = video.frames_at(frame_times(start, n, opts.fps))
                ready = None
                if cuda:
                    ready = torch.cuda.Event()
                    ready.record(gen_stream)
            if not hand_over((start, frames, ready)):
                break
    finally:
        hand_over(None)
        thread.join()
    if failure:
        raise failure[0]
    return pacer.written
