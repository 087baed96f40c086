"""The ``triton`` backend: any generator, its x2 up-convolution blocks on the fused Triton kernel.

At load the generator (any registered architecture) goes through the fusion pass
(:mod:`t2v_rt.backends.fusion`): every nearest-x2-upsample -> 3x3 conv and every
ConvTranspose2d(4, 2, 1), with the per-channel work after it (bias, folded BatchNorm,
FiLM/AdaIN, StyleGAN2 modulation/demodulation, noise, the coordinate term, the activation,
gain, clamp), becomes one :func:`t2v_rt.kernels.upsample_conv_act`; the rest of the generator
runs in PyTorch, unchanged. The fused generator is then run beside the eager one on fresh
random inputs and refused (:class:`~t2v_rt.errors.CompileError`, with the numbers and the
seed) if its frames differ by more than the precision's tolerance. The log says how many
blocks were fused, and which are not and why.

Per frame batch: ``synthesize`` with the fused blocks, the body in fp16 (or bf16, fp32: the
kernels' weights are packed in it) and the PyTorch parts under autocast in the same precision;
``style``, ``initial_state`` and ``step`` (the recurrent state, carried for hours) in fp32
PyTorch. On a CUDA GPU the whole frame step is captured once per batch size in a CUDA graph
over static buffers and replayed (after a warm-up that runs the autotuner). The uint8 output
is the base class's conversion (the shapes model's fused palette-blend display path is gone
with its hand-written body).

On a machine without a GPU the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1``, numpy on the CPU, seconds per frame): the tests use it to check the
frames against the ``torch`` backend's; ``auto`` never picks it there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.errors import RuntimeUnavailable, UsageError
from t2v_rt.generators.io import load_generator

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


def fusion_summary(model: str | Path | None = None) -> str:
    """One line for ``doctor --model PATH``: what the triton backend fuses in the model at
    ``model`` (None: the bundled one), e.g. ``fused 4 of 5 convolutions (4x
    upsample3x3+bias+coord+film+leaky_relu); in PyTorch: to_alpha: ...``. Runs the fusion
    pass's analysis on the CPU, in PyTorch only (no Triton, no GPU needed)."""
    from t2v_rt.backends.fusion import plan

    return plan(load_generator(model, "cpu")).summary()


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, model: str | Path | None = None, precision: str | None = None,
                 cuda_graphs: bool = True, log=None, generator=None, verify_frames: int = 2):
        why = unavailable_reason()
        if why:
            raise RuntimeUnavailable(f"backend 'triton' {why}; use --backend auto")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)} for the triton "
                             f"backend, got '{precision}'")
        self.precision, self.dtype = precision, PRECISIONS[precision]
        self.log = log or (lambda msg: None)
        eager = (generator.to(self.device).eval() if generator is not None
                 else load_generator(model, self.device))
        self.config = eager.config

        from t2v_rt.backends.fusion import fuse, verify

        self.generator = fuse(eager, self.dtype, log=self.log)
        self.report = self.generator.report
        self.log(f"triton: {self.report.summary(limit=8)}")
        check = verify(eager, self.generator, self.dtype, frames=verify_frames)
        self.log(f"triton: the fused generator matches eager PyTorch ({check.line()})")
        del eager
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, dict]] = {}

    # --- per video / per step: PyTorch, fp32 ---------------------------------------------

    @torch.inference_mode()
    def style(self, text: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        kind = torch.long if self.config.text_input == "tokens" else torch.float32
        return self.generator.style(torch.as_tensor(text, dtype=kind, device=self.device),
                                    torch.as_tensor(z, dtype=torch.float32, device=self.device))

    @torch.inference_mode()
    def initial_state(self, w: torch.Tensor) -> torch.Tensor:
        return self.generator.initial_state(torch.as_tensor(w, dtype=torch.float32, device=self.device))

    @torch.inference_mode()
    def step(self, w: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.generator.step(torch.as_tensor(w, dtype=torch.float32, device=self.device),
                                   torch.as_tensor(state, dtype=torch.float32, device=self.device))

    # --- per frame batch: the fused synthesize ------------------------------------------

    def _step(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """One frame batch: w [N, S], features [N, F] fp32 (device) -> frames fp32."""
        with torch.autocast(self.device.type, self.dtype, enabled=self.precision != "fp32",
                            cache_enabled=False):
            return self.generator.synthesize(w, features).float()

    @torch.inference_mode()
    def frames(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(w, dtype=torch.float32, device=self.device)
        features = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        if not self.cuda_graphs:
            return self._step(w, features)
        return self._replay(w, features)

    def _replay(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The frame step as a CUDA graph per batch size, captured on first use."""
        key = w.shape[0]
        entry = self._graphs.pop(key, None)
        if entry is None:
            entry = self._capture(w, features)
            if entry is None:
                return self._step(w, features)
            while len(self._graphs) >= MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = entry                       # most recently used last
        graph, io = entry
        io["w"].copy_(w)
        io["features"].copy_(features)
        graph.replay()
        return io["out"].clone()

    def _capture(self, w: torch.Tensor, features: torch.Tensor):
        self.log(f"triton: capturing the frame step for batch {w.shape[0]} in a CUDA graph (the "
                 "kernels are autotuned first, once per GPU and shape; Triton caches the choice)")
        io = {"w": w.clone(), "features": features.clone()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):      # warm-up: autotunes and compiles outside the capture
                    self._step(io["w"], io["features"])
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                io["out"] = self._step(io["w"], io["features"])
        except RuntimeError as e:
            self.log(f"triton: CUDA graph capture failed for batch {w.shape[0]} "
                     f"({str(e).splitlines()[0][:120]}); running without graphs")
            self.cuda_graphs = False
            return None
        return graph, io

    def describe(self) -> str:
        fused = f"{self.report.fused} of {self.report.found} convs fused"
        if self.device.type == "cpu":
            return (f"triton ({self.precision}, {fused}) under the interpreter on CPU "
                    "(tests only: slow)")
        graphs = "CUDA graphs" if self.cuda_graphs else "no CUDA graphs"
        return f"triton ({self.precision}, {graphs}, {fused}) on {torch.cuda.get_device_name()}"


__all__ = ["MAX_GRAPHS", "PRECISIONS", "TritonBackend", "fusion_summary", "unavailable_reason"]
