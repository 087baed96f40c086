"""How shape- and speed-aware a training run's discriminators are at one of its checkpoints
(docs/models/stylegan-v-shapes.md, "A caption bank for shape"), and whether its generator
fits its captions in their eyes.

On real data clips (16 a batch, the run's own clip length and stride): the share whose true
caption scores above the same caption with its shape word swapped (frame discriminator,
first frame) or its speed word swapped (video discriminator); the same on the EMA
generator's clips of those captions (random z), which measures how well the generator fools
each discriminator's caption projection, not how well it draws. Swaps as in
discriminator_probe.py. No training; one thread, about 30 s for 20 batches on the 2-core CPU.

    python docs/models/experiments/trained_discriminator_probe.py RUN/checkpoint-N.safetensors
        [--batches 20]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discriminator_probe import SHAPES, SPEED, swap  # noqa: E402

from t2v_rt.training.trainer import AdversarialTrainer, _to_float, build_config  # noqa: E402


def load_trainer(ck: Path) -> tuple[AdversarialTrainer, int]:
    """The trainer of the run that wrote checkpoint ``ck`` (its config from the run folder),
    loaded from it, on one thread; and the checkpoint's step."""
    torch.set_num_threads(1)
    tr = AdversarialTrainer.create(build_config(None, {}, [], resume=str(ck.parent)).validate())
    return tr, tr.load(load_file(str(ck)))


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--pairs", action="store_true",
                    help="also the frame discriminator's shape score per (true, swapped) "
                         "shape word, each caption under both swaps (circle, ball, disc: "
                         "circle; square, box: square)")
    args = ap.parse_args()
    ck = Path(args.checkpoint)
    tr, step = load_trainer(ck)
    tr.rng, rnd = np.random.default_rng(123), random.Random(0)
    tr.gen.manual_seed(123)
    tr.G = tr.G_ema                     # the generator a run exports and samples
    acc: dict[str, list[float]] = {}
    for _ in range(args.batches):
        clips, caps = tr.data.sample(tr.rng, 16)
        idx, rel, steps, starts = tr.plan(16)
        real = _to_float(np.asarray(clips)[:, idx.numpy()])
        times = rel.float().expand(16, -1)
        z = torch.randn(16, tr.config.latent_dim, generator=tr.gen)
        fake = tr.fake(tr.tokens(list(caps)), z, rel, steps, starts).float()
        for kind, table in (("shape", SHAPES), ("speed", SPEED)):
            pairs = [(i, s) for i, s in ((i, swap(c, table, rnd)) for i, c in enumerate(caps)) if s]
            if not pairs:
                continue
            keep = torch.tensor([i for i, _ in pairs])
            true, wrong = tr.tokens([caps[i] for i, _ in pairs]), tr.tokens([s for _, s in pairs])
            D = tr.FD if kind == "shape" else tr.VD
            for source, x in (("real", real), ("generated", fake)):
                inp = (D.prepare(x[keep, 0]) if kind == "shape"
                       else D.prepare(x[keep], times[keep]))
                feat = D.features(inp)
                right = D.project(feat, D.caption(true)) > D.project(feat, D.caption(wrong))
                acc.setdefault(f"{kind} {source}", []).extend(right.float().tolist())
            if args.pairs:
                by_pair(tr, caps, real, fake, acc)
    print(f"{ck} (step {step}): " + ", ".join(
        f"{k} {np.mean(v):.3f} (n={len(v)})" for k, v in acc.items()))


FAMILY = {"circle": "circle", "ball": "circle", "disc": "circle", "square": "square",
          "box": "square", "triangle": "triangle"}


def shape_word(words: list[str]) -> int | None:
    """Index of the caption's shape word, or None: the first word of :data:`FAMILY` that is
    not the "circle" of the motion "moving in a circle" (a caption may leave the shape out)."""
    return next((j for j, w in enumerate(words)
                 if w in FAMILY and words[max(0, j - 2):j] != ["in", "a"]), None)


def by_pair(tr, caps, real, fake, acc) -> None:
    """Each caption's first shape word replaced by each other shape in turn: whether the frame
    discriminator scores the true caption above it, on the real and the generated first frame,
    under "shape real circle->square" and the like."""
    for i, caption in enumerate(caps):
        words = caption.split()
        at = shape_word(words)
        if at is None:
            continue
        own = FAMILY[words[at]]
        for other in sorted({"circle", "square", "triangle"} - {own}):
            wrong = " ".join(words[:at] + [other] + words[at + 1:])
            true_code, wrong_code = tr.FD.caption(tr.tokens([caption, wrong]))
            for source, x in (("real", real), ("generated", fake)):
                feat = tr.FD.features(tr.FD.prepare(x[i:i + 1, 0]))
                right = tr.FD.project(feat, true_code[None]) > tr.FD.project(feat, wrong_code[None])
                acc.setdefault(f"shape {source} {own}->{other}", []).append(float(right[0]))


if __name__ == "__main__":
    main()
