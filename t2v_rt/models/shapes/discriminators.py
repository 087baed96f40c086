"""Text-aware frame and video discriminators (projection conditioning, Miyato & Koyama 2018).

Both see the caption through a bag-of-words embedding of their own, and are trained with
real clips under mismatched captions as extra negatives (matching-aware, Reed et al. 2016).
The video discriminator sees a short clip with its time stamps (DIGAN / StyleGAN-V): frames
stacked on channels plus constant channels holding the time gaps, so it can judge motion
speed and direction, not only appearance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.models.shapes.grammar import VOCAB


class _CaptionEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(len(VOCAB), dim, mode="mean", padding_idx=0)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(tokens))


def _trunk(cin: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        cin = w
    return nn.Sequential(*layers)


class _ProjectionD(nn.Module):
    def __init__(self, cin: int, resolution: int, widths: list[int], dim: int):
        super().__init__()
        self.trunk = _trunk(cin, widths)
        side = resolution // 2 ** len(widths)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, dim),
                                nn.LeakyReLU(0.2))
        self.out = nn.Linear(dim, 1)
        self.caption = _CaptionEmbedding(dim)

    def score(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        feat = self.fc(self.trunk(x))
        return (self.out(feat) + (feat * self.caption(tokens)).sum(1, keepdim=True)).squeeze(1)


class FrameDiscriminator(_ProjectionD):
    """frames [B, 3, R, R], tokens [B, L] -> logits [B]."""

    def __init__(self, resolution: int = 64, widths: list[int] | None = None, dim: int = 256):
        super().__init__(3, resolution, widths or [32, 64, 128, 256], dim)

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.score(frames, tokens)


class VideoDiscriminator(_ProjectionD):
    """clips [B, T, 3, R, R] with times [B, T] seconds, tokens [B, L] -> logits [B]."""

    def __init__(self, frames: int = 3, resolution: int = 64, widths: list[int] | None = None,
                 dim: int = 256):
        super().__init__(3 * frames + frames - 1, resolution, widths or [64, 96, 128, 256], dim)
        self.frames = frames

    def forward(self, clips: torch.Tensor, times: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clips.shape
        gaps = (times[:, 1:] - times[:, :1]).to(clips.dtype)                    # [B, T-1]
        gaps = gaps[:, :, None, None].expand(b, t - 1, h, w)
        return self.score(torch.cat([clips.reshape(b, t * c, h, w), gaps], dim=1), tokens)


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def d_loss(real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss; real clips with the wrong caption count as fakes."""
    return F.softplus(-real).mean() + F.softplus(fake).mean() * 0.5 + F.softplus(mismatched).mean() * 0.5


def g_loss(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()
