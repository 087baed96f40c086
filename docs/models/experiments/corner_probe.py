"""Does a training run's frame discriminator see a square's corners?
(docs/models/stylegan-v-shapes.md, "The last 25 minutes".)

On real data frames whose caption names a square ("square" or "box"): the square's corners
are rounded in place, keeping its box, colour and background, to a corner radius of a
fraction ``k`` of its half-width (fill of the box ``1 - (1 - pi/4) k^2``: k = 1 is the
inscribed circle, fill 0.785; k = 0.89 fills 0.83, what the generator's squares fill). For
each ``k``, the share of frames where the frame discriminator, under the frame's own
caption, scores the real square above its rounded copy (``out(phi) + <phi, text>``, the
logit the generator is trained against), and the mean margin of the two logits. If that
share is near 0.5 at k = 0.89, the discriminator cannot tell the generator's squares from
real ones by their corners, and gives the generator no push towards them.

The shape is the pixels that differ from the background (the colour of the frame's four
corner pixels) by more than 24 in the sum over RGB; frames whose shape touches the border,
or is under 6 pixels wide or tall, are skipped. No training; one thread, seconds.

    python docs/models/experiments/corner_probe.py RUN/checkpoint-N.safetensors [--frames 400]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trained_discriminator_probe import load_trainer  # noqa: E402

from t2v_rt.training.trainer import _to_float  # noqa: E402

SQUARE_WORDS = {"square", "box"}
RADII = (0.5, 0.7, 0.89, 1.0)


def round_corners(frame: np.ndarray, k: float) -> np.ndarray | None:
    """``frame`` [H, W, 3] uint8 with its shape's corners rounded to radius ``k`` x the
    half-width (the shorter half-side), or None when the shape cannot be measured."""
    h, w, _ = frame.shape
    corners = frame[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    bg = corners[0]
    if np.abs(corners - bg).sum(1).max() > 12:           # no uniform background
        return None
    mask = np.abs(frame.astype(int) - bg).sum(2) > 24
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    if y0 == 0 or x0 == 0 or y1 == h - 1 or x1 == w - 1 or y1 - y0 < 5 or x1 - x0 < 5:
        return None
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    a, b = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    r = k * min(a, b)
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = np.abs(xx + 0.5 - (cx + 0.5)), np.abs(yy + 0.5 - (cy + 0.5))
    ex, ey = np.maximum(dx - (a - r), 0), np.maximum(dy - (b - r), 0)
    outside = ex ** 2 + ey ** 2 > r ** 2
    out = frame.copy()
    out[mask & outside] = bg
    return out


def square_frames(tr, n: int) -> tuple[list[np.ndarray], list[str], int]:
    """``n`` real data frames [H, W, 3] uint8 whose caption names a square and whose square
    can be measured (round_corners does not refuse it), one random frame of each clip drawn
    (seed 0), with their captions; and how many were skipped as unmeasurable."""
    rng = np.random.default_rng(0)
    frames, caps, skipped = [], [], 0
    while len(frames) < n:
        clips, captions = tr.data.sample(rng, 64)
        for clip, caption in zip(clips, captions):
            if not SQUARE_WORDS & set(caption.split()) or len(frames) >= n:
                continue
            frame = clip[rng.integers(len(clip))]
            if round_corners(frame, 1.0) is None:
                skipped += 1
                continue
            frames.append(frame)
            caps.append(caption)
    return frames, caps, skipped


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--frames", type=int, default=400, help="square frames to probe")
    args = ap.parse_args()
    ck = Path(args.checkpoint)
    tr, step = load_trainer(ck)
    frames, caps, skipped = square_frames(tr, args.frames)
    real = np.stack(frames)
    text = tr.FD.caption(tr.tokens(caps))

    def logits(batch: np.ndarray) -> torch.Tensor:
        x = _to_float(batch[:, None])[:, 0]
        return tr.FD.project(tr.FD.features(tr.FD.prepare(x)), text)

    base = logits(real)
    print(f"{ck} (step {step}): {len(frames)} real square frames ({skipped} skipped)")
    for k in RADII:
        rounded = np.stack([round_corners(f, k) for f in real])
        other = logits(rounded)
        margin = base - other
        print(f"  corners rounded to {k:.2f} of the half-width (fill "
              f"{1 - (1 - np.pi / 4) * k * k:.3f}): real scored higher "
              f"{float((margin > 0).float().mean()):.3f}, mean margin {float(margin.mean()):+.3f} "
              f"(logit std {float(base.std()):.3f})")


if __name__ == "__main__":
    main()
