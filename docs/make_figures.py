"""Frame strips of real output for the README and the model card.

    python docs/make_figures.py [--model NAME_OR_PATH] [--out docs/strip.png] [--prompt P ...]

Each pair of rows: the model's frames (top; default: the bundled model) and the contract
renderer's frames for the same prompt and seed (bottom), at t = 0, 0.25, ..., 1.75 s, 64 x 64
each. Any architecture: the prompts are read for the renderer by the shapes grammar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
import torch

from t2v_rt.backends.torch_backend import TorchBackend
from t2v_rt.pipeline import Video, frame_times
from t2v_rt.generators.io import model_path
from t2v_rt.models.shapes.grammar import parse_prompt
from t2v_rt.models.shapes.render import render
from t2v_rt.models.shapes.scene import Scene, latent_from_seed

PROMPTS = (
    "a large red circle moving left and right slowly on a black background",
    "a small blue square moving up and down quickly on a white background",
    "a large green triangle moving in a circle slowly on a gray background",
    "a large orange triangle moving diagonally slowly on a white background",  # held out
    "a small magenta circle standing still on a gray background",             # held out
    "a yellow box bouncing up and down",                                       # partial
)


def write_png(img: np.ndarray, path: Path) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=model_path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "strip.png")
    ap.add_argument("--prompt", action="append", help="instead of the usual six (repeatable)")
    args = ap.parse_args()
    backend = TorchBackend(args.model, "cpu")
    size = backend.config.resolution
    times = torch.from_numpy(frame_times(0, 8, __import__("fractions").Fraction(4)))
    rows = []
    for seed, prompt in enumerate(args.prompt or PROMPTS):
        v = Video(backend, prompt, seed)
        made = (torch.as_tensor(v.frames_at(times)).float() + 1) / 2
        truth = render(Scene.complete(parse_prompt(prompt).attributes, latent_from_seed(seed)),
                       times, size)
        gap = torch.ones(3, size, 2)
        rows += [torch.cat([torch.cat([f, gap], -1) for f in made], -1),
                 torch.cat([torch.cat([f, gap], -1) for f in truth], -1),
                 torch.ones(3, 4, 8 * (size + 2))]
    img = (torch.cat(rows, -2).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    write_png(img, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
