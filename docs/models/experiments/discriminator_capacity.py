"""Can the frame discriminator's trunk tell a circle from a square at all, and how fast? A
diagnostic: the trainer's FrameDiscriminator (its conv trunk and feature layer, as
``t2v-rt train`` builds it) plus a 3-way linear head, trained as a plain shape classifier on
real data frames with the shape from the renderer's ground truth (``meta.json``, read here
only; no trainer reads it), with the trainer's Adam (betas 0, 0.99). Clips 0..89 % train, the
rest test; every ``--every`` steps, the accuracy on 600 test frames: all shapes, circles and
squares alone, small shapes alone. One thread; about 75 s for 2,000 steps at width 16 on the
2-core CPU.

    python docs/models/experiments/discriminator_capacity.py DATA [--width 16] [--lr 1e-3]
        [--steps 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2v_rt.training.discriminators import FrameDiscriminator
from t2v_rt.training.trainer import build_config, open_data

SHAPES = {"circle": 0, "square": 1, "triangle": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--width", type=int, default=16, help="d_width: channels at full resolution")
    ap.add_argument("--lr", type=float, default=1e-3, help="lr_d")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cfg = build_config(None, {"data": args.data, "frames": 36}).validate()
    ts = open_data(cfg)
    meta = {c["video"]: c for c in json.loads((Path(args.data) / "meta.json").read_text())["clips"]}
    label = np.array([SHAPES[meta[v]["shape"]] for v in ts.videos])
    small = np.array([meta[v]["size"] == "small" for v in ts.videos])
    clips = ts.clips                                     # uint8 [N, T, R, R, 3], memory-mapped
    n, frames = len(label), clips.shape[1]
    split = int(n * 0.9)
    D = FrameDiscriminator(clips.shape[2], 1, base=args.width, dim=cfg.d_dim)
    head = torch.nn.Linear(cfg.d_dim, len(SHAPES))
    opt = torch.optim.Adam([*D.parameters(), *head.parameters()], lr=args.lr, betas=(0.0, 0.99))
    rng = np.random.default_rng(args.seed)

    def batch(lo: int, hi: int, size: int):
        c = rng.integers(lo, hi, size=size)
        f = rng.integers(frames, size=size)
        x = torch.from_numpy(np.asarray(clips[c, f])).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x, torch.from_numpy(label[c]), torch.from_numpy(small[c])

    start = time.time()
    for step in range(1, args.steps + 1):
        x, y, _ = batch(0, split, args.batch)
        loss = F.cross_entropy(head(D.features(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0:
            with torch.no_grad():
                x, y, s = batch(split, n, 600)
                right = head(D.features(x)).argmax(1) == y
            cs = y < 2
            print(f"width {args.width} lr {args.lr:g} step {step} ({time.time() - start:.0f} s): "
                  f"all {float(right.float().mean()):.3f}, circle/square "
                  f"{float(right[cs].float().mean()):.3f}, small "
                  f"{float(right[s].float().mean()):.3f}", flush=True)


if __name__ == "__main__":
    main()
