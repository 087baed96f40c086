"""The eager PyTorch backend (CPU or CUDA): the reference every other backend is checked against.

``precision`` fp16/bf16 runs the frame step under autocast (weights stay fp32); ``compile``
wraps it in ``torch.compile(mode="max-autotune")`` (Inductor's Triton kernels and CUDA graphs
on a GPU): the baselines the benchmarks hold the compiled backends against.
"""

from __future__ import annotations

from pathlib import Path

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.model.io import load_generator

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: str | Path | None = None, device: str | torch.device | None = None,
                 precision: str = "fp32", compile: bool = False):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = load_generator(model, self.device)
        self.resolution = self.generator.cfg.resolution
        self.precision, self.dtype = precision, PRECISIONS[precision]
        self.compiled = compile
        self._synthesize = self.generator.synthesize
        if compile:
            self._synthesize = torch.compile(self.generator.synthesize, mode="max-autotune")

    @torch.inference_mode()
    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = self.generator
        return g.style(g.encode_text(tokens.to(self.device)), z.to(self.device))

    @torch.inference_mode()
    def frames(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, self.dtype, enabled=self.precision != "fp32"):
            frames = self._synthesize(w, t.to(self.device))
        # a compiled step's output lives in its CUDA graph's pool until the next call
        return frames.float().clone() if self.compiled else frames.float()

    def describe(self) -> str:
        how = "torch.compile max-autotune" if self.compiled else "eager"
        return f"torch ({how}, {self.precision}) on {self.device}"
