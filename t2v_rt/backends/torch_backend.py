"""The eager PyTorch backend (CPU or CUDA): the reference every other backend is checked against."""

from __future__ import annotations

from pathlib import Path

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.model.io import load_generator


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: str | Path | None = None, device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = load_generator(model, self.device)
        self.resolution = self.generator.cfg.resolution

    @torch.inference_mode()
    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = self.generator
        return g.style(g.encode_text(tokens.to(self.device)), z.to(self.device))

    @torch.inference_mode()
    def frames(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesize(w, t.to(self.device)).float()
