"""Which way does the frame discriminator push a square's missing corners?
(docs/models/stylegan-v-shapes.md, "pairs0's last 25 minutes".)

The corner probe (corner_probe.py) asks whether the frame discriminator scores a real square
above its rounded copy. This one asks what the generator is told: the gradient of the frame
discriminator's logit under the frame's own caption (``out(phi) + <phi, text>``, the logit the
generator is trained against) with respect to the frame's pixels, projected on the direction
from the background colour to the shape's colour (positive: "more shape here"). It is read
in three regions of each frame:

- ``corners``: the pixels inside the shape's bounding box that are not the shape (for a
  square drawn round, its missing corners);
- ``shape``: the shape's own pixels;
- ``ring``: the 2-pixel ring just outside the box (where a larger shape would grow).

For the generator's own squares ("a large {red, green, blue, yellow} square standing still on a
{black, white} background", 6 seeds each, one frame at 1 s, from the run's EMA generator),
and for real square frames of the data with their corners rounded in place to the same
fill (radius 0.89 of the half-width, fill 0.83), the mean gradient per pixel in each region
and the share of ``corners`` pixels with a positive one. If the discriminator asked for the
corners, their mean would be positive and well above the ring's.

    python docs/models/experiments/corner_gradient_probe.py RUN/checkpoint-N.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corner_probe import round_corners, square_frames  # noqa: E402
from trained_discriminator_probe import load_trainer  # noqa: E402

from t2v_rt.models.shapes import attributes as A  # noqa: E402
from t2v_rt.training.trainer import _to_float  # noqa: E402


def regions(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``frame`` [H, W, 3] uint8 -> (corners, shape, ring) masks [H, W] and the direction
    from background to shape colour [3] in the discriminator's units, or None."""
    video = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    bg = A._background(video)
    mask = A._shape_mask(video, bg)
    if int(mask.sum()) < 9:
        return None
    fg = A._shape_colour(video, mask)
    m = mask[0].numpy()
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = m.shape
    if y0 < 3 or x0 < 3 or y1 > h - 4 or x1 > w - 4:
        return None
    box = np.zeros_like(m)
    box[y0:y1 + 1, x0:x1 + 1] = True
    grown = np.zeros_like(m)
    grown[y0 - 2:y1 + 3, x0 - 2:x1 + 3] = True
    return box & ~m, m, grown & ~box, ((fg - bg) * 2).numpy()     # [-1, 1] units


def gradients(tr, frames: np.ndarray, captions: list[str]) -> tuple[np.ndarray, float]:
    """d logit / d pixels [N, H, W, 3] of the frame discriminator under each caption, and the
    mean logit."""
    x = _to_float(frames[:, None])[:, 0].requires_grad_(True)
    text = tr.FD.caption(tr.tokens(captions))
    logit = tr.FD.project(tr.FD.features(tr.FD.prepare(x)), text)
    (grad,) = torch.autograd.grad(logit.sum(), x)
    return grad.permute(0, 2, 3, 1).numpy(), float(logit.detach().mean())


def report(label: str, tr, frames: list[np.ndarray], captions: list[str]) -> None:
    grads, logit = gradients(tr, np.stack(frames), captions)
    sums = {"corners": [], "shape": [], "ring": []}
    positive = []
    for frame, grad in zip(frames, grads):
        r = regions(frame)
        if r is None:
            continue
        corners, shape, ring, d = r
        along = grad @ d / max(float(np.linalg.norm(d)), 1e-6)       # [H, W]
        for name, where in (("corners", corners), ("shape", shape), ("ring", ring)):
            if where.any():
                sums[name].append(float(along[where].mean()))
        if corners.any():
            positive.append(float((along[corners] > 0).mean()))
    scale = np.mean([abs(v) for v in sums["shape"] + sums["ring"] + sums["corners"]])
    print(f"{label}: {len(sums['shape'])} frames, mean logit {logit:+.2f}; mean gradient per pixel towards the shape "
          f"colour (x 1e3): corners {1e3 * np.mean(sums['corners']):+.2f}, shape "
          f"{1e3 * np.mean(sums['shape']):+.2f}, ring {1e3 * np.mean(sums['ring']):+.2f} "
          f"(mean magnitude {1e3 * scale:.2f}); corner pixels pushed towards the shape "
          f"{np.mean(positive):.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--real", type=int, default=96, help="real square frames")
    args = ap.parse_args()
    ck = Path(args.checkpoint)
    tr, step = load_trainer(ck)
    g = tr.G_ema.eval()
    frames, captions = [], []
    cfg = g.config
    times = np.array([1.0])
    feats = torch.as_tensor(np.asarray(cfg.time_features(times)), dtype=torch.float32)
    for colour in ("red", "green", "blue", "yellow"):
        for bg in ("black", "white"):
            prompt = f"a large {colour} square standing still on a {bg} background"
            text = torch.as_tensor(np.asarray(cfg.front_end().features([prompt])))
            for seed in range(args.seeds):
                z = torch.as_tensor(np.asarray(cfg.latent(seed), dtype=np.float32)[None])
                with torch.no_grad():
                    frame = g.synthesize(g.style(text, z), feats)[0]
                frames.append(((frame.permute(1, 2, 0).numpy() + 1) * 127.5)
                              .round().clip(0, 255).astype(np.uint8))
                captions.append(prompt)
    print(f"{ck} (step {step})")
    report("generator's squares", tr, frames, captions)
    real, caps, _ = square_frames(tr, args.real)
    rounded = [round_corners(frame, 0.89) for frame in real]
    report("real squares, corners rounded in place (fill 0.83)", tr, rounded, caps)
    report("the same real squares as they are", tr, real, caps)


if __name__ == "__main__":
    main()
