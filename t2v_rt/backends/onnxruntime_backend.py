"""The ``onnxruntime`` backend: the exported ONNX graphs (``t2v_rt.compile.export``) through
ONNX Runtime; CPU, or CUDA when onnxruntime-gpu provides it. The graphs come from the cache,
exported and checked against PyTorch on first use of a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from t2v_rt.backends.base import Backend
from t2v_rt.compile.cache import model_folder
from t2v_rt.compile.export import ensure_exported, ort_session
from t2v_rt.model.config import ModelConfig
from t2v_rt.model.generator import time_features
from t2v_rt.model.io import require_weights


def providers() -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: str | Path | None = None, precision: str = "fp32",
                 threads: int = 0, log=None):
        weights = require_weights(model)
        self.cfg = ModelConfig.load(weights.with_suffix(".json"))
        self.resolution = self.cfg.resolution
        self.precision = precision
        style_path, frames_path = ensure_exported(weights, model_folder(weights), precision, log)
        self.providers = providers()
        self._style = ort_session(style_path, threads, self.providers)
        self._frames = ort_session(frames_path, threads, self.providers)
        self.device = torch.device("cpu")     # inputs and outputs are host tensors

    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        feed = {"tokens": tokens.cpu().numpy().astype(np.int64),
                "z": z.cpu().float().numpy()}
        return torch.from_numpy(self._style.run(None, feed)[0])

    def frames(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        basis = time_features(t.cpu(), self.cfg.harmonics)
        feed = {"w": w.cpu().float().numpy(), "basis": basis.numpy()}
        return torch.from_numpy(self._frames.run(None, feed)[0])

    def describe(self) -> str:
        where = "CUDA" if self.providers[0].startswith("CUDA") else "CPU"
        return f"onnxruntime ({self.precision}) on {where}"
