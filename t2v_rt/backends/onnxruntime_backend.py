"""The ``onnxruntime`` backend: the exported ONNX graphs (``t2v_rt.compile.graphs``) through
ONNX Runtime; CPU, or CUDA when onnxruntime-gpu provides it. numpy in, numpy out: this path
needs no PyTorch. The graphs come shipped beside the weights (the bundled model) or from the
cache, exported and checked against PyTorch on first use of any other model (kept in memory
when no cache folder is writable). Sessions are made from the bytes whose digest was checked.
Any architecture: a recurrent generator's ``init`` and ``step`` graphs carry its state
between batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2v_rt.backends.base import Backend, as_numpy
from t2v_rt.compile.graphs import ensure_exported, ort_session
from t2v_rt.generators.io import read_config, require_weights


def providers() -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model: str | Path | None = None, precision: str = "fp32",
                 threads: int = 0, log=None):
        weights = require_weights(model)
        self.config = read_config(weights)
        self.precision = precision
        graphs = ensure_exported(weights, precision, log)
        self.providers = providers()
        self._sessions = {name: ort_session(g.data, threads, self.providers)
                          for name, g in graphs.items()}
        # The style graph's text input, by its name: "tokens" (int64) or "text_embedding".
        names = [i.name for i in self._sessions["style"].get_inputs()]
        self._text = next((n for n in names if n != "z"), "tokens")
        self._text_dtype = np.int64 if self._text == "tokens" else np.float32
        self.device = "cpu"     # inputs and outputs are host arrays

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sessions[graph].run(None, feed)

    def style(self, text, z) -> np.ndarray:
        return self._run("style", {self._text: as_numpy(text, self._text_dtype),
                                   "z": as_numpy(z)})[0]

    def frames(self, w, features) -> np.ndarray:
        return self._run("frames", {"w": as_numpy(w), "features": as_numpy(features)})[0]

    def initial_state(self, w) -> np.ndarray:
        if "init" not in self._sessions:
            return super().initial_state(w)
        return self._run("init", {"w": as_numpy(w)})[0]

    def step(self, w, state) -> tuple[np.ndarray, np.ndarray]:
        if "step" not in self._sessions:
            return super().step(w, state)
        features, state = self._run("step", {"w": as_numpy(w), "state": as_numpy(state)})
        return features, state

    def describe(self) -> str:
        where = "CUDA" if self.providers[0].startswith("CUDA") else "CPU"
        return f"onnxruntime ({self.precision}) on {where}"
