"""The ``triton`` backend: the generator with its body on the fused Triton kernels.

Per frame batch: the head (small matrix products: stem, FiLM scales/shifts, pose, colours) in
PyTorch, every upsample -> conv -> epilogue -> activation block as one
:func:`t2v_rt.kernels.upsample_conv_act`, and the last conv -> sigmoid -> palette blend as one
:func:`t2v_rt.kernels.conv_alpha_blend`, which can write the encoder's uint8 RGB directly
(:meth:`display`). On a CUDA GPU the whole frame step is captured once per batch size in a
CUDA graph over static buffers and replayed (after a warm-up that runs the autotuner); the
body runs in fp16 (or bf16, fp32), the head and every accumulation in fp32.

On a machine without a GPU the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1``, numpy on the CPU, seconds per frame): the tests use it to check the
frames against the ``torch`` backend's; ``auto`` never picks it there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from t2v_rt.backends.base import Backend
from t2v_rt.errors import RuntimeUnavailable, UsageError
from t2v_rt.model.generator import time_features
from t2v_rt.model.io import load_generator

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
MAX_GRAPHS = 8        # CUDA graphs kept (one per batch size seen), least recently used out


def unavailable_reason() -> str | None:
    """Why the kernels cannot run here, or None."""
    try:
        import t2v_rt.kernels  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken Triton install is a "no" with its reason
        return f"Triton cannot be imported ({type(e).__name__}: {str(e)[:120]}); pip install triton"
    from t2v_rt.kernels._common import interpreting

    if torch.cuda.is_available() or interpreting():
        return None
    return ("needs a CUDA GPU (without one, Triton runs only under TRITON_INTERPRET=1, "
            "for tests: seconds per frame)")


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, model: str | Path | None = None, precision: str | None = None,
                 cuda_graphs: bool = True, log=None):
        why = unavailable_reason()
        if why:
            raise RuntimeUnavailable(f"backend 'triton' {why}; use --backend auto")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)} for the triton "
                             f"backend, got '{precision}'")
        self.precision, self.dtype = precision, PRECISIONS[precision]
        self.generator = load_generator(model, self.device)
        self.cfg = self.generator.cfg
        self.resolution = self.cfg.resolution
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.log = log or (lambda msg: None)
        self._pack()
        self._graphs: dict[tuple[int, bool], tuple[torch.cuda.CUDAGraph, dict]] = {}

    @torch.inference_mode()
    def _pack(self) -> None:
        """The kernels' weights, once: each block's 3x3 kernel split into its four 2x2
        sub-pixel kernels in the body's dtype; biases and coordinate weights in fp32."""
        from t2v_rt.kernels import subpixel_weights

        self._blocks = []
        for block in self.generator.blocks:
            self._blocks.append({
                "weight": block.conv.weight.to(self.dtype),
                "packed": subpixel_weights(block.conv.weight, self.dtype),
                "bias": block.conv.bias.float().contiguous(),
                "coord_weight": block.coord.weight.float().reshape(-1, 5).contiguous(),
                "slope": block.slope})
        conv = self.generator.to_alpha
        self._alpha = {"weight": conv.weight.float().contiguous(), "bias": float(conv.bias.item())}

    @torch.inference_mode()
    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = self.generator
        return g.style(g.encode_text(tokens.to(self.device)), z.to(self.device))

    def _step(self, w: torch.Tensor, basis: torch.Tensor, display: bool) -> torch.Tensor:
        """One frame batch: w [N, S] fp32, basis [N, 2H] fp32 (device) -> frames."""
        from t2v_rt.kernels import conv_alpha_blend, upsample_conv_act

        head = self.generator.frame_head(w, basis)
        x = head.x.to(self.dtype)
        for p, a, b in zip(self._blocks, head.scales, head.shifts):
            x = upsample_conv_act(x, p["weight"], p["bias"], "leaky_relu", p["slope"], a, b,
                                  p["coord_weight"], head.pose, packed=p["packed"])
        return conv_alpha_blend(x, self._alpha["weight"], self._alpha["bias"], head.fg, head.bg,
                                display=display)

    @torch.inference_mode()
    def _run(self, w: torch.Tensor, t: torch.Tensor, display: bool) -> torch.Tensor:
        basis = time_features(t.cpu(), self.cfg.harmonics).to(self.device)
        w = w.to(self.device, torch.float32)
        if not self.cuda_graphs:
            return self._step(w, basis, display)
        return self._replay(w, basis, display)

    def _replay(self, w: torch.Tensor, basis: torch.Tensor, display: bool) -> torch.Tensor:
        """The frame step as a CUDA graph per (batch size, output kind), captured on first use."""
        key = (w.shape[0], display)
        entry = self._graphs.pop(key, None)
        if entry is None:
            entry = self._capture(w, basis, display)
            if entry is None:
                return self._step(w, basis, display)
            while len(self._graphs) >= MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = entry                       # most recently used last
        graph, io = entry
        io["w"].copy_(w)
        io["basis"].copy_(basis)
        graph.replay()
        return io["out"].clone()

    def _capture(self, w: torch.Tensor, basis: torch.Tensor, display: bool):
        self.log(f"triton: capturing the frame step for batch {w.shape[0]} in a CUDA graph (the "
                 "kernels are autotuned first, once per GPU and shape; Triton caches the choice)")
        io = {"w": w.clone(), "basis": basis.clone()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):      # warm-up: autotunes and compiles outside the capture
                    self._step(io["w"], io["basis"], display)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                io["out"] = self._step(io["w"], io["basis"], display)
        except RuntimeError as e:
            self.log(f"triton: CUDA graph capture failed for batch {w.shape[0]} "
                     f"({str(e).splitlines()[0][:120]}); running without graphs")
            self.cuda_graphs = False
            return None
        return graph, io

    def frames(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._run(w, t, display=False)

    def display(self, w: torch.Tensor, t: torch.Tensor) -> np.ndarray:
        """uint8 RGB [N, R, R, 3] straight from the last kernel (no float frames in memory)."""
        return self._run(w, t, display=True).cpu().numpy()

    def describe(self) -> str:
        if self.device.type == "cpu":
            return f"triton ({self.precision}) under the interpreter on CPU (tests only: slow)"
        graphs = "CUDA graphs" if self.cuda_graphs else "no CUDA graphs"
        return f"triton ({self.precision}, {graphs}) on {torch.cuda.get_device_name()}"
