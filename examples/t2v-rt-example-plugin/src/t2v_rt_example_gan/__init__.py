"""``example-gan``: a worked example of a t2v-rt generator plugin.

Everything a plugin provides is here: a config (the JSON beside the weights, with bounds),
a generator implementing t2v-rt's interface, and the :class:`Architecture` that the entry
point ``t2v_rt.generators: example-gan`` names (see ``pyproject.toml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.errors import ConfigError
from t2v_rt.generators.config import GeneratorConfig, bounded, bounded_list, word_list
from t2v_rt.generators.interface import VideoGenerator
from t2v_rt.generators.registry import Architecture
from t2v_rt.generators.text import DEFAULT_VOCABULARY, VocabularyFrontEnd


@dataclass
class ExampleConfig(GeneratorConfig):
    """Every field has a default and bounds: no JSON can make t2v-rt build something huge."""

    ARCH = "example-gan"
    FORM = "continuous"          # frames are a function of time: any batch of any times

    resolution: int = bounded(32, 8, 512, "frame side: 4 x 2^(len(channels) - 1)")
    latent_dim: int = bounded(16, 1, 512)
    vocab: list[str] = word_list(DEFAULT_VOCABULARY, 50_000, "the words prompts may use")
    max_tokens: int = bounded(16, 1, 77)
    embed_dim: int = bounded(32, 4, 1024)
    style_dim: int = bounded(64, 4, 1024)
    periods: list[float] = bounded_list([0.5, 1.0, 2.0, 4.0], 0.01, 3600.0, 1, 32,
                                        "seconds; the time features are sin/cos of 2 pi t / P")
    channels: list[int] = bounded_list([64, 32, 16, 8], 1, 1024, 2, 8,
                                       "stem channels, then each upsampling block's")

    def check(self) -> None:
        if 4 * 2 ** (len(self.channels) - 1) != self.resolution:
            raise ConfigError(f"resolution {self.resolution} must be 4 x 2^(blocks "
                              f"{len(self.channels) - 1})")

    def front_end(self) -> VocabularyFrontEnd:
        return VocabularyFrontEnd(self.vocab, self.max_tokens)

    @property
    def feature_dim(self) -> int:
        return 2 * len(self.periods)

    def time_features(self, t):
        """Host float64, numpy (no PyTorch needed to stream): each period reduced first, so
        t = 10 h is as exact as t = 0."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        p = np.asarray(self.periods, dtype=np.float64)
        phase = 2 * math.pi * np.remainder(t[:, None], p) / p
        return np.concatenate([np.cos(phase), np.sin(phase)], axis=1).astype(np.float32)


class UpBlock(nn.Module):
    """Nearest x2 upsample -> 3x3 conv -> ReLU: a pattern t2v-rt's triton backend fuses."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))


class ExampleGenerator(VideoGenerator):
    Config = ExampleConfig

    def __init__(self, config: ExampleConfig):
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(len(c.vocab) + 1, c.embed_dim, padding_idx=0)
        self.mapping = nn.Sequential(nn.Linear(c.embed_dim + c.latent_dim, c.style_dim),
                                     nn.LeakyReLU(0.2), nn.Linear(c.style_dim, c.style_dim))
        self.motion = nn.Linear(c.feature_dim, c.style_dim)
        self.stem = nn.Linear(c.style_dim, c.channels[0] * 16)
        self.blocks = nn.ModuleList(UpBlock(a, b) for a, b in zip(c.channels, c.channels[1:]))
        self.to_rgb = nn.Conv2d(c.channels[-1], 3, 1)

    def style(self, tokens, z):
        """Mean of the prompt's word embeddings, with z, through the mapping: w [B, style_dim]."""
        mask = (tokens > 0).unsqueeze(-1).to(z.dtype)
        text = (self.embed(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.mapping(torch.cat([text, z], dim=1))

    def synthesize(self, w, features):
        h = F.leaky_relu(w + self.motion(features), 0.2)
        x = F.leaky_relu(self.stem(h), 0.2).view(-1, self.config.channels[0], 4, 4)
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_rgb(x))


ARCHITECTURE = Architecture(
    name="example-gan",
    generator=ExampleGenerator,
    summary="the worked example of a plugin (docs/bring-your-own-generator.md)",
    presets={"tiny": {"resolution": 16, "channels": [16, 8, 8], "style_dim": 16,
                      "embed_dim": 8}},
)
