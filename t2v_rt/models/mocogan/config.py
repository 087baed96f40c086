"""The ``mocogan`` generator's config (the JSON beside its weights), with its bounds, and the
torch-free half of its interface: the vocabulary front end, the latent split, the frame rate.

The latent ``z`` [latent_dim] is split in two: ``z[:content_latent]`` is MoCoGAN's content
noise z_C (with the text, it makes the per-video content code), ``z[content_latent:]`` is the
motion seed z_M (the motion pseudo-noise's frequencies and phases, and with the text, the
GRU's per-video conditioning). Default 60 = 50 + 10, MoCoGAN's sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from t2v_rt.errors import ConfigError
from t2v_rt.generators.config import (
    GeneratorConfig, bounded, bounded_list, text_encoder_field, word_list,
)
from t2v_rt.generators.text import DEFAULT_VOCABULARY

# One frame's widest activation (channels x side^2, elements) that a config may ask for:
# 2^26 floats = 256 MiB per frame in fp32, four times StyleGAN2-1024's widest layer.
MAX_ACTIVATION = 1 << 26


@dataclass
class MocoganConfig(GeneratorConfig):
    """MoCoGAN-style recurrent generator (see :mod:`t2v_rt.models.mocogan.generator`)."""

    ARCH = "mocogan"
    FORM = "recurrent"

    resolution: int = bounded(64, 8, 1024, "frame side: 4 x 2^len(channels) (a power of two)")
    latent_dim: int = bounded(60, 2, 1024, "per-video latent z = [z_content | z_motion]")
    content_latent: int = bounded(50, 1, 1023, "how many leading entries of z are z_content; "
                                               "the rest are the motion seed z_motion")
    vocab: list[str] = word_list(DEFAULT_VOCABULARY, 50_000, "the text front end's words")
    max_tokens: int = bounded(16, 1, 77, "token axis of the text graph (longest prompt)")
    text_encoder: str | None = text_encoder_field()
    text_dim: int = bounded(128, 4, 1024, "token embedding width = text code width")
    content_dim: int = bounded(128, 1, 1024, "per-video content code (MLP of text, z_content)")
    motion_dim: int = bounded(32, 1, 1024, "GRU hidden size = per-frame motion code = features")
    noise_dim: int = bounded(10, 1, 1024, "width of the per-step motion pseudo-noise e_t")
    oscillators: int = bounded(16, 1, 256, "unit phasors whose projection is e_t")
    channels: list[int] = bounded_list([512, 256, 128, 64], 1, 1024, 1, 8,
                                       "image generator: channels at 4x4, then after each "
                                       "x2 transposed-conv block (the last block goes to RGB)")
    fps: int = bounded(15, 1, 120, "native frame rate: one GRU step per frame at this rate")

    def check(self) -> None:
        if self.content_latent >= self.latent_dim:
            raise ConfigError(f"model config: content_latent ({self.content_latent}) must be less "
                              f"than latent_dim ({self.latent_dim}): the rest is the motion seed")
        want = 4 * 2 ** len(self.channels)
        if self.resolution != want:
            raise ConfigError(f"model config: resolution {self.resolution} != 4 x 2^"
                              f"{len(self.channels)} (one x2 block per entry of channels after "
                              f"the 4x4 stem; the last goes to RGB) = {want}")
        for i, c in enumerate(self.channels):
            side = 4 * 2**i
            if c * side * side > MAX_ACTIVATION:
                raise ConfigError(f"model config: channels[{i}] = {c} at {side}x{side} is "
                                  f"{c * side * side} values per frame (at most {MAX_ACTIVATION})")

    # --- interface (torch-free parts) ---------------------------------------------------

    @property
    def motion_latent(self) -> int:
        """Width of the motion seed z_motion = z[content_latent:]."""
        return self.latent_dim - self.content_latent

    @property
    def feature_dim(self) -> int:
        return self.motion_dim

    @property
    def state_dim(self) -> int:
        return self.motion_dim + 2 * self.oscillators

    @property
    def style_width(self) -> int:
        """Width of w: content code, motion conditioning, cos/sin of the phases, cos/sin of the
        per-step rotations."""
        return self.content_dim + self.motion_dim + 4 * self.oscillators

    @property
    def native_fps(self) -> Fraction:
        return Fraction(self.fps)
