"""Pieces shared by the kernels: the activations (one jit helper, inlined), when Triton runs
under its CPU interpreter, and the launch configuration used there."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Activation codes: the ``ACT`` constexpr of every kernel.
ACTIVATIONS = {"none": 0, "relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4, "silu": 5}


def interpreting() -> bool:
    """Triton runs its kernels on the CPU, in numpy (``TRITON_INTERPRET=1``): tests and
    CPU-only machines. Autotuning is skipped there (timings would mean nothing)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotune(configs: list, key: list[str]):
    """``triton.autotune`` keeping the tuned choice on disk (Triton's cache, keyed by GPU
    target, kernel source and the ``key`` values) where this Triton can (``cache_results``,
    Triton >= 3.3); in memory per process otherwise."""
    import inspect

    extra = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    return triton.autotune(configs=configs, key=key, **extra)


def activation_code(name: str) -> int:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got '{name}'") from None


def check_device(*tensors: torch.Tensor) -> None:
    """Kernels run on a CUDA device, or on the CPU only under the interpreter."""
    for t in tensors:
        if t.device.type == "cpu" and not interpreting():
            raise RuntimeError("Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 to run "
                               "them on the CPU, slowly, as the tests do)")


@triton.jit
def activate(x, ACT: tl.constexpr, slope):
    """fp32 activations, overflow-safe: tanh, sigmoid and silu (x * sigmoid(x)) through exp of
    a non-positive number, so no intermediate is infinite for any finite x."""
    if ACT == 1:
        x = tl.maximum(x, 0.0)
    elif ACT == 2:
        x = tl.where(x >= 0, x, x * slope)
    elif ACT == 3:
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        x = tl.where(x >= 0, t, -t)
    elif ACT == 4:
        e = tl.exp(-tl.abs(x))
        x = tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    elif ACT == 5:
        e = tl.exp(-tl.abs(x))
        x = x * tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return x


def torch_activation(x: torch.Tensor, name: str, slope: float) -> torch.Tensor:
    """The PyTorch reference of :func:`activate`."""
    if name == "relu":
        return torch.relu(x)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(x, slope)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "silu":
        return torch.nn.functional.silu(x)
    activation_code(name)
    return x
