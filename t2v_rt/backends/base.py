"""The backend interface: a compiled or eager generator that turns (style, times) into frames."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from t2v_rt.generators.config import GeneratorConfig


def to_display(frames: torch.Tensor) -> np.ndarray:
    """frames [N, 3, R, R] float in [-1, 1] -> [N, R, R, 3] uint8 RGB.

    Scaling to the output size happens in the sink (swscale, with the colour conversion:
    5x faster than a float upscale in torch first, 13 ms vs 60-100 ms for 16 frames to 256 x 256
    on one core of the 2-core CPU machine).
    """
    x = ((frames + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class Backend(ABC):
    """Runs a generator (any architecture, through :mod:`t2v_rt.generators.interface`). One
    backend instance serves one model on one device.

    ``style`` is computed once per video (prompt + seed); ``frames`` once per batch of frames,
    from their features (a continuous generator's time features, a recurrent one's motion
    codes from ``step``), at a constant cost per frame. Recurrent generators also run
    ``initial_state`` once per video and ``step`` once per frame, the state staying on
    ``device``.
    """

    name: str
    device: torch.device
    config: GeneratorConfig      # the model's validated config (architecture, form, sizes)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @abstractmethod
    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] int64, z [B, Z] float32 -> per-video style w [B, S] on ``device``."""

    @abstractmethod
    def frames(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """w [N, S], features [N, F] -> frames [N, 3, R, R] float32 in [-1, 1]."""

    def initial_state(self, w: torch.Tensor) -> torch.Tensor:
        """Recurrent generators: w [B, S] -> state [B, D] on ``device``."""
        raise NotImplementedError(f"the {self.config.ARCH} generator is not recurrent")

    def step(self, w: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent generators: w [B, S], state [B, D] -> (features [B, F], next state)."""
        raise NotImplementedError(f"the {self.config.ARCH} generator is not recurrent")

    def display(self, w: torch.Tensor, features: torch.Tensor) -> np.ndarray:
        """As :meth:`frames`, as the encoder takes them: uint8 RGB [N, R, R, 3] on the host.
        Backends that can fuse the conversion into their last op override this."""
        return to_display(self.frames(w, features))

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def close(self) -> None:
        """Release what the backend holds and save its caches; nothing to do by default."""
