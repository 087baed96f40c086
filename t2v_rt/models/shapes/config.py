"""The shapes generator's config (the JSON beside its weights), with its bounds, and the
torch-free half of its interface: the grammar front end, the latent, the time features."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from t2v_rt.errors import ConfigError
from t2v_rt.generators.config import GeneratorConfig, bounded, bounded_list
from t2v_rt.generators.text import TextFrontEnd
from t2v_rt.models.shapes.spec import BASE_PERIOD



class GrammarFrontEnd(TextFrontEnd):
    """The shapes world's caption grammar (``grammar.parse_prompt``): a prompt is parsed, so an
    unknown, misplaced or contradictory word is one line naming it."""

    def __init__(self):
        from t2v_rt.models.shapes.grammar import MAX_TOKENS, VOCAB

        self.max_tokens = MAX_TOKENS
        self._vocab = len(VOCAB)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    def encode(self, prompts):
        from t2v_rt.models.shapes.grammar import encode_ids, parse_prompt

        return encode_ids([parse_prompt(p) for p in prompts])

    def check(self, prompt: str) -> None:
        from t2v_rt.models.shapes.grammar import parse_prompt

        parse_prompt(prompt)

    def example_prompts(self, rng: random.Random, n: int) -> list[str]:
        from t2v_rt.models.shapes.captions import caption, sample_attributes

        return [caption(sample_attributes(rng, rng.choice([0.0, 0.5])), rng) for _ in range(n)]


@dataclass
class ModelConfig(GeneratorConfig):
    ARCH = "shapes"
    FORM = "continuous"

    resolution: int = bounded(64, 8, 1024, "frame side (base_size x 2^blocks)")
    latent_dim: int = bounded(16, 2, 1024, "per-video latent z (the world reads its first 10)")
    text_dim: int = bounded(64, 4, 1024, "token embedding width of the text encoder (4 heads)")
    text_layers: int = bounded(2, 1, 12, "Transformer layers of the text encoder")
    style_dim: int = bounded(256, 8, 2048, "width of the mapped style")
    motion_channels: int = bounded(32, 1, 512, "learned-phase sinusoids of time")
    harmonics: int = bounded(4, 1, 64, "time frequencies k / BASE_PERIOD, k = 1..harmonics")
    base_size: int = bounded(4, 1, 64, "side of the stem")
    channels: list[int] = bounded_list([128, 128, 64, 32, 16], 1, 2048, 2, 10,
                                       "stem channels, then each block's output channels")
    leaky_slope: float = bounded(0.2, 0.0, 1.0)

    def check(self) -> None:
        blocks = len(self.channels) - 1
        if self.base_size * 2**blocks != self.resolution:
            raise ConfigError(f"model config: base_size {self.base_size} x 2^{blocks} blocks != "
                              f"resolution {self.resolution}")
        if self.text_dim % 4:
            raise ConfigError(f"model config: text_dim must be a multiple of 4 (heads), got "
                              f"{self.text_dim}")

    # --- interface (torch-free parts) ---------------------------------------------------

    def front_end(self) -> GrammarFrontEnd:
        return GrammarFrontEnd()

    @property
    def feature_dim(self) -> int:
        return 2 * self.harmonics

    def time_features(self, t):
        return time_basis(t, self.harmonics)


def time_basis(t, harmonics: int):
    """[N] seconds (any float dtype; numpy, a list or a torch tensor) -> [N, 2 * harmonics]
    float32: cos/sin of 2 pi k t / BASE_PERIOD, k = 1..harmonics, reduced modulo the period
    in float64 first. numpy for numpy input (the torch-free runtime), a torch tensor on the
    input's device for a torch input (training)."""
    if type(t).__module__.startswith("torch"):
        import torch

        t = torch.remainder(t.to(torch.float64), BASE_PERIOD)
        k = torch.arange(1, harmonics + 1, dtype=torch.float64, device=t.device)
        w = 2 * math.pi * t[:, None] * k[None, :] / BASE_PERIOD
        return torch.cat([torch.cos(w), torch.sin(w)], dim=1).to(torch.float32)
    import numpy as np

    t = np.remainder(np.asarray(t, dtype=np.float64).reshape(-1), BASE_PERIOD)
    k = np.arange(1, harmonics + 1, dtype=np.float64)
    w = 2 * math.pi * t[:, None] * k[None, :] / BASE_PERIOD
    return np.concatenate([np.cos(w), np.sin(w)], axis=1).astype(np.float32)
