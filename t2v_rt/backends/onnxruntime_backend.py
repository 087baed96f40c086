"""The ``onnxruntime`` backend: the exported ONNX graphs (``t2v_rt.compile.export``) through
ONNX Runtime; CPU, or CUDA when onnxruntime-gpu provides it. The graphs come from the cache,
exported and checked against PyTorch on first use of a model. Any architecture: a recurrent
generator's ``init`` and ``step`` graphs carry its state between batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from t2v_rt.backends.base import Backend
from t2v_rt.compile.cache import model_folder
from t2v_rt.compile.export import ensure_exported, ort_session
from t2v_rt.generators.io import read_config, require_weights


def providers() -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def _np(x: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return x.detach().cpu().numpy().astype(dtype, copy=False)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: str | Path | None = None, precision: str = "fp32",
                 threads: int = 0, log=None):
        weights = require_weights(model)
        self.config = read_config(weights)
        self.precision = precision
        graphs = ensure_exported(weights, model_folder(weights), precision, log)
        self.providers = providers()
        self._sessions = {name: ort_session(path, threads, self.providers)
                          for name, path in graphs.items()}
        self.device = torch.device("cpu")     # inputs and outputs are host tensors

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sessions[graph].run(None, feed)

    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self._run("style", {"tokens": _np(tokens, np.int64), "z": _np(z)})
        return torch.from_numpy(out[0])

    def frames(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        out = self._run("frames", {"w": _np(w), "features": _np(features)})
        return torch.from_numpy(out[0])

    def initial_state(self, w: torch.Tensor) -> torch.Tensor:
        if "init" not in self._sessions:
            return super().initial_state(w)
        return torch.from_numpy(self._run("init", {"w": _np(w)})[0])

    def step(self, w: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "step" not in self._sessions:
            return super().step(w, state)
        features, state = self._run("step", {"w": _np(w), "state": _np(state)})
        return torch.from_numpy(features), torch.from_numpy(state)

    def describe(self) -> str:
        where = "CUDA" if self.providers[0].startswith("CUDA") else "CPU"
        return f"onnxruntime ({self.precision}) on {where}"
