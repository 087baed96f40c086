"""Where a generated square loses its fill (docs/models/stylegan-v-shapes.md, "pairs0's last
25 minutes"). A square fills 1.0 of its box and a circle 0.785; the evaluator reads a square
above 0.89. For "a {small, large} {red, blue} square {standing still, moving left and right
slowly} on a {black, white} background", 8 seeds each, 2 s at 15 fps on the torch backend:

- ``fill``: the evaluator's own reading (median over frames);
- ``solid``: the same after painting, in every frame, each pixel that lies between the shape's
  first and last pixel both in its row and in its column with the shape's colour. That fills
  the dark seams inside the shape (the grid of nearest upsampling) and nothing outside it: what
  ``solid`` gains over ``fill`` is lost inside the shape, what ``solid`` still lacks of 1.0 is
  lost at its outline (rounded corners, ragged edges, one-row spikes that widen the box);
- the shape each reading gives (``read``, ``read solid``).

The same for the data's renderer (``--renderer``) shows what a perfect model reads. Two
inference-time knobs of StyleGAN generators, to ask whether the rounding lives in the latent
or in the noise rather than in the weights: ``--truncation PSI`` pulls each video's style
towards its prompt's mean style over 256 latents (StyleGAN's truncation trick, per prompt),
``--no-noise`` switches the generator's fixed noise off.

    python docs/models/experiments/square_fill_probe.py MODEL [--renderer]
        [--truncation PSI] [--no-noise]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from t2v_rt.backends import create_backend
from t2v_rt.generators.io import model_path
from t2v_rt.models.shapes import attributes as A
from t2v_rt.models.shapes.evaluate import Sample, model_source, renderer_source
from t2v_rt.models.shapes.grammar import parse_prompt


def solid(video: torch.Tensor) -> torch.Tensor:
    """``video`` [T, 3, S, S] with every pixel between the shape's first and last pixel in both
    its row and its column painted in the shape's colour."""
    bg = A._background(video)
    mask = A._shape_mask(video, bg)                                   # [T, S, S]
    if not bool(mask.any()):
        return video
    fg = A._shape_colour(video, mask)
    idx = torch.arange(mask.shape[-1])

    def between(m: torch.Tensor) -> torch.Tensor:                     # along the last dim
        lo = torch.where(m, idx, m.shape[-1]).amin(-1, keepdim=True)
        hi = torch.where(m, idx, -1).amax(-1, keepdim=True)
        return (idx >= lo) & (idx <= hi)

    inside = between(mask) & between(mask.transpose(1, 2)).transpose(1, 2)
    out = video.clone()
    out.permute(1, 0, 2, 3)[:, inside] = fg.view(3, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="stylegan-v-shapes-minilm")
    ap.add_argument("--renderer", action="store_true", help="probe the renderer instead")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--truncation", type=float, default=1.0, metavar="PSI")
    ap.add_argument("--no-noise", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.renderer:
        src = renderer_source(64)
    else:
        backend = create_backend("torch", model_path(args.model))
        g = backend.generator
        if args.truncation != 1.0:
            style, psi = g.style, args.truncation
            latents = torch.randn(256, g.config.latent_dim,
                                  generator=torch.Generator().manual_seed(123))

            def truncated(text, z):
                mean = style(text.expand(len(latents), *text.shape[1:]), latents).mean(0)
                return mean + psi * (style(text, z) - mean)
            g.style = truncated
        if args.no_noise:
            for module in g.modules():
                if hasattr(module, "noise_strength"):
                    module.noise_strength.data.zero_()
        src = model_source(backend)
    times = torch.arange(30, dtype=torch.float64) / 15
    for size in ("small", "large"):
        for colour, bg in (("red", "black"), ("blue", "white")):
            for motion in ("standing still", "moving left and right slowly"):
                prompt = f"a {size} {colour} square {motion} on a {bg} background"
                fills, solids, read, read_solid = [], [], Counter(), Counter()
                target = parse_prompt(prompt).attributes
                for seed in range(args.seeds):
                    video = src(Sample(prompt, seed, target, "canonical", False), times)
                    for v, f, r in ((video, fills, read), (solid(video), solids, read_solid)):
                        m = A.measure(v, times.float())
                        f.append(float(m.fill.median()) if m.colour is not None else float("nan"))
                        r[A.classify(m)["shape"]] += 1
                print(f"{size:5s} {colour:4s} on {bg:5s} {motion:28s} fill {np.nanmean(fills):.3f}"
                      f"  solid {np.nanmean(solids):.3f}  read {dict(read)}"
                      f"  read solid {dict(read_solid)}", flush=True)


if __name__ == "__main__":
    main()
