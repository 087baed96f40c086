"""How a run's squares and circles changed while it trained, read from its sample videos
(docs/models/stylegan-v-shapes.md, "Squares and circles, by size").

A training run writes ``samples-N.mp4`` every 500 steps: a grid of its first distinct
captions (``samples.txt``), seed i for caption i, rows of 4. For every sample video and every
caption that names a circle or a square (circle, ball, disc; square, box), this reads the
grid's cell with the evaluator: the fill of the shape's box (median over frames; square 1.0,
circle 0.785, read as a square above 0.893) and the shape it reads. The videos are H.264,
which the evaluator reads as it reads the data's.

    python docs/models/experiments/samples_fill.py RUN
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trained_discriminator_probe import FAMILY, shape_word  # noqa: E402

from t2v_rt.models.shapes import attributes as A  # noqa: E402


def cells(run: Path) -> dict[int, str]:
    """Grid index -> "circle" or "square", for the sample captions that name one."""
    out = {}
    for line in (run / "samples.txt").read_text().splitlines():
        m = re.match(r"(\d+): (.*)", line)
        if m:
            words = m[2].split()
            at = shape_word(words)
            if at is not None and FAMILY[words[at]] != "triangle":
                out[int(m[1])] = FAMILY[words[at]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--side", type=int, default=64, help="a cell's side in pixels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    want = cells(args.run)
    print("step     " + "  ".join(f"{i}:{s:6s}" for i, s in want.items()))
    for path in sorted(args.run.glob("samples-*.mp4")):
        with av.open(str(path)) as c:
            rate = float(c.streams.video[0].average_rate)
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        times = torch.arange(video.shape[0]) / rate
        row = []
        for i in want:
            y, x, s = i // 4, i % 4, args.side
            m = A.measure(video[:, :, y * s:(y + 1) * s, x * s:(x + 1) * s], times)
            shape = A.classify(m)["shape"] or "-"
            fill = float(m.fill.median()) if m.colour is not None else float("nan")
            row.append(f"{fill:.2f} {shape[:2]:4s}")
        print(f"{int(path.stem.split('-')[1]):<8d} " + "  ".join(row))


if __name__ == "__main__":
    main()
