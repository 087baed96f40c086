"""Small building blocks for architectures: initialisers that are safe on the meta device (the
shape plan of ``t2v_rt.generators.io`` builds every generator there before allocating), and the
masked mean of token embeddings that simple text encoders use."""

from __future__ import annotations

import math

import torch
from torch import nn


def normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """Fill ``t`` from N(0, std^2) in place, except on the meta device: there a tensor is only a
    shape, and drawing would import PyTorch's reference kernels (seconds)."""
    if t.device.type != "meta":
        with torch.no_grad():
            t.normal_(0.0, std)
    return t


def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
    """A new N(0, std^2) tensor on the current default device (meta: shape only)."""
    return normal_(torch.empty(*shape), std)


def embedding(num: int, dim: int) -> nn.Embedding:
    """nn.Embedding(num, dim, padding_idx=0) with N(0, 1) rows and a zero padding row."""
    weight = randn(num, dim)
    if weight.device.type != "meta":
        weight[0] = 0
    return nn.Embedding(num, dim, padding_idx=0, _weight=weight)


def linear(cin: int, cout: int, gain: float = 1.0, bias: float = 0.0) -> nn.Linear:
    """A Linear with weights N(0, gain^2 / cin) and a constant bias."""
    layer = nn.Linear(cin, cout)
    normal_(layer.weight, gain / math.sqrt(cin))
    nn.init.constant_(layer.bias, bias)
    return layer


def masked_mean(embed: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [B, L] (0 = padding) -> the mean of the non-padding embeddings [B, D]."""
    e = embed(tokens)                                                   # [B, L, D]
    mask = (tokens != 0).to(e.dtype).unsqueeze(-1)                      # [B, L, 1]
    return (e * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
