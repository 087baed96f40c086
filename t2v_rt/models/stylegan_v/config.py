"""The ``stylegan-v`` generator's config (the JSON beside its weights), with its bounds, and the
torch-free half of its interface: the vocabulary front end, the latent, the time features.

Time features: for K periods P_k, geometric from ``min_period`` to ``max_period`` (seconds),
``[cos(2 pi t / P_k) for k] + [sin(2 pi t / P_k) for k]``, computed on the host in float64 with
t reduced modulo each P_k first, so a frame at t = 10 h is as exact as one at t = 0. The
defaults (8 periods, 0.25 s to 32 s) are the powers of two 0.25, 0.5, ..., 32 s, exactly (the
exponents are computed in base 2), each of which divides 36000 s: the features at t and at
t + 10 h are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from t2v_rt.errors import ConfigError
from t2v_rt.generators.config import (
    GeneratorConfig, bounded, bounded_list, text_encoder_field, word_list,
)
from t2v_rt.generators.text import DEFAULT_VOCABULARY

# One frame's widest activation (channels x side^2, elements) that a config may ask for:
# 2^26 floats = 256 MiB per frame in fp32, four times StyleGAN2-1024's widest layer.
MAX_ACTIVATION = 1 << 26


@dataclass
class StyleganVConfig(GeneratorConfig):
    """StyleGAN-V style continuous-time generator (see
    :mod:`t2v_rt.models.stylegan_v.generator`)."""

    ARCH = "stylegan-v"
    FORM = "continuous"

    resolution: int = bounded(256, 8, 1024, "frame side, a power of two")
    latent_dim: int = bounded(512, 1, 1024, "per-video latent z")
    vocab: list[str] = word_list(DEFAULT_VOCABULARY, 50_000, "the text front end's words")
    max_tokens: int = bounded(16, 1, 77, "token axis of the text graph (longest prompt)")
    text_encoder: str | None = text_encoder_field()
    text_dim: int = bounded(128, 4, 1024, "token embedding width = text code width")
    w_dim: int = bounded(512, 1, 1024, "width of the mapped style w")
    mapping_layers: int = bounded(4, 1, 8, "layers of the mapping network [text, z] -> w")
    motion_dim: int = bounded(128, 1, 1024, "width of the per-frame motion code m")
    time_periods: int = bounded(8, 1, 64, "number K of time periods (features: 2K)")
    min_period: float = bounded(0.25, 0.01, 3600.0, "shortest period, seconds")
    max_period: float = bounded(32.0, 0.01, 3600.0, "longest period, seconds")
    time_modulation: str = bounded("hidden", 0, 0, "what each video's style scales in the "
                                   "motion MLP: its hidden layer (FiLM), or also every time "
                                   "feature (features)", choices=("hidden", "features"))
    channels: list[int] = bounded_list([512, 512, 512, 256, 128, 64, 64], 1, 1024, 2, 9,
                                       "channels at 4x4, 8x8, ..., resolution (log2(res) - 1)")
    block_convs: int = bounded(1, 1, 4, "3x3 modulated convs at each resolution above 4x4: the "
                               "upsampling one, then block_convs - 1 more at that resolution "
                               "(StyleGAN2: 2)")
    coordinates: str = bounded("none", 0, 0, "every 3x3 modulated conv also adds a learned "
                               "1x1 conv of each pixel's coordinates (absolute: CoordConv) "
                               "before its activation", choices=("none", "absolute"))

    def check(self) -> None:
        r = self.resolution
        if r & (r - 1):
            raise ConfigError(f"model config: resolution must be a power of two, got {r}")
        want = int(math.log2(r)) - 1
        if len(self.channels) != want:
            raise ConfigError(f"model config: channels needs one entry per resolution 4, 8, ..., "
                              f"{r} ({want} entries), got {len(self.channels)}")
        for i, c in enumerate(self.channels):
            side = 4 * 2**i
            if c * side * side > MAX_ACTIVATION:
                raise ConfigError(f"model config: channels[{i}] = {c} at {side}x{side} is "
                                  f"{c * side * side} values per frame (at most {MAX_ACTIVATION})")
        if self.min_period > self.max_period:
            raise ConfigError(f"model config: min_period ({self.min_period:g}) must not exceed "
                              f"max_period ({self.max_period:g})")

    # --- interface (torch-free parts) ---------------------------------------------------

    @property
    def periods(self) -> list[float]:
        """The K periods in seconds: min_period * 2^(k log2(max/min) / (K - 1)), k = 0..K-1
        (K = 1: min_period). Powers of two stay exact."""
        k_count = self.time_periods
        if k_count == 1:
            return [float(self.min_period)]
        octaves = math.log2(self.max_period / self.min_period)
        return [self.min_period * 2.0 ** (k * octaves / (k_count - 1)) for k in range(k_count)]

    @property
    def feature_dim(self) -> int:
        return 2 * self.time_periods

    @property
    def style_width(self) -> int:
        """Width of w: the mapped style, then the motion modulation (gamma, beta), then with
        ``time_modulation`` "features" one gain per time feature."""
        gains = self.feature_dim if self.time_modulation == "features" else 0
        return self.w_dim + 2 * self.motion_dim + gains

    def time_features(self, t):
        """[N] seconds -> [N, 2K] float32 (numpy): cos then sin of 2 pi (t mod P_k) / P_k,
        in float64."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        p = np.asarray(self.periods, dtype=np.float64)
        phase = 2 * math.pi * np.remainder(t[:, None], p[None, :]) / p[None, :]
        return np.concatenate([np.cos(phase), np.sin(phase)], axis=1).astype(np.float32)
