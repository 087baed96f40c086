"""Interchangeable inference backends, chosen by name or by ``auto``.

An explicitly named backend that cannot run here raises :class:`RuntimeUnavailable`; ``auto``
takes the first that can, in the order of :func:`auto_order`, and logs why it skipped others.
"""

from __future__ import annotations

from pathlib import Path

from t2v_rt.backends.base import Backend
from t2v_rt.errors import RuntimeUnavailable, UsageError

BACKENDS = ("torch", "onnxruntime")


def auto_order() -> tuple[str, ...]:
    """``auto``'s preference: PyTorch on a CUDA GPU; on the CPU, ONNX Runtime, measured
    2 to 3x faster than eager PyTorch on the bundled model (``bench/backends.py``)."""
    import torch

    return ("torch", "onnxruntime") if torch.cuda.is_available() else ("onnxruntime", "torch")


def probe(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` can run on this machine, and why (not)."""
    if name == "torch":
        import torch

        where = f"CUDA ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "CPU"
        return True, f"PyTorch {torch.__version__} eager on {where}"
    if name == "onnxruntime":
        import importlib.util

        missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed (pip install {' '.join(missing)})"
        import onnxruntime as ort

        where = "CUDA" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPU"
        return True, f"ONNX Runtime {ort.__version__} on {where}"
    return False, f"unknown backend '{name}'"


def auto_choice() -> tuple[str, list[str]]:
    """The backend ``auto`` picks, and the reasons it skipped the ones before it."""
    skipped = []
    for name in auto_order():
        ok, why = probe(name)
        if ok:
            return name, skipped
        skipped.append(f"{name}: {why}")
    raise RuntimeUnavailable("no backend can run on this machine: " + "; ".join(skipped))


def create_backend(name: str = "auto", model: str | Path | None = None, log=None,
                   precision: str = "fp32") -> Backend:
    if name == "auto":
        name, skipped = auto_choice()
        for reason in skipped:
            if log:
                log(f"backend auto: skipped {reason}")
    elif name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}'; choose one of: auto, {', '.join(BACKENDS)}")
    else:
        ok, why = probe(name)
        if not ok:
            raise RuntimeUnavailable(f"backend '{name}' cannot run here: {why}; use --backend auto")
    if name == "onnxruntime":
        from t2v_rt.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, precision=precision, log=log)
    from t2v_rt.backends.torch_backend import TorchBackend

    return TorchBackend(model)


__all__ = ["BACKENDS", "Backend", "auto_choice", "auto_order", "create_backend", "probe"]
