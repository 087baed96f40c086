"""Can the generator's architecture draw squares at all? (docs/models/stylegan-v-shapes.md,
"pairs0's last 25 minutes".) A diagnostic, not a training path: starting from a trained
generator, the frames of ``--videos`` videos (the evaluator's canonical prompts, seen pairs, one
seed each, ``--frames`` times over 2 s) are fitted together to the renderer's frames of the same
prompts and seeds by plain regression (mean squared error, Adam on every weight of the
generator, ``--steps`` steps), and the evaluator reads the fitted videos' shapes before and
after. If squares still come out as circles when the exact target frames are given, the
architecture (its width and depth at 32 x 32 and 64 x 64) is the limit, not the adversarial
signal; if they come out square, it can draw them and the adversarial training does not find
them.

    python docs/models/experiments/capacity_probe.py MODEL [--videos N] [--steps N]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch

from t2v_rt.generators.io import load_generator, model_path
from t2v_rt.models.shapes import attributes as A
from t2v_rt.models.shapes.evaluate import contract_samples
from t2v_rt.models.shapes.render import render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="stylegan-v-shapes-minilm")
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    g = load_generator(model_path(args.model)).train().requires_grad_(True)
    cfg = g.config
    samples = [s for s in contract_samples(20 * args.videos, seed=1)
               if s.kind == "canonical" and not s.held_out][:args.videos]
    times = torch.arange(args.frames, dtype=torch.float64) * (2.0 / args.frames)
    target = torch.cat([render(s.scene(), times, cfg.resolution) for s in samples])
    target = target.float() * 2 - 1                              # [V T, 3, R, R] in [-1, 1]
    text = torch.as_tensor(np.asarray(cfg.front_end().features([s.prompt for s in samples])))
    z = torch.as_tensor(np.stack([np.asarray(cfg.latent(s.seed), dtype=np.float32)
                                  for s in samples]))
    feats = torch.as_tensor(np.asarray(cfg.time_features(times.numpy())), dtype=torch.float32)
    n, t = len(samples), len(times)

    def frames() -> torch.Tensor:
        w = g.style(text, z)                                     # [V, S]
        return g.synthesize(w.repeat_interleave(t, 0), feats.repeat(n, 1))

    def report(label: str) -> None:
        with torch.no_grad():
            video = ((frames() + 1) / 2).clamp(0, 1).view(n, t, *target.shape[1:])
        right, fills = Counter(), {}
        for s, v in zip(samples, video):
            m = A.measure(v, times.float())
            shape = s.target["shape"]
            right[shape, A.classify(m)["shape"] == shape] += 1
            fills.setdefault(shape, []).append(float(m.fill.median()))
        print(f"{label}: " + ", ".join(
            f"{k} {right[k, True]}/{right[k, True] + right[k, False]} right "
            f"(fill {np.nanmean(v):.3f})" for k, v in sorted(fills.items())), flush=True)

    print(f"{n} videos x {t} frames: " + "; ".join(s.prompt for s in samples[:3]) + "; ...")
    report("before")
    opt = torch.optim.Adam(g.parameters(), lr=args.lr, betas=(0.9, 0.99))
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = (frames() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            report(f"step {step} (mse {loss.item():.5f}, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
