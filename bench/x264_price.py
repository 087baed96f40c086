"""The serve capacity model's price of an x264 frame against x264's measured cost, by content.

    python bench/x264_price.py [--sizes 1024,2048] [--frames 8] [--repeats 8]

`t2v-rt serve` calibrates x264 at start-up on the bundled model's frames (64, 256 and 1024,
t2v_rt/serve/scheduler.py) and prices a frame of size S at ``e0 + e1 * S^2`` CPU-seconds.
This measures, with one x264 thread and thread CPU time (median of ``--frames`` frames after a
warm-up frame), what a frame really costs at each size for two contents: the model's frames
(another prompt, a fresh seed: what serve encodes) and a shape on uniform noise (the costliest
content for x264). Reports the ratio measured / predicted per content and size. Then it
repeats serve's own calibration measurement (16 frames of its probe prompt, at 256 and 1024)
``--repeats`` times and reports each run's mean and median: how much the price moves between
identical runs, and whether single slow frames move it. Writes
bench/results/x264_price-{cpu,gpu}.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction

import numpy as np

from common import write_result


class _Null:
    def write(self, data) -> int:
        return len(data)


def _costs(rgb: np.ndarray, size: int, frames: int) -> list[float]:
    from t2v_rt.encode.encoders import open_sink

    sink = open_sink("x264", _Null(), "matroska", Fraction(30), size)
    sink.stream.options = {**sink.stream.options, "threads": "1"}
    sink.write(rgb[:1])
    costs = []
    for i in range(frames):
        c0 = time.thread_time()
        sink.write(rgb[i % len(rgb):][:1])
        costs.append(time.thread_time() - c0)
    sink.close()
    return costs


def _cost(rgb: np.ndarray, size: int, frames: int) -> float:
    return float(np.median(_costs(rgb, size, frames)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8,
                    help="also repeat serve's calibration measurement (16 frames of its probe "
                         "prompt at 256 and 1024) this many times: the mean and the median of "
                         "each run, to show how much the price moves between identical runs")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from t2v_rt.backends import create_backend
    from t2v_rt.pipeline import Video, frame_times
    from t2v_rt.serve.scheduler import Scheduler, _probe_prompt

    backend = create_backend("onnxruntime")
    sched = Scheduler(backend, workers=1)
    try:
        calibration = sched.calibrate()
        cap = sched.capacity
        rng = np.random.default_rng()
        video = Video(backend, "a large blue square moving diagonally quickly on a white "
                      "background", int(rng.integers(1, 2**31)))
        t = frame_times(0, 8, Fraction(30))
        contents = {"model_frames": backend.display(video.style_rows(t), video.features_at(t))}
        noise = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
        noise[:, 16:48, 16:48] = (200, 30, 30)
        contents["noise_and_shape"] = noise
        rows = []
        for name, rgb in contents.items():
            for size in sizes:
                predicted = cap.enc0 + cap.enc1 * size * size
                measured = _cost(rgb, size, args.frames)
                rows.append({"content": name, "size": size, "predicted_ms": 1e3 * predicted,
                             "measured_ms": 1e3 * measured, "ratio": measured / predicted})
                print(f"{name:16s} {size:5d}: measured {1e3 * measured:6.2f} ms, predicted "
                      f"{1e3 * predicted:6.2f} ms, ratio {measured / predicted:.2f}",
                      file=sys.stderr)
        probe = Video(backend, _probe_prompt(backend.config), 0)
        probe_rgb = backend.display(probe.style_rows(t), probe.features_at(t))
        repeats = []
        for size in (256, 1024):
            for _ in range(args.repeats):
                costs = _costs(probe_rgb, size, 16)
                repeats.append({"size": size, "mean_ms": 1e3 * float(np.mean(costs)),
                                "median_ms": 1e3 * float(np.median(costs))})
            runs = [r for r in repeats if r["size"] == size]
            if runs:
                print(f"calibration content {size:5d}, {len(runs)} runs of 16 frames: mean "
                      + " ".join(f"{r['mean_ms']:.2f}" for r in runs) + " ms; median "
                      + " ".join(f"{r['median_ms']:.2f}" for r in runs) + " ms",
                      file=sys.stderr)
    finally:
        sched.stop()
        backend.close()
    path = write_result("x264_price", {"calibration_ms": calibration, "rows": rows,
                                       "frames": args.frames, "repeats": repeats})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
