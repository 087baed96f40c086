"""The speed and shape probe quoted in docs/models/stylegan-v-shapes.md ("Three changes tried"):
for "a large red {circle, square, triangle} moving left and right {slowly, quickly} on a black
background", 12 seeds each, 2 s at 15 fps on the torch backend, the evaluator's own
measurements: the period fit (+1 fits the fast period only, -1 the slow one only), the fill
of the shape's box, and the shape and speed it reads.

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
            fits, fills, shapes, speeds = [], [], Counter(), Counter()
            for seed in range(12):
                m = A.measure(src(Sample(prompt, seed, {}, "canonical", False), times),
                              times.float())
                c = A.classify(m)
                if m.colour is not None:
                    fits.append(A._period_fit(m.times, m.cx.double(), m.cy.double()))
                    fills.append(float(m.fill.median()))
                shapes[c["shape"]] += 1
                speeds[c["speed"]] += 1
            print(f"{shape:8s} {speed:8s} period fit {np.mean(fits):+.2f} +- {np.std(fits):.2f}"
                  f"  fill {np.mean(fills):.2f}  shapes {dict(shapes)}  speeds {dict(speeds)}")


if __name__ == "__main__":
    main(sys.argv[1])
