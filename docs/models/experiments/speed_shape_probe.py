"""The speed and shape probe quoted in docs/models/stylegan-v-shapes.md ("Three changes tried"):
for "a large red {circle, square, triangle} moving left and right {slowly, quickly} on a black
background", 12 seeds each, 2 s at 15 fps on the torch backend, the evaluator's own
measurements: the period fit (+1 fits the fast period only, -1 the slow one only), the fill
of the shape's box, and the shape and speed it reads; then the frequency at the peak of the
spectrum of each track's x (30 frames: steps of 0.5 Hz), where the shape shows in every frame:
slow is 0.5 Hz, fast 1 Hz; 4 Hz is the alias of 1 Hz that a video discriminator sampling every
0.2 s (stride 3 at 15 fps) cannot tell from it (t2v_rt.training.trainer.aliasing_warning).

    python docs/models/experiments/speed_shape_probe.py MODEL   # a bundled name or a .safetensors
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import torch

from t2v_rt.backends import create_backend
from t2v_rt.generators.io import model_path
from t2v_rt.models.shapes import attributes as A
from t2v_rt.models.shapes.evaluate import Sample, model_source


def main(model: str) -> None:
    torch.set_num_threads(1)
    src = model_source(create_backend("torch", model_path(model)))
    times = torch.arange(30, dtype=torch.float64) / 15
    for shape in ("circle", "square", "triangle"):
        for speed in ("slowly", "quickly"):
            prompt = f"a large red {shape} moving left and right {speed} on a black background"
            fits, fills, shapes, speeds, peaks = [], [], Counter(), Counter(), Counter()
            for seed in range(12):
                m = A.measure(src(Sample(prompt, seed, {}, "canonical", False), times),
                              times.float())
                c = A.classify(m)
                if m.colour is not None:
                    fits.append(A._period_fit(m.times, m.cx.double(), m.cy.double()))
                    fills.append(float(m.fill.median()))
                    if len(m.times) == len(times):
                        x = m.cx.double().numpy()
                        amp = np.abs(np.fft.rfft(x - x.mean()))[1:]
                        hz = np.fft.rfftfreq(len(x), float(times[1] - times[0]))[1:]
                        peaks[float(hz[int(np.argmax(amp))])] += 1
                shapes[c["shape"]] += 1
                speeds[c["speed"]] += 1
            print(f"{shape:8s} {speed:8s} period fit {np.mean(fits):+.2f} +- {np.std(fits):.2f}"
                  f"  fill {np.mean(fills):.2f}  shapes {dict(shapes)}  speeds {dict(speeds)}"
                  f"  peak Hz {dict(sorted(peaks.items()))}")


if __name__ == "__main__":
    main(sys.argv[1])
