"""Where compiled artefacts live: ``$T2V_RT_CACHE``, else ``~/.cache/t2v-rt``, one folder per
model digest, so artefacts of different weights never mix."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("T2V_RT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "t2v-rt"


def model_digest(weights: Path) -> str:
    """SHA-256 of the weights file and its JSON config, together: what a compiled artefact
    was made from."""
    h = hashlib.sha256()
    for path in (weights, weights.with_suffix(".json")):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_folder(weights: Path, root: Path | None = None) -> Path:
    """The cache folder of the model at ``weights``: ``<root>/<digest[:16]>``."""
    return (root or cache_root()) / model_digest(weights)[:16]
