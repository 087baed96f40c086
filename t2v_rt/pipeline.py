"""prompt -> text -> model (backend) -> frames -> encoder/muxer -> sink, paced in real time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from t2v_rt.backends.base import Backend
from t2v_rt.text.grammar import encode_tokens, parse_prompt
from t2v_rt.world.scene import latent_from_seed


@dataclass(frozen=True)
class StreamOptions:
    fps: Fraction = Fraction(30)
    size: int = 256
    frames: int | None = None     # None: forever
    realtime: bool = True
    batch: int = 16               # frames per generator call once the first frame is out


class Video:
    """One prompt + seed on one backend: frames at any times, in any batches."""

    def __init__(self, backend: Backend, prompt: str, seed: int):
        self.backend = backend
        self.prompt = parse_prompt(prompt)
        z = latent_from_seed(seed).unsqueeze(0)
        self.w = backend.style(encode_tokens(self.prompt), z)   # [1, S]

    def frames_at(self, t: torch.Tensor) -> torch.Tensor:
        """t [N] float64 seconds -> [N, 3, R, R] in [-1, 1]."""
        return self.backend.frames(self.w.expand(len(t), -1), t)

    def display_at(self, t: torch.Tensor) -> np.ndarray:
        """t [N] float64 seconds -> uint8 RGB [N, R, R, 3], as the encoder takes them."""
        return self.backend.display(self.w.expand(len(t), -1), t)


def frame_times(start: int, count: int, fps: Fraction) -> torch.Tensor:
    """Exact times of frames start..start+count-1, float64 seconds."""
    idx = torch.arange(start, start + count, dtype=torch.float64)
    return idx * fps.denominator / fps.numerator


def batches(total: int | None, first: int, rest: int) -> Iterator[tuple[int, int]]:
    """(start, count) of successive batches: ``first`` frames, then ``rest`` at a time."""
    start, count = 0, first
    while total is None or start < total:
        n = count if total is None else min(count, total - start)
        yield start, n
        start, count = start + n, rest


def run_stream(video: Video, write: Callable[[np.ndarray], None], opts: StreamOptions,
               stop: Callable[[], bool] | None = None) -> int:
    """Generate and hand frames to ``write``; returns the number of frames written.

    The first frame is generated alone and written at once; then frames come in batches. In
    real time, frame k is written no earlier than k / fps after the first. ``stop`` is
    polled before each frame; when it returns True the loop ends.
    """
    period = float(1 / opts.fps)
    t0 = None
    written = 0
    # In real time keep batches short (<= ~1/4 s of video) so pacing stays smooth.
    rest = opts.batch if not opts.realtime else max(1, min(opts.batch, int(opts.fps / 4)))
    for start, n in batches(opts.frames, 1, rest):
        frames = video.display_at(frame_times(start, n, opts.fps))
        for k in range(n):
            if stop is not None and stop():
                return written
            if opts.realtime and t0 is not None:
                delay = t0 + (start + k) * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            write(frames[k : k + 1])
            written += 1
            if t0 is None:
                t0 = time.monotonic()
    return written
