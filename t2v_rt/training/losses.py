"""Losses and regularisers of adversarial training: the non-saturating logistic loss,
matching-aware negatives, the image-caption contrastive loss, R1, DiffAugment restricted to what keeps the caption true, and the
EMA of the generator.

**Augmentation** (DiffAugment, Zhao et al. 2020: the same random, differentiable transform on
real and generated clips before the discriminators, so a small dataset does not make them
overfit). Only transforms that keep every caption true: colour and direction are attributes
(a "red ball moving left" must stay red and keep moving left), so there is no colour jitter,
no flip and no rotation. Two remain, each drawn per clip and applied identically to every
frame of it, so the motion between frames is untouched:

- translation: a circular shift of up to ``translate`` of the side (a permutation of the
  pixels: every frame keeps its exact mean colour);
- cutout: a square of ``cutout`` of the side filled with its own mean colour in each frame
  (the frame's mean colour is unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor | None = None,
           mismatch_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Non-saturating discriminator loss on logits. With ``mismatched`` (real clips scored
    with another clip's caption; ``mismatch_mask`` [B] bool: which of them really differ)
    those count as fakes too, half of the fake weight each (matching-aware)."""
    loss = F.softplus(-real).mean()
    if mismatched is None:
        return loss + F.softplus(fake).mean()
    m = F.softplus(mismatched)
    if mismatch_mask is not None:
        w = mismatch_mask.to(m.dtype)
        m = (m * w).sum() / w.sum().clamp(min=1.0)
    else:
        m = m.mean()
    return loss + 0.5 * F.softplus(fake).mean() + 0.5 * m


def negatives_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Discriminator loss of extra fakes (real clips under a wrong caption, or played at a wrong
    speed): the mean of softplus(logit) over the rows ``mask`` [N] (bool) keeps; 0 if none."""
    w = mask.to(logits.dtype)
    return (F.softplus(logits) * w).sum() / w.sum().clamp(min=1.0)


def ranking_loss(true: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Generator loss of a ranking (the speed ranking): the mean of softplus(other - true)
    over the rows ``mask`` [N] (bool) keeps, 0 if none: each ``true`` logit [N] should exceed
    its ``other`` one (the same generated clip at another speed, under the same caption)."""
    w = mask.to(true.dtype)
    return (F.softplus(other - true) * w).sum() / w.sum().clamp(min=1.0)


def g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log sigmoid(D(G(z)))."""
    return F.softplus(-fake).mean()


def contrastive_loss(feat: torch.Tensor, text: torch.Tensor, owner: torch.Tensor,
                     same: torch.Tensor) -> torch.Tensor:
    """Image-caption contrastive loss over the batch (XMC-GAN, Zhang et al. 2021), in a
    projection discriminator's own terms: row n of ``feat`` [N, dim] (the trunk's feature of a
    frame or clip) is scored against every caption code ``text`` [C, dim] (the batch's B
    captions first, then any more negatives) by the projection's inner product; cross-entropy
    over the C captions with the target ``owner[n]`` (the clip the row comes from, int64 [N],
    < B). Captions marked for the target's clip (``same`` [B, C] bool: the same text, or the
    same clip) other than the target itself are left out: they are not negatives. Every other
    caption is one, so a clip must fit its caption better than the captions that differ from
    it in one word only, not just better than one random caption."""
    logits = feat.float() @ text.float().t()                                   # [N, C]
    rows = torch.arange(owner.shape[0], device=owner.device)
    drop = same[owner].clone()
    drop[rows, owner] = False
    return F.cross_entropy(logits.masked_fill(drop, float("-inf")), owner)


def image_contrastive_loss(fake: torch.Tensor, real: torch.Tensor, same: torch.Tensor,
                           tau: float) -> torch.Tensor:
    """Real-fake image contrastive loss (XMC-GAN's image-to-image term, Zhang et al. 2021), for
    the generator: generated clip i's feature (``fake`` [B, dim], from a discriminator's trunk)
    must be nearer, in cosine similarity over ``tau``, to the real clip of its caption (column
    i of ``real`` [C, dim], the batch's B real clips first) than to every other real clip.
    Columns marked in ``same`` [B, C] (the same caption text, or the same data clip) other
    than i are left out: they are not negatives."""
    logits = F.normalize(fake.float(), dim=1) @ F.normalize(real.float(), dim=1).t() / tau
    owner = torch.arange(fake.shape[0], device=fake.device)
    drop = same.clone()
    drop[owner, owner] = False
    return F.cross_entropy(logits.masked_fill(drop, float("-inf")), owner)


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over the batch of |d sum(logits) / d inputs|^2, with a
    graph (it is trained through). ``inputs`` [B, ...] must require grad."""
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def augment_params(batch: int, size: int, gen: torch.Generator, translate: float = 0.125,
                   cutout: float = 0.25) -> dict[str, torch.Tensor]:
    """Random parameters of :func:`augment` for ``batch`` clips of side ``size`` (drawn from
    ``gen`` on the CPU, so a run and its resume draw the same)."""
    shift = int(round(translate * size))
    out = {"shift": torch.randint(-shift, shift + 1, (batch, 2), generator=gen)}
    side = int(round(cutout * size))
    if side > 0:
        out["cut"] = torch.randint(0, size - side + 1, (batch, 2), generator=gen)
        out["side"] = torch.tensor(side)
    return out


def augment(clips: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """clips [B, T, 3, H, W] -> the same, translated and cut out per clip (see the module
    docstring); differentiable. Every frame of a clip gets the same transform."""
    b, t, c, h, w = clips.shape
    shift = params["shift"].tolist()
    if any(dy or dx for dy, dx in shift):
        clips = torch.stack([torch.roll(clips[i], shifts=(dy, dx), dims=(-2, -1))
                             for i, (dy, dx) in enumerate(shift)])
    if "cut" in params:
        side = int(params["side"])
        ys = torch.arange(h).view(1, h, 1)
        xs = torch.arange(w).view(1, 1, w)
        y0 = params["cut"][:, 0].view(b, 1, 1)
        x0 = params["cut"][:, 1].view(b, 1, 1)
        box = ((ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side))     # [B, H, W]
        box = box.to(clips.device, clips.dtype)[:, None, None]                     # [B, 1, 1, H, W]
        mean = (clips * box).sum((-2, -1), keepdim=True) / (side * side)           # [B, T, 3, 1, 1]
        clips = clips * (1 - box) + mean * box
    return clips


def ema_beta(step: int, halflife_steps: float, rampup: float) -> float:
    """The EMA's decay at ``step``: half-life ``halflife_steps``, shorter early on (at most
    ``rampup`` x the steps so far, StyleGAN2-ADA's ramp-up) so that the average does not drag
    the random initialisation along; 0 (a copy) at step 0."""
    h = halflife_steps if rampup <= 0 else min(halflife_steps, step * rampup)
    return 0.5 ** (1.0 / h) if h > 0 else 0.0


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta ema + (1 - beta) model (parameters); buffers (BatchNorm statistics) copied."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - beta)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


__all__ = ["augment", "augment_params", "contrastive_loss", "d_loss", "ema_beta", "ema_update", "g_loss",
           "negatives_loss", "r1_penalty"]
