"""Can the trainer's discriminators read speed and shape from real clips at all, and how fast
do they learn to? (docs/models/stylegan-v-shapes.md, "The discriminator probe".)

The frame and video discriminators of ``t2v-rt train --data`` (learnt-vocabulary front end,
default widths, 6 frames at strides 1..6) are trained with no generator, on real clips only:
each clip's true caption is a positive, the same caption with its speed word swapped
(slowly <-> quickly, slow <-> fast) a negative for the video discriminator, and with its
shape word swapped (circle <-> square or triangle, ...) a negative for the frame
discriminator (its first frame). Every 200 steps it prints the share of the last 200 batches'
clips whose true caption scored above the swapped one; each batch is scored before the step
that learns from it.

    python docs/models/experiments/discriminator_probe.py DATA [--steps 3000]
        [--augment full|translate|none] [--clip-frames 6] [--min-stride 1] [--max-stride 6]
        [--fixed-stride S] [--d-width 16] [--velocity]

DATA: ``t2v-rt dataset render-shapes DATA --clips 5000 --seconds 2.4`` (36 frames at 15 fps).
One thread; about 4 minutes for 3,000 steps on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from t2v_rt.training.losses import augment, augment_params
from t2v_rt.training.trainer import AdversarialTrainer, _to_float, build_config

SPEED = {"slowly": "quickly", "quickly": "slowly", "slow": "fast", "fast": "slow"}
SHAPES = {"circle": ["square", "triangle"], "ball": ["box", "triangle"],
          "disc": ["square", "triangle"], "square": ["circle", "triangle"],
          "box": ["ball", "triangle"], "triangle": ["circle", "square"]}


def swap(caption: str, table: dict, rnd: random.Random) -> str | None:
    """The caption with its first word of ``table`` replaced, or None when it has none."""
    words = caption.split()
    for i, w in enumerate(words):
        if w in table:
            v = table[w]
            words[i] = v if isinstance(v, str) else rnd.choice(v)
            return " ".join(words)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--augment", choices=("full", "translate", "none"), default="full",
                    help="the trainer's DiffAugment (translation and cutout), translation "
                         "only, or none")
    ap.add_argument("--clip-frames", type=int, default=6)
    ap.add_argument("--min-stride", type=int, default=1,
                    help="the trainer's min_stride: strides --min-stride to --max-stride")
    ap.add_argument("--max-stride", type=int, default=6)
    ap.add_argument("--fixed-stride", type=int, default=0,
                    help="every clip's frames this many data frames apart (0: the trainer's "
                         "random stride, --min-stride to --max-stride)")
    ap.add_argument("--d-width", type=int, default=16)
    ap.add_argument("--velocity", action="store_true",
                    help="the trainer's d_velocity: the video discriminator divides each frame "
                         "difference by its time gap")
    args = ap.parse_args()
    cfg = build_config(None, dict(data=args.data, frames=36, clip_frames=args.clip_frames,
                                  min_stride=args.min_stride, max_stride=args.max_stride,
                                  d_width=args.d_width, d_velocity=args.velocity,
                                  threads=1, batch_size=16, lr_d=1e-3))
    tr = AdversarialTrainer.create(cfg)
    rnd = random.Random(0)
    VD, FD = tr.VD, tr.FD
    opt = torch.optim.Adam(list(FD.parameters()) + list(VD.parameters()), lr=1e-3,
                           betas=(0.0, 0.99))
    cutout = 0.0 if args.augment == "translate" else cfg.cutout
    hist: dict[str, list[float]] = {"speed": [], "shape": []}
    t0 = time.time()
    for step in range(1, args.steps + 1):
        clips, caps = tr.data.sample(tr.rng, cfg.batch_size)
        idx, rel, _, _ = tr.plan(cfg.batch_size)
        if args.fixed_stride:
            t_data, tc = int(tr.data.clips.shape[1]), cfg.clip_frames
            first = int(tr.rng.integers(0, t_data - (tc - 1) * args.fixed_stride))
            idx = first + torch.arange(tc) * args.fixed_stride
            rel = (idx - first).double() / tr.fps
        real = _to_float(np.asarray(clips)[:, idx.numpy()])
        b = real.shape[0]
        times = rel.float().expand(b, -1)
        p = augment_params(b, real.shape[-1], tr.gen, cfg.translate, cutout)
        ra = real if args.augment == "none" else augment(real, p)
        loss = 0
        for kind, table in (("speed", SPEED), ("shape", SHAPES)):
            pairs = [(i, swap(c, table, rnd)) for i, c in enumerate(caps)]
            pairs = [(i, s) for i, s in pairs if s is not None]
            if not pairs:
                continue
            keep = torch.tensor([i for i, _ in pairs])
            t_true = tr.tokens([caps[i] for i, _ in pairs])
            t_wrong = tr.tokens([s for _, s in pairs])
            if kind == "speed":
                feat = VD.features(VD.prepare(ra[keep], times[keep]))
                lt, lw = VD.project(feat, VD.caption(t_true)), VD.project(feat, VD.caption(t_wrong))
            else:
                feat = FD.features(FD.prepare(ra[keep, 0]))
                lt, lw = FD.project(feat, FD.caption(t_true)), FD.project(feat, FD.caption(t_wrong))
            loss = loss + F.softplus(-lt).mean() + F.softplus(lw).mean()
            hist[kind].append(float((lt > lw).float().mean()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(f"step {step} {time.time() - t0:.0f}s speed acc "
                  f"{np.mean(hist['speed'][-200:]):.3f} shape acc "
                  f"{np.mean(hist['shape'][-200:]):.3f}", flush=True)


if __name__ == "__main__":
    main()
