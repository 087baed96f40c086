"""Model hyper-parameters, saved as JSON beside the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ModelConfig:
    resolution: int = 64
    latent_dim: int = 16
    text_dim: int = 64          # token embedding width of the text encoder
    text_layers: int = 2
    style_dim: int = 256
    motion_channels: int = 32   # learned-phase sinusoids of time
    harmonics: int = 4          # time frequencies k / BASE_PERIOD, k = 1..harmonics
    base_size: int = 4
    channels: list[int] = field(default_factory=lambda: [128, 128, 64, 32, 16])
    leaky_slope: float = 0.2

    def __post_init__(self) -> None:
        blocks = len(self.channels) - 1
        if self.base_size * 2**blocks != self.resolution:
            raise ValueError(
                f"base_size {self.base_size} x 2^{blocks} blocks != resolution {self.resolution}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_json(Path(path).read_text())
