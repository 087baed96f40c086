"""Squares and circles, by size: does the frame discriminator tell them apart, and does the
generator draw them apart? (docs/models/stylegan-v-shapes.md, "Squares and circles, by
size".)

A diagnostic, not a training path. Two readings of a training run's checkpoint, and a
third of its data on request:

1. **The frame discriminator.** Frames of data clips whose caption names a circle or a
   square (circle, ball, disc; square, box), each under its own caption and under the same
   caption with that word swapped for the other shape ("a small red square ..." against "a
   small red circle ..."), scored by the logit the generator is trained against
   (``out(phi) + <phi, text>``). Per shape and size: the share of frames where the true
   caption scores higher, and the mean margin of the two logits. On real frames (the first
   frame of each sampled window) and on the run's EMA generator's frames made from the same
   captions. The size is the renderer's ground truth (the data's ``meta.json``, which no
   trainer reads).
2. **The generator.** "a {small, large} {red, blue, yellow, green} {circle, square}
   {standing still, moving up and down slowly} on a {black, white} background", 2 seeds each
   (32 videos per shape and size, 2 s at 15 fps, torch backend): the evaluator's fill of the
   shape's box (median over frames; square 1.0, circle 0.785, read as a square above 0.893)
   and the shape it reads. The generator is the run folder's ``generator.safetensors`` (the
   EMA generator of its latest checkpoint) unless ``--generator`` names another; ``--raw``
   reads the checkpoint's trained generator instead of its average.
3. With ``--data-every K``, **the data**: every K-th clip of the training cache (the decoded
   frames the discriminators see), read by the same evaluator: its fill and the shape it
   reads, per shape and size of the renderer's ground truth.

    python docs/models/experiments/shape_by_size_probe.py RUN/checkpoint-N.safetensors \
        [--batches 20] [--generator FILE | --raw] [--data-every 10]

One thread; about a minute and a half (and about a minute more for ``--data-every 10``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trained_discriminator_probe import FAMILY, load_trainer, shape_word  # noqa: E402

from t2v_rt.backends import create_backend  # noqa: E402
from t2v_rt.models.shapes import attributes as A  # noqa: E402
from t2v_rt.models.shapes.evaluate import Sample, model_source  # noqa: E402
from t2v_rt.training.trainer import _to_float  # noqa: E402

SWAP = {"circle": "square", "square": "circle"}


def ground_truth(tr) -> dict[str, dict]:
    """The renderer's scene of each video of the run's data (``meta.json``), by file."""
    meta = json.loads((Path(tr.cfg.data) / "meta.json").read_text())["clips"]
    return {m["video"]: m for m in meta}


@torch.no_grad()
def discriminator(tr, batches: int) -> None:
    size_of = {video: m["size"] for video, m in ground_truth(tr).items()}
    tr.rng = np.random.default_rng(123)
    tr.gen.manual_seed(123)
    tr.G = tr.G_ema                     # the generator a run exports and samples
    margins: dict[str, list[float]] = defaultdict(list)
    for _ in range(batches):
        ids = tr.rng.choice(len(tr.data), 16, replace=False)
        caps = [tr.data.captions[i][0] for i in ids]
        clips = np.stack([np.asarray(tr.data.clips[i]) for i in ids])
        idx, rel, steps, starts = tr.plan(16)
        real = _to_float(clips[:, idx.numpy()])
        z = torch.randn(16, tr.config.latent_dim, generator=tr.gen)
        fake = tr.fake(tr.tokens(caps), z, rel, steps, starts).float()
        for i, caption in enumerate(caps):
            words = caption.split()
            at = shape_word(words)
            if at is None or FAMILY[words[at]] not in SWAP:
                continue
            own = FAMILY[words[at]]
            wrong = " ".join(words[:at] + [SWAP[own]] + words[at + 1:])
            true_code, wrong_code = tr.FD.caption(tr.tokens([caption, wrong]))
            size = size_of[tr.data.videos[ids[i]]]
            for source, x in (("real", real), ("generated", fake)):
                feat = tr.FD.features(tr.FD.prepare(x[i:i + 1, 0]))
                margin = tr.FD.project(feat, true_code[None]) - tr.FD.project(feat, wrong_code[None])
                margins[f"{source:9s} {own:6s} {size:5s}"].append(float(margin[0]))
    print("frame discriminator, true shape word against the other (circle <-> square):")
    for key in sorted(margins):
        m = np.array(margins[key])
        print(f"  {key}  n={len(m):3d}  true caption higher {np.mean(m > 0):.3f}  "
              f"mean margin {np.mean(m):+.3f}")


@torch.no_grad()
def generator(weights: Path, label: str) -> None:
    src = model_source(create_backend("torch", weights))
    times = torch.arange(30, dtype=torch.float64) / 15
    fills: dict[tuple[str, str], list[float]] = defaultdict(list)
    read: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for shape, size, colour, bg, motion in itertools.product(
            ("circle", "square"), ("small", "large"), ("red", "blue", "yellow", "green"),
            ("black", "white"), ("standing still", "moving up and down slowly")):
        prompt = f"a {size} {colour} {shape} {motion} on a {bg} background"
        for seed in range(2):
            m = A.measure(src(Sample(prompt, seed, {}, "canonical", False), times), times.float())
            if m.colour is not None:
                fills[shape, size].append(float(m.fill.median()))
            read[shape, size][A.classify(m)["shape"]] += 1
    print(f"generator {label}: fill of the box (mean +- sd over videos), read as")
    for key in sorted(read):
        f = np.array(fills[key])
        print(f"  {key[0]:6s} {key[1]:5s}  fill {f.mean():.3f} +- {f.std():.3f}  "
              f"{dict(read[key].most_common())}")


@torch.no_grad()
def data(tr, every: int) -> None:
    truth = ground_truth(tr)
    fps = float(tr.data.fps)
    fills: dict[tuple[str, str], list[float]] = defaultdict(list)
    read: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for i in range(0, len(tr.data), every):
        scene = truth[tr.data.videos[i]]
        video = torch.from_numpy(np.array(tr.data.clips[i])).permute(0, 3, 1, 2).float() / 255
        times = torch.arange(video.shape[0]) / fps
        m = A.measure(video, times)
        key = (scene["shape"], scene["size"])
        fills[key].append(float(m.fill.median()))
        read[key][A.classify(m)["shape"]] += 1
    print(f"data: every {every}th clip of the training cache, fill (median, lowest), read as")
    for key in sorted(read):
        f = np.array(fills[key])
        print(f"  {key[0]:8s} {key[1]:5s}  n={len(f):3d}  fill {np.median(f):.3f}, lowest "
              f"{f.min():.3f}  {dict(read[key].most_common())}")


def raw_generator(ck: Path, out: Path) -> Path:
    """The checkpoint's trained generator (not its EMA) as a generator file in ``out``, with
    the run folder's config."""
    with safe_open(str(ck), "pt") as f:
        weights = {k[2:]: f.get_tensor(k) for k in f.keys() if k.startswith("G.")}
    with safe_open(str(ck.parent / "generator.safetensors"), "pt") as f:
        metadata = f.metadata()
    save_file(weights, str(out / "generator.safetensors"), metadata=metadata)
    (out / "generator.json").write_text((ck.parent / "generator.json").read_text())
    return out / "generator.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--batches", type=int, default=20, help="batches of 16 data clips")
    ap.add_argument("--generator", type=Path, default=None,
                    help="the generator to read (default: the run folder's generator.safetensors)")
    ap.add_argument("--raw", action="store_true",
                    help="read the checkpoint's trained generator, not its EMA")
    ap.add_argument("--data-every", type=int, default=0, metavar="K",
                    help="also read every K-th clip of the training cache (default: none)")
    args = ap.parse_args()
    ck = Path(args.checkpoint)
    tr, step = load_trainer(ck)
    print(f"{ck} (step {step})")
    discriminator(tr, args.batches)
    with tempfile.TemporaryDirectory() as tmp:
        if args.raw:
            generator(raw_generator(ck, Path(tmp)), f"{ck} (trained, not the EMA)")
        else:
            weights = args.generator or ck.parent / "generator.safetensors"
            generator(weights, str(weights))
    if args.data_every:
        data(tr, args.data_every)


if __name__ == "__main__":
    main()
