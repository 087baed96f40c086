"""Training clips rendered on the fly, deterministic by seed, never a held-out pair."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from t2v_rt.models.shapes.grammar import encode_tokens, parse_prompt
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.captions import caption, sample_attributes
from t2v_rt.models.shapes.render import render_frames
from t2v_rt.models.shapes.scene import LATENT_DIM, Scene


@dataclass
class Batch:
    tokens: torch.Tensor      # [B, L] token ids of the captions
    z: torch.Tensor           # [B, Z] per-video latents
    times: torch.Tensor       # [B, T] seconds
    frames: torch.Tensor      # [B, T, 3, S, S] in [-1, 1]
    coverage: torch.Tensor    # [B, T, 1, S, S] shape coverage in [0, 1]
    centres: torch.Tensor     # [B, T, 2] the shape's centre (x, y) in [0, 1]
    wrong_tokens: torch.Tensor  # [B, L] captions of other videos (mismatched negatives)
    scenes: list[Scene]
    captions: list[str]
    named: list[dict[str, str | None]]  # what each caption names (None: left out)


def render_clips(scenes: list[Scene], centres: torch.Tensor,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of ``scenes`` with the shape at ``centres`` [B, T, 2] (frame units): frames
    [B, T, 3, S, S] in [-1, 1] and the shape's coverage [B, T, 1, S, S]."""
    nb, nt = centres.shape[:2]
    rep = lambda attr: [getattr(sc, attr) for sc in scenes for _ in range(nt)]  # noqa: E731
    frames, cov = render_frames(rep("shape"), rep("colour"), rep("size"), rep("background"),
                                centres[..., 0].reshape(-1), centres[..., 1].reshape(-1), size)
    return (frames * 2 - 1).view(nb, nt, 3, size, size), cov.view(nb, nt, 1, size, size)


class ShapesClips:
    """An endless, seeded stream of captioned clips: ``batch(i)`` is a pure function of (seed, i)."""

    def __init__(self, seed: int = 0, size: int = 64, frames_per_clip: int = 3,
                 max_span: float = 1.0, max_t0: float = 8.0, p_omit: float = 0.25,
                 p_canonical: float = 0.5):
        self.seed, self.size, self.frames_per_clip = seed, size, frames_per_clip
        self.max_span, self.max_t0 = max_span, max_t0
        self.p_omit, self.p_canonical = p_omit, p_canonical

    def sample(self, rng: random.Random, gen: torch.Generator) -> tuple[Scene, str, torch.Tensor, torch.Tensor]:
        p_omit = 0.0 if rng.random() < self.p_canonical else self.p_omit
        given = sample_attributes(rng, p_omit)
        text = caption(given, rng if rng.random() < 0.7 else None)
        z = torch.randn(LATENT_DIM, generator=gen)
        scene = Scene.complete(given, z)
        assert not spec.is_held_out(scene.colour, scene.shape)
        t0 = rng.uniform(0.0, self.max_t0)
        offsets = sorted(rng.uniform(0.0, self.max_span) for _ in range(self.frames_per_clip - 1))
        times = torch.tensor([t0] + [t0 + o for o in offsets], dtype=torch.float64)
        return scene, text, z, times

    def choices(self, index: int, n: int, p_omit: float = 0.5) -> tuple[
            torch.Tensor, torch.Tensor, list[dict[str, str | None]], list[dict[str, str]]]:
        """Captions without clips, for the generator's choice heads: token ids [n, L], latents
        [n, Z], what each caption names (None: left out) and the attributes the world completes
        them to (left-out ones picked by ``z``). A pure function of (seed, index); each
        attribute is left out with ``p_omit``."""
        rng = random.Random(f"{self.seed}:choices:{index}")
        gen = torch.Generator().manual_seed(hash((self.seed, index, 1)) & 0x7FFFFFFF)
        prompts, zs, attrs = [], [], []
        for _ in range(n):
            given = sample_attributes(rng, p_omit)
            z = torch.randn(LATENT_DIM, generator=gen)
            prompts.append(parse_prompt(caption(given, rng if rng.random() < 0.7 else None)))
            zs.append(z)
            attrs.append(Scene.complete(given, z).attributes())
        return encode_tokens(prompts), torch.stack(zs), [p.attributes for p in prompts], attrs

    def batch(self, index: int, batch_size: int) -> Batch:
        rng = random.Random(f"{self.seed}:{index}")
        gen = torch.Generator().manual_seed(hash((self.seed, index)) & 0x7FFFFFFF)
        items = [self.sample(rng, gen) for _ in range(batch_size)]
        scenes, texts, zs, times = zip(*items)
        centres = torch.stack([torch.stack(sc.centre(tt), dim=-1) for sc, tt in zip(scenes, times)])
        frames, cov = render_clips(scenes, centres, self.size)
        prompts = [parse_prompt(x) for x in texts]
        tokens = encode_tokens(prompts)
        return Batch(
            tokens=tokens,
            z=torch.stack(zs),
            times=torch.stack(times),
            frames=frames,
            coverage=cov,
            centres=centres.float(),
            wrong_tokens=tokens.roll(1, dims=0),
            scenes=list(scenes),
            captions=list(texts),
            named=[p.attributes for p in prompts],
        )
