"""Interchangeable inference backends, chosen by name or by ``auto``.

An explicitly named backend that cannot run here raises :class:`RuntimeUnavailable`; ``auto``
takes the first that can, in the order of :func:`auto_order`, and logs why it skipped others
(a backend that passes its probe but then fails to start is skipped the same way).
"""

from __future__ import annotations

from pathlib import Path

from t2v_rt.backends.base import Backend
from t2v_rt.errors import RuntimeUnavailable, UsageError

BACKENDS = ("torch", "onnxruntime", "tensorrt", "triton")


def auto_order() -> tuple[str, ...]:
    """``auto``'s preference. On a CUDA GPU: the TensorRT engines when valid for it, then the
    fused Triton kernels, then PyTorch, then ONNX Runtime. On the CPU (where Triton runs
    only under its interpreter, seconds per frame, never chosen by ``auto``):
    ONNX Runtime, measured 2 to 3x faster than eager PyTorch on the bundled model
    (``bench/backends.py``), then PyTorch. PyTorch is imported only where a GPU could be."""
    from t2v_rt.extras import cuda_available

    if cuda_available():
        return ("tensorrt", "triton", "torch", "onnxruntime")
    return ("onnxruntime", "torch")


def probe(name: str, model: str | Path | None = None) -> tuple[bool, str]:
    """Whether backend ``name`` can run the model at ``model`` (None: the bundled one) on this
    machine, and why (not)."""
    from t2v_rt.extras import have

    if name in ("torch", "triton", "tensorrt") and not have("torch"):
        return False, ("PyTorch is not installed (the CPU runtime runs without it): "
                       f"pip install 't2v-rt[{'torch' if name == 'torch' else 'gpu'}]'")
    if name == "torch":
        import torch

        where = f"CUDA ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "CPU"
        return True, f"PyTorch {torch.__version__} eager on {where}"
    if name == "onnxruntime":
        if not have("onnxruntime"):
            return False, "onnxruntime is not installed: pip install onnxruntime"
        import onnxruntime as ort

        where = "CUDA" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPU"
        return True, f"ONNX Runtime {ort.__version__} on {where}"
    if name == "tensorrt":
        from t2v_rt.backends.tensorrt_backend import probe_tensorrt

        return probe_tensorrt(model)
    if name == "triton":
        from t2v_rt.backends.triton_backend import unavailable_reason

        why = unavailable_reason()
        if why:
            return False, why
        import torch
        import triton

        where = (f"CUDA ({torch.cuda.get_device_name()})" if torch.cuda.is_available()
                 else "the CPU under TRITON_INTERPRET=1 (tests only: seconds per frame)")
        return True, f"Triton {triton.__version__} fused kernels on {where}"
    return False, f"unknown backend '{name}'"


def auto_choice(model: str | Path | None = None) -> tuple[str, list[str]]:
    """The backend ``auto`` picks by the probes, and the reasons it skipped the ones before it."""
    skipped = []
    for name in auto_order():
        ok, why = probe(name, model)
        if ok:
            return name, skipped
        skipped.append(f"{name}: {why}")
    raise RuntimeUnavailable("no backend can run on this machine: " + "; ".join(skipped))


def _start(name: str, model: str | Path | None, log, precision: str | None) -> Backend:
    if name == "tensorrt":
        from t2v_rt.backends.tensorrt_backend import TensorRTBackend

        # the fp16 engines when in the cache, else the fp32 ones
        return TensorRTBackend(model, precision=precision or "fp16", log=log)
    if name == "triton":
        from t2v_rt.backends.triton_backend import TritonBackend

        return TritonBackend(model, precision=precision, log=log)
    if name == "onnxruntime":
        from t2v_rt.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, precision=precision or "fp32", log=log)
    from t2v_rt.backends.torch_backend import TorchBackend

    return TorchBackend(model)


def create_backend(name: str = "auto", model: str | Path | None = None, log=None,
                   precision: str | None = None) -> Backend:
    """Backend ``name`` for the model at ``model``; ``precision``: of the compiled frames graph
    (default: fp32 for onnxruntime, fp16 for tensorrt when its engine is in the cache)."""
    if name == "auto":
        skipped = []
        for candidate in auto_order():
            ok, why = probe(candidate, model)
            if ok:
                try:
                    return _start(candidate, model, log, precision)
                except RuntimeUnavailable as e:     # passed the probe, failed to start
                    why = str(e)
            skipped.append(f"{candidate}: {why}")
            if log:
                log(f"backend auto: skipped {candidate}: {why}")
        raise RuntimeUnavailable("no backend can run on this machine: " + "; ".join(skipped))
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}'; choose one of: auto, {', '.join(BACKENDS)}")
    ok, why = probe(name, model)
    if not ok:
        # a reason that names the way out keeps it; otherwise the way out is auto
        fix = "" if "--backend" in why else "; use --backend auto"
        raise RuntimeUnavailable(f"backend '{name}' cannot run here: {why}{fix}")
    return _start(name, model, log, precision)


__all__ = ["BACKENDS", "Backend", "auto_choice", "auto_order", "create_backend", "probe"]
