"""Interchangeable inference backends, chosen by name or by ``auto``.

An explicitly named backend that cannot run here raises :class:`RuntimeUnavailable`; ``auto``
takes the first that can, in the order of :data:`AUTO_ORDER`, and logs why it skipped others.
"""

from __future__ import annotations

from pathlib import Path

from t2v_rt.backends.base import Backend
from t2v_rt.errors import RuntimeUnavailable, UsageError

BACKENDS = ("torch",)
AUTO_ORDER = ("torch",)


def probe(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` can run on this machine, and why (not)."""
    if name == "torch":
        import torch

        where = f"CUDA ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "CPU"
        return True, f"PyTorch {torch.__version__} eager on {where}"
    return False, f"unknown backend '{name}'"


def auto_choice() -> tuple[str, list[str]]:
    """The backend ``auto`` picks, and the reasons it skipped the ones before it."""
    skipped = []
    for name in AUTO_ORDER:
        ok, why = probe(name)
        if ok:
            return name, skipped
        skipped.append(f"{name}: {why}")
    raise RuntimeUnavailable("no backend can run on this machine: " + "; ".join(skipped))


def create_backend(name: str = "auto", model: str | Path | None = None, log=None) -> Backend:
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
    from t2v_rt.backends.torch_backend import TorchBackend

    return TorchBackend(model)


__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "auto_choice", "create_backend", "probe"]
