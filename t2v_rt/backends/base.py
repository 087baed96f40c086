"""The backend interface: a compiled or eager generator that turns (style, features) into frames.

Arrays cross it as numpy arrays on a host backend (``onnxruntime``: no PyTorch needed) and as
torch tensors on the PyTorch and CUDA backends; every backend accepts either on input
(:func:`as_numpy`, ``torch.as_tensor``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Array = Any   # numpy.ndarray or torch.Tensor

import numpy as np

from t2v_rt.generators.config import GeneratorConfig


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def as_numpy(x, dtype=np.float32) -> np.ndarray:
    """A numpy array of ``x`` (numpy, list, or a torch tensor on any device) in ``dtype``."""
    if is_torch(x):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def to_display(frames) -> np.ndarray:
    """frames [N, 3, R, R] float in [-1, 1] (numpy or torch) -> [N, R, R, 3] uint8 RGB.

    Scaling to the output size happens in the sink (swscale, with the colour conversion:
    5x faster than a float upscale in torch first, 13 ms vs 60-100 ms for 16 frames to 256 x 256
    on one core of the 2-core CPU machine).
    """
    if is_torch(frames):
        import torch

        x = ((frames + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    x = np.clip(np.rint((np.asarray(frames, dtype=np.float32) + 1) * 127.5), 0, 255)
    return np.ascontiguousarray(x.astype(np.uint8).transpose(0, 2, 3, 1))


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
    device: Any                  # torch.device, or "cpu" for a host backend
    config: GeneratorConfig      # the model's validated config (architecture, form, sizes)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def on_cuda(self) -> bool:
        """Frames come out on a CUDA GPU (the GPU encoders can take them there)."""
        return getattr(self.device, "type", self.device) == "cuda"

    @abstractmethod
    def style(self, text: Array, z: Array) -> Array:
        """text (``config.text_input``: tokens [B, L] int64, or a sentence embedding [B, E]
        float32: ``config.front_end().features``), z [B, Z] float32 -> per-video style w [B, S]
        on ``device``."""

    @abstractmethod
    def frames(self, w: Array, features: Array) -> Array:
        """w [N, S], features [N, F] -> frames [N, 3, R, R] float32 in [-1, 1]."""

    def initial_state(self, w: Array) -> Array:
        """Recurrent generators: w [B, S] -> state [B, D] on ``device``."""
        raise NotImplementedError(f"the {self.config.ARCH} generator is not recurrent")

    def step(self, w: Array, state: Array) -> tuple[Array, Array]:
        """Recurrent generators: w [B, S], state [B, D] -> (features [B, F], next state)."""
        raise NotImplementedError(f"the {self.config.ARCH} generator is not recurrent")

    def display(self, w: Array, features: Array) -> np.ndarray:
        """As :meth:`frames`, as the encoder takes them: uint8 RGB [N, R, R, 3] on the host.
        Backends that can fuse the conversion into their last op override this."""
        return to_display(self.frames(w, features))

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def close(self) -> None:
        """Release what the backend holds and save its caches; nothing to do by default."""
