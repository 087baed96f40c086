"""The backend interface: a compiled or eager generator that turns (style, times) into frames."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


def to_display(frames: torch.Tensor) -> np.ndarray:
    """frames [N, 3, R, R] float in [-1, 1] -> [N, R, R, 3] uint8 RGB.

    Scaling to the output size happens in the sink (swscale, with the colour conversion:
    5x faster than a float upscale in torch first, 13 ms vs 60-100 ms for 16 frames to 256 x 256
    on one core of the 2-core CPU machine).
    """
    x = ((frames + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


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

    def display(self, w: torch.Tensor, t: torch.Tensor) -> np.ndarray:
        """As :meth:`frames`, as the encoder takes them: uint8 RGB [N, R, R, 3] on the host.
        Backends that can fuse the conversion into their last op override this."""
        return to_display(self.frames(w, t))

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def close(self) -> None:
        """Release what the backend holds and save its caches; nothing to do by default."""
