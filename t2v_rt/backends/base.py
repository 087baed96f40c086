"""The backend interface: a compiled or eager generator that turns (style, times) into frames."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Backend(ABC):
    """Runs the generator. One backend instance serves one model on one device.

    ``style`` is computed once per video (prompt + seed); ``frames`` once per batch of frame
    times, at a constant cost per frame whatever the times are.
    """

    name: str
    device: torch.device
    resolution: int

    @abstractmethod
    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] int64, z [B, Z] float32 -> per-video style w [B, S] on ``device``."""

    @abstractmethod
    def frames(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """w [N, S], t [N] float64 seconds -> frames [N, 3, R, R] float32 in [-1, 1]."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
