"""Whether a training run's video discriminator, at one of its checkpoints, prefers each clip
at the speed it was made to the same clip played at twice or half that speed, under the
clip's own caption (docs/models/stylegan-v-shapes.md, "The speed ranking"): what the
generator's ``speed_ranking`` term asks of it.

Captions with a speed word only ("slowly", "quickly", "slow", "fast"; see
discriminator_probe.py), 16 clips a batch at the run's own clip length and strides. Real:
the data clip at the step's stride against the same clip at twice the stride (twice the
speed), and, where the stride is even, half of it, from the same first frame where it fits.
Generated (the EMA generator, random z): the clip at its times against the same z and start
at the times doubled and halved. Printed per source, caption speed and factor: the share
where the clip at its own speed scores higher, and the mean margin (true minus warped
logit); then the caption's share of it: the same margin under the caption less the
margin under the caption with its speed word swapped (positive where the caption
projection, not the rest of the discriminator, prefers the clip's own speed); then the
caption's term alone, the margin of ``<phi, code>`` (what ``speed_ranking_term=caption``
ranks: the unconditional verdict ``out(phi)`` left out); then that term centred, the margin
of ``<phi, code - mean code>`` over the batch's 16 captions, those without a speed word
included (what ``speed_ranking_term=centred`` ranks); then the margin of ``<phi, code -
partner>``, where the partner is the one of the clip's minimal-pair captions (the run's
``minimal_pair_draws`` of them) under which the real clip at its stride beats itself at
twice or half of it by most (what ``speed_ranking_term=pair`` ranks), over the clips where
that margin is above 0 (the others are not ranked; n_pair of them), drawn from generators
of their own so that the columns before it are unchanged. No training; one thread, about
30 s for 20 batches on the 2-core CPU.

    python docs/models/experiments/speed_ranking_probe.py RUN/checkpoint-N.safetensors
        [--batches 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discriminator_probe import SPEED  # noqa: E402
from trained_discriminator_probe import load_trainer  # noqa: E402

from t2v_rt.training.trainer import _to_float, speed_partner  # noqa: E402

WORD = {"slowly": "slow", "slow": "slow", "quickly": "fast", "fast": "fast"}


def swap_speed(caption: str) -> str:
    return " ".join(SPEED.get(w, w) for w in caption.split())


def speed_of(caption: str) -> str | None:
    return next((WORD[w] for w in caption.split() if w in SPEED), None)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    ck = Path(args.checkpoint)
    tr, step = load_trainer(ck)
    tr.rng = np.random.default_rng(123)
    tr.gen.manual_seed(123)
    tr.G = tr.G_ema                     # the generator a run exports and samples
    VD, b = tr.VD, 16
    t_data = int(tr.data.clips.shape[1])
    margins: dict[tuple[str, str, str], list[float]] = {}
    pair_rng, k = np.random.default_rng(321), tr.cfg.minimal_pair_draws
    pair_gen = torch.Generator().manual_seed(321)
    for _ in range(args.batches):
        clips, caps = tr.data.sample(tr.rng, b)
        idx, rel, steps, starts = tr.plan(b)
        keep = [i for i, c in enumerate(caps) if speed_of(c)]
        if not keep:
            continue
        words = [speed_of(caps[i]) for i in keep]
        tokens = tr.tokens([caps[i] for i in keep])
        code = VD.caption(tokens)
        centred = code - VD.caption(tr.tokens(list(caps))).mean(dim=0, keepdim=True)
        other = VD.caption(tr.tokens([swap_speed(caps[i]) for i in keep]))
        times = rel.float().expand(len(keep), -1)
        data = np.asarray(clips)[keep]
        stride = int(idx[1] - idx[0])
        # the pair term's partner, chosen by the trainer's own draws (trainer.warped,
        # .negatives) from generators of the probe's own
        gen, tr.gen = tr.gen, pair_gen
        warp_idx, tr.gen = tr.warped(idx), gen
        pair_code, has_pair = torch.zeros_like(code), torch.zeros(len(keep), dtype=torch.bool)
        if warp_idx is not None and tr.pairs is not None:
            warp = _to_float(data[:, warp_idx.numpy()])
            _, cand_caps, has = tr.pairs.draw_many(pair_rng, [caps[i] for i in keep], k)
            partner, won = speed_partner(
                VD.features(VD.prepare(_to_float(data[:, idx.numpy()]), times)),
                VD.features(VD.prepare(warp, times)), code, VD.caption(tr.tokens(cand_caps)))
            pair_code, has_pair = code - partner, torch.from_numpy(has) & (won > 0)

        def score(x):
            """[N, 5]: the logit under the caption, under it with the speed word swapped, the
            caption's term of the first, that term centred on the batch's mean code, and the
            pair term (NaN where the clip has no partner that ranks its real speed first)."""
            feat = VD.features(VD.prepare(x, times))
            pair = VD.caption_term(feat, pair_code).masked_fill(~has_pair, float("nan"))
            return torch.stack([VD.project(feat, code), VD.project(feat, other),
                                VD.caption_term(feat, code), VD.caption_term(feat, centred),
                                pair], dim=1)
        real = score(_to_float(data[:, idx.numpy()]))
        for name, s in (("x2", 2 * stride), ("x0.5", stride // 2 if stride % 2 == 0 else 0)):
            if s >= 1 and (len(idx) - 1) * s < t_data:
                first = min(int(idx[0]), t_data - 1 - (len(idx) - 1) * s)  # the same start
                warped = score(_to_float(data[:, (first + torch.arange(len(idx)) * s).numpy()]))
                for w, m in zip(words, (real - warped).tolist()):
                    margins.setdefault(("real", w, name), []).append(m)
        z = torch.randn(b, tr.config.latent_dim, generator=tr.gen)[keep]
        st = starts[keep]
        fake = score(tr.fake(tokens, z, rel, steps, st).float())
        for f in tr.speed_factors(steps):
            warped = score(tr.fake(tokens, z, *tr.played_at(rel, steps, f), st).float())
            for w, m in zip(words, (fake - warped).tolist()):
                margins.setdefault(("generated", w, f"x{f:g}"), []).append(m)
    print(f"{ck} (step {step}): the clip at its own speed above the same clip at another "
          "(share, mean margin;\n  the same for the caption's share of it, for the "
          "caption's term <phi, code> alone, for it centred, and for the pair term; n)")
    for key in sorted(margins):
        m = np.asarray(margins[key])    # [n, 5]: own, word swapped, <phi, code>, centred, pair
        pair = m[~np.isnan(m[:, 4]), 4]
        caption = m[:, 0] - m[:, 1]
        print(f"  {key[0]:9s} caption {key[1]:4s} played {key[2]:4s}  "
              f"{(m[:, 0] > 0).mean():.3f}  {m[:, 0].mean():+.3f}  | the caption's share "
              f"{(caption > 0).mean():.3f}  {caption.mean():+.3f}  | the caption's term "
              f"{(m[:, 2] > 0).mean():.3f}  {m[:, 2].mean():+.3f}  | centred "
              f"{(m[:, 3] > 0).mean():.3f}  {m[:, 3].mean():+.3f}  | pair "
              f"{(pair > 0).mean() if len(pair) else float('nan'):.3f}  "
              f"{pair.mean() if len(pair) else float('nan'):+.3f}  n={len(m)}, "
              f"n_pair={len(pair)}")


if __name__ == "__main__":
    main()
