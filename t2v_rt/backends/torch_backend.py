"""The eager PyTorch backend (CPU or CUDA): the reference every other backend is checked against.

``precision`` fp16/bf16 runs the frame step under autocast (weights stay fp32); ``compile``
wraps it in ``torch.compile(mode="max-autotune")`` (Inductor's Triton kernels and CUDA graphs
on a GPU): the baselines the benchmarks hold the compiled backends against. Any registered
architecture runs here (``t2v_rt.generators``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.generators.io import load_generator

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: str | Path | None = None, device: str | torch.device | None = None,
                 precision: str = "fp32", compile: bool = False, generator=None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = (generator.to(self.device).eval() if generator is not None
                          else load_generator(model, self.device))
        self.config = self.generator.config
        self.precision, self.dtype = precision, PRECISIONS[precision]
        self.compiled = compile
        self._synthesize = self.generator.synthesize
        if compile:
            self._synthesize = torch.compile(self.generator.synthesize, mode="max-autotune")

    def _in(self, x, dtype=torch.float32) -> torch.Tensor:
        """numpy or torch input -> a tensor on this backend's device."""
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    @torch.inference_mode()
    def style(self, text, z) -> torch.Tensor:
        kind = torch.long if self.config.text_input == "tokens" else torch.float32
        return self.generator.style(self._in(text, kind), self._in(z))

    @torch.inference_mode()
    def frames(self, w, features) -> torch.Tensor:
        with torch.autocast(self.device.type, self.dtype, enabled=self.precision != "fp32"):
            frames = self._synthesize(self._in(w), self._in(features))
        # a compiled step's output lives in its CUDA graph's pool until the next call
        return frames.float().clone() if self.compiled else frames.float()

    @torch.inference_mode()
    def initial_state(self, w) -> torch.Tensor:
        return self.generator.initial_state(self._in(w))

    @torch.inference_mode()
    def step(self, w, state) -> tuple[torch.Tensor, torch.Tensor]:
        return self.generator.step(self._in(w), self._in(state))

    def describe(self) -> str:
        how = "torch.compile max-autotune" if self.compiled else "eager"
        return f"torch ({how}, {self.precision}) on {self.device}"
