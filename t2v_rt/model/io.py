"""Generator weights as safetensors + a JSON config; the bundled default model."""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from t2v_rt.errors import UsageError
from t2v_rt.model.config import ModelConfig
from t2v_rt.model.generator import Generator

BUNDLED_NAME = "default"


def bundled_path() -> Path:
    """Weights shipped inside the package: t2v_rt/weights/default.safetensors (+ .json)."""
    return Path(str(resources.files("t2v_rt") / "weights" / f"{BUNDLED_NAME}.safetensors"))


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a failure leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_generator(g: Generator, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    state = {k: v.detach().float().contiguous().cpu() for k, v in g.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata or {}))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(g.cfg.to_json() + "\n"))


def require_weights(path: str | Path | None = None) -> Path:
    """``path`` (None: the bundled model) if it and its JSON config exist; else a clear error."""
    path = Path(path) if path is not None else bundled_path()
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise UsageError(
            f"model weights not found at {path} (+ {cfg_path.name}); pass --model PATH to a "
            "'.safetensors' file saved by 't2v-rt train', or reinstall t2v-rt for the bundled model"
        )
    return path


def load_generator(path: str | Path | None = None, device: str | torch.device = "cpu") -> Generator:
    """Load a generator from ``x.safetensors`` + ``x.json``; None loads the bundled model."""
    path = require_weights(path)
    g = Generator(ModelConfig.load(path.with_suffix(".json")))
    state = load_file(str(path))
    mine = g.state_dict()
    want, have = set(mine), set(state)
    wrong = sorted(k for k in want & have if mine[k].shape != state[k].shape)
    if want != have or wrong:
        diff = sorted(want - have)[:2] + sorted(have - want)[:2] + wrong[:2]
        raise UsageError(
            f"model weights {path} do not fit this version's generator (e.g. {', '.join(diff)}); "
            "retrain them with 't2v-rt train', or leave out --model for the bundled model"
        )
    g.load_state_dict(state)
    return g.to(device).eval().requires_grad_(False)
