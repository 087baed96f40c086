"""Text-aware discriminators for adversarial training of any generator (no paired targets).

Both score (pixels, caption) pairs with the projection discriminator of Miyato & Koyama
(2018): ``logit = out(phi(x)) + <phi(x), embed(caption)>``, where ``phi`` is a conv trunk and
``embed`` a small caption embedding of their own over the token ids of the generator's front
end (:meth:`~t2v_rt.generators.text.TextFrontEnd.encode`; 0 pads), or, for a generator that
reads a pretrained sentence encoder (config ``text_encoder``), a Linear of their own over the
same frozen caption embedding. Trained with real
clips under mismatched captions as extra negatives (matching-aware, Reed et al. 2016), they
judge whether the video fits its caption, not only whether it looks real.

- :class:`FrameDiscriminator`: one frame ``[N, 3, R, R]`` (appearance);
- :class:`VideoDiscriminator`: a short clip ``[B, T, 3, R, R]`` with its frame times: the
  frames and their differences stacked on channels, plus constant channels holding each
  frame's time after the first (early fusion, as DIGAN's and StyleGAN-V's video
  discriminators read time gaps), so it judges motion: its direction, speed and smoothness.
  With ``velocity_unit`` u > 0, each difference is divided by its time gap in units of u
  seconds (a rate of change, the same for one motion at every stride: a stand-in for the
  motion's speed that needs no product of the gap channels and the differences to learn).

Widths follow the resolution (``base`` channels at full resolution, doubling at each x2
downsampling up to ``max_width``, down to 4x4 or a little more); nothing here knows what the
videos show. The frame discriminator may read its frames first through ``stem`` stride-1 3x3
convs of ``base`` channels at full resolution, so that its first downsampling sees edges and
corners already found at pixel scale rather than raw pixels (0: none, the trunk alone).
With ``patch_side``, it also gives one verdict per region of its trunk's map of that side
(PatchGAN, Isola et al. 2017), text-aware in the same projection form
(:meth:`ProjectionDiscriminator.project_patches`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_RESOLUTION = 8


def trunk_widths(resolution: int, base: int, max_width: int) -> list[int]:
    """Channels after each stride-2 conv: ``base * 2^i`` capped at ``max_width``, as many
    convs as halve ``resolution`` down to 4..7 pixels (at least one)."""
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"discriminators need frames of {MIN_RESOLUTION} pixels or more, got "
                         f"{resolution}")
    downs = max(1, int(math.floor(math.log2(resolution / 4))))
    return [min(base * 2**i, max_width) for i in range(downs)]


def trunk_sides(resolution: int, base: int, max_width: int) -> list[int]:
    """The side of the trunk's map after each stride-2 conv of :func:`trunk_widths` (the
    sides a per-region verdict can be taken at)."""
    return [resolution >> (i + 1) for i in range(len(trunk_widths(resolution, base, max_width)))]


class CaptionEmbedding(nn.Module):
    """Token ids [B, L] (0 pads) -> [B, dim]: the mean of the tokens' embeddings, then an MLP.
    With ``embedding_dim``: a sentence embedding [B, embedding_dim] -> [B, dim], a Linear in
    place of the token embedding, then the MLP."""

    def __init__(self, vocab_size: int, dim: int, embedding_dim: int = 0):
        super().__init__()
        self.embed = (nn.Linear(embedding_dim, dim) if embedding_dim else
                      nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0))
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(tokens))


class ProjectionDiscriminator(nn.Module):
    """x [N, C, R, R], tokens [N, L] -> logits [N]: ``stem`` stride-1 3x3 convs of ``base``
    channels (none by default) -> conv trunk (4x4 stride-2 convs) -> Linear -> feature phi
    [N, dim], leaky ReLU 0.2 after each; logit = out(phi) + <phi, embed(tokens)>. With
    ``embedding_dim``, ``tokens`` are caption embeddings [N, embedding_dim]."""

    def __init__(self, cin: int, resolution: int, vocab_size: int, base: int = 32,
                 max_width: int = 256, dim: int = 128, embedding_dim: int = 0,
                 stem: int = 0, patch_side: int = 0):
        super().__init__()
        if stem < 0:
            raise ValueError(f"stem convs must be 0 or more, got {stem}")
        widths = trunk_widths(resolution, base, max_width)
        sides = trunk_sides(resolution, base, max_width)
        if patch_side and patch_side not in sides:
            raise ValueError(f"patch verdicts are taken on one of the trunk's maps, of side "
                             f"{', '.join(map(str, sides))}; got {patch_side}")
        c = cin
        stem_layers: list[nn.Module] = []
        for _ in range(stem):
            stem_layers += [nn.Conv2d(c, base, 3, stride=1, padding=1), nn.LeakyReLU(0.2)]
            c = base
        # a module of its own (empty without a stem), so the trunk's parameter names, and the
        # checkpoints of discriminators without one, are unchanged
        self.stem = nn.Sequential(*stem_layers)
        layers: list[nn.Module] = []
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = w
        self.trunk = nn.Sequential(*layers)
        side = resolution // 2 ** len(widths)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, dim), nn.LeakyReLU(0.2))
        self.out = nn.Linear(dim, 1)
        self.caption = CaptionEmbedding(vocab_size, dim, embedding_dim)
        self.resolution, self.cin = resolution, cin
        # Per-region verdicts (PatchGAN, Isola et al. 2017, made text-aware the same way as the
        # whole-image one): 1x1 convs on the trunk's map of side patch_side. None without, so
        # the parameter names, and older checkpoints, are unchanged.
        self.patch: nn.ModuleDict | None = None
        self.patch_layers = 0
        if patch_side:
            k = sides.index(patch_side)
            self.patch_layers = 2 * (k + 1)             # conv + activation per trunk level
            self.patch = nn.ModuleDict({"out": nn.Conv2d(widths[k], 1, 1),
                                        "embed": nn.Conv2d(widths[k], dim, 1)})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's feature phi [N, dim] of inputs [N, C, R, R]."""
        return self.fc(self.trunk(self.stem(x)))

    def features_and_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """phi [N, dim] as :meth:`features` gives it, and the trunk's map [N, C, S, S] at
        ``patch_side`` S that :meth:`project_patches` reads (None without patch verdicts), from
        one pass."""
        if self.patch is None:
            return self.features(x), None
        h, patches = self.stem(x), None
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i + 1 == self.patch_layers:
                patches = h
        return self.fc(h), patches

    def project_patches(self, patches: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Logits [N, S * S], one per region, of the trunk's map ``patches`` [N, C, S, S] under
        caption codes ``text`` [N, dim]: ``out(h) + <embed(h), text>`` at each place, where
        ``h`` is the map's column there (it sees the region its receptive field covers)."""
        assert self.patch is not None, "built without patch_side"
        text = text.to(patches.dtype)
        code = self.patch["embed"](patches)                                      # [N, dim, S, S]
        return (self.patch["out"](patches).flatten(1)
                + torch.einsum("nchw,nc->nhw", code, text).flatten(1)).float()

    def project(self, feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Logits [N] of features [N, dim] under caption codes ``text`` [N, dim] (from
        :attr:`caption`): ``out(phi) + <phi, text>``."""
        return (self.out(feat).squeeze(1) + self._match(feat, text)).float()

    def caption_term(self, feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The caption's term [N] of :meth:`project`'s logits: ``<phi, text>``."""
        return self._match(feat, text).float()

    @staticmethod
    def _match(feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``<phi, text>`` [N] in the features' dtype."""
        return (feat * text.to(feat.dtype)).sum(1)

    def score(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x), self.caption(tokens))


class FrameDiscriminator(ProjectionDiscriminator):
    """frames [N, 3, R, R] in [-1, 1], tokens [N, L] -> logits [N]; ``stem``: stride-1 3x3
    convs at full resolution before the trunk; ``patch_side`` > 0: also one verdict per
    region of the trunk's map of that side (:meth:`project_patches`)."""

    def __init__(self, resolution: int, vocab_size: int, base: int = 32, max_width: int = 256,
                 dim: int = 128, embedding_dim: int = 0, stem: int = 0, patch_side: int = 0):
        super().__init__(3, resolution, vocab_size, base, max_width, dim, embedding_dim, stem,
                         patch_side)

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """The trunk's input: the frames, their shape checked."""
        n, c, h, w = frames.shape
        if c != 3 or h != self.resolution or w != self.resolution:
            raise ValueError(f"frames must be [N, 3, {self.resolution}, {self.resolution}], got "
                             f"{list(frames.shape)}")
        return frames

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.score(self.prepare(frames), tokens)


class VideoDiscriminator(ProjectionDiscriminator):
    """clips [B, T, 3, R, R] in [-1, 1] with times [B, T] (seconds), tokens [B, L] -> logits
    [B]. Input channels: the T frames, the T - 1 differences of neighbours (with
    ``velocity_unit`` u > 0, each times u / its time gap), and T - 1 constant channels with
    each frame's time after the first."""

    def __init__(self, frames: int, resolution: int, vocab_size: int, base: int = 32,
                 max_width: int = 256, dim: int = 128, embedding_dim: int = 0,
                 velocity_unit: float = 0.0):
        if frames < 2:
            raise ValueError(f"a video discriminator reads 2 or more frames, got {frames}")
        if not velocity_unit >= 0:
            raise ValueError(f"velocity_unit must be 0 (off) or a positive number of seconds, "
                             f"got {velocity_unit}")
        super().__init__(3 * frames + 3 * (frames - 1) + frames - 1, resolution, vocab_size,
                         base, max_width, dim, embedding_dim)
        self.frames = frames
        self.velocity_unit = float(velocity_unit)

    def forward(self, clips: torch.Tensor, times: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.score(self.prepare(clips, times), tokens)

    def prepare(self, clips: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """The trunk's input [B, 7T - 4, R, R]: frames, differences, time channels."""
        b, t, c, h, w = clips.shape
        if t != self.frames or c != 3 or h != self.resolution or w != self.resolution:
            raise ValueError(f"clips must be [B, {self.frames}, 3, {self.resolution}, "
                             f"{self.resolution}], got {list(clips.shape)}")
        diffs = clips[:, 1:] - clips[:, :-1]                                    # [B, T-1, 3, H, W]
        if self.velocity_unit > 0:
            step = (times[:, 1:] - times[:, :-1]).to(clips.dtype)              # [B, T-1]
            if not bool((step > 0).all()):
                raise ValueError("velocity: frame times must increase")
            diffs = diffs * (self.velocity_unit / step)[:, :, None, None, None]
        gaps = (times[:, 1:] - times[:, :1]).to(clips.dtype)                    # [B, T-1]
        gaps = gaps[:, :, None, None].expand(b, t - 1, h, w)
        return torch.cat([clips.reshape(b, t * c, h, w), diffs.reshape(b, (t - 1) * c, h, w),
                          gaps], dim=1)


__all__ = ["MIN_RESOLUTION", "CaptionEmbedding", "FrameDiscriminator", "ProjectionDiscriminator",
           "VideoDiscriminator", "trunk_widths"]
