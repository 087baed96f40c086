"""Admission by measured capacity: a stream is let in only if, by what this server has
measured, every stream (the new one too) keeps its frame rate.

Two resources bound it:

- the scheduler thread, which runs every generator call in turn: the streams' frames per
  second times the generator's measured wall time per frame (at the batch sizes it runs)
  must fit in one second, less the margin;
- the machine's cores, which run the generator and every stream's encoder: the streams'
  CPU-seconds per second must fit in the cores, less the margin. A stream's cost is
  ``fps * (g + e0 + e1 * pixels)``: generation per frame ``g`` and encoding per frame at its
  output size (x264, one thread per stream), both measured as CPU time at start (process and
  thread CPU time, so other programs slowing the machine do not inflate them), then scaled in
  operation by what the process really spends against what the model predicted for the same
  work (windows of a few seconds), which also covers HTTP, muxing and Python overhead.

And a guard: while more than 1 % of the frames sent in the last 5 s were late (at least 5 of at
least 150), nothing new is admitted, whatever the model says.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CapacityModel:
    def __init__(self, cores: int | None = None, margin: float = 0.2, late_limit: float = 0.01):
        self.cores = cores or usable_cores()
        self.margin = margin
        self.late_limit = late_limit
        self.gen_wall = 2e-3         # generator wall seconds per frame (EMA): the serial bound
        self.gen_cpu = 2e-3 * self.cores   # generator CPU-seconds per frame (calibrated)
        self.enc0, self.enc1 = 3e-4, 5e-9   # encode CPU-seconds per frame: e0 + e1 * pixels
        self.correction = 1.0        # measured / predicted CPU, EMA, clamped
        self._lock = threading.Lock()
        self._window: deque = deque()    # (time, frames_out, late)
        self._predicted = 0.0        # CPU-seconds the model predicts for the work done so far
        self._cpu_mark: tuple[float, float, float] | None = None   # (wall, process cpu, predicted)

    # --- the model ------------------------------------------------------------------------

    def base_cost(self, size: int) -> float:
        """CPU-seconds of one frame at ``size`` x ``size`` by the calibrated parts alone."""
        return self.gen_cpu + self.enc0 + self.enc1 * size * size

    def frame_cost(self, size: int) -> float:
        """Predicted CPU-seconds of one frame at ``size`` x ``size``, everything included."""
        return self.base_cost(size) * self.correction

    def stream_cost(self, fps: float, size: int) -> float:
        return fps * self.frame_cost(size)

    def check(self, streams: list[tuple[float, int]], new: tuple[float, int]) -> str | None:
        """None if ``new`` (fps, size) fits beside ``streams``, else why not (one line)."""
        every = [*streams, new]
        cpu = sum(self.stream_cost(f, s) for f, s in every)
        budget = self.cores * (1 - self.margin)
        if cpu > budget:
            return (f"at capacity: {len(every)} streams would need {cpu:.2f} of the "
                    f"{self.cores} cores (measured; {budget:.2f} usable)")
        serial = sum(f for f, _ in every) * self.gen_wall
        if serial > 1 - self.margin:
            return (f"at capacity: the generator would be busy {100 * serial:.0f} % of the "
                    f"time (measured {1e3 * self.gen_wall:.2f} ms per frame)")
        late = self.late_fraction()
        if late > self.late_limit:
            return (f"at capacity: {100 * late:.1f} % of recent frames were late "
                    f"(limit {100 * self.late_limit:.0f} %)")
        return None

    # --- measurements ---------------------------------------------------------------------

    def calibrate(self, gen_wall: float, gen_cpu: float, enc: dict[int, float]) -> None:
        """From the start-up run (nothing else running in the process): generator wall and
        CPU seconds per frame; encode CPU seconds per frame per size (at least two sizes;
        the line through the smallest and the largest: x264's cost per pixel grows with the
        size, so a line through small sizes alone underprices large streams)."""
        self.gen_wall, self.gen_cpu = gen_wall, gen_cpu
        ordered = sorted(enc.items())
        (s0, c0), (s1, c1) = ordered[0], ordered[-1]
        self.enc1 = max((c1 - c0) / (s1 * s1 - s0 * s0), 0.0)
        self.enc0 = max(c0 - self.enc1 * s0 * s0, 0.0)

    def observe_batch(self, frames: int, wall: float) -> None:
        if frames:
            w = min(1.0, frames / 32)
            self.gen_wall += 0.2 * w * (wall / frames - self.gen_wall)

    def observe_frames(self, now: float, sent: int, late: int) -> None:
        with self._lock:
            self._window.append((now, sent, late))
            while self._window and self._window[0][0] < now - 5.0:
                self._window.popleft()

    def late_fraction(self) -> float:
        with self._lock:
            sent = sum(s for _, s, _ in self._window)
            late = sum(x for _, _, x in self._window)
        # a few late frames among few are noise (a busy moment), not a measurement
        return late / sent if sent >= 150 and late >= 5 else 0.0

    def account(self, generated: int, encoded_pixels: list[int]) -> None:
        """What the model predicts the work just done cost (generation of ``generated``
        frames, encoding of frames of these pixel counts), summed for :meth:`observe_cpu`."""
        cost = generated * self.gen_cpu
        cost += sum(self.enc0 + self.enc1 * px for px in encoded_pixels)
        with self._lock:
            self._predicted += cost

    def observe_cpu(self) -> None:
        """Every few seconds: scale the model by the process's real CPU time over the
        predicted one for the same work (HTTP, muxing, Python, contention included)."""
        now, cpu = time.monotonic(), time.process_time()
        with self._lock:
            predicted = self._predicted
        mark = self._cpu_mark
        if mark is None:
            self._cpu_mark = (now, cpu, predicted)
            return
        if now - mark[0] < 2.0:
            return
        self._cpu_mark = (now, cpu, predicted)
        work = predicted - mark[2]
        if work < 0.05 * (now - mark[0]):     # too little to measure
            return
        ratio = min(3.0, max(0.3, (cpu - mark[1]) / work))
        self.correction += 0.3 * (ratio - self.correction)

    def describe(self) -> dict:
        return {"cores": self.cores, "margin": self.margin,
                "generator_ms_per_frame": round(1e3 * self.gen_wall, 3),
                "frame_cost_ms_cpu_at_256": round(1e3 * self.frame_cost(256), 3),
                "correction": round(self.correction, 3),
                "late_fraction": round(self.late_fraction(), 4),
                "capacity_fps_at_256": round(self.cores * (1 - self.margin)
                                             / self.frame_cost(256), 1)}
