"""The exported graphs of a model, as the runtime reads them: names, files, the manifest, the
cache, ONNX Runtime sessions. Torch-free: streaming on the ``onnxruntime`` backend needs numpy
and ONNX Runtime alone. Exporting (which needs PyTorch) lives in :mod:`t2v_rt.compile.export`
and is imported only when a graph is missing.

Where a model's graphs are looked for, in order:

1. beside the weights: ``<name>-onnx/`` next to ``<name>.safetensors`` (the bundled model ships
   its graphs there, so no run ever exports it);
2. the model's folder in the cache (``t2v_rt.compile.cache``);

and exported into the cache once if neither holds them. A folder's graphs are used only when
its manifest (``export.json``) names the model's digest and every file's digest matches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


OPSET = 18
FORMAT = 2            # of the manifest and the graphs' names (1: the shapes-only "basis" graphs)
PRECISIONS = ("fp32", "fp16")
# Relative error (Frobenius norm of the difference over that of PyTorch fp32's output).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
MANIFEST = "export.json"
# Each graph: its inputs and outputs.
IO = {
    "style": (("tokens", "z"), ("w",)),
    "frames": (("w", "features"), ("frames",)),
    "init": (("w",), ("state",)),
    "step": (("w", "state"), ("features", "next_state")),
}


def graph_names(form: str) -> tuple[str, ...]:
    """The graphs of a generator of ``form`` ("continuous" or "recurrent")."""
    return ("style", "frames") if form == "continuous" else ("style", "frames", "init", "step")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graph_path(folder: Path, graph: str, precision: str = "fp32") -> Path:
    """``style.onnx``, ``frames-<precision>.onnx``, ``init.onnx``, ``step.onnx``."""
    return folder / (f"frames-{precision}.onnx" if graph == "frames" else f"{graph}.onnx")


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def cached_exports(folder: Path, model_sha256: str) -> dict[tuple[str, str], Path]:
    """The graphs in ``folder`` that are valid for the model: the manifest (this format) names
    this model's digest, and each file named is a plain file inside ``folder`` whose digest
    still matches. (graph, precision) -> path."""
    manifest = _read_manifest(folder)
    if (manifest is None or manifest.get("format") != FORMAT
            or manifest.get("model_sha256") != model_sha256 or manifest.get("opset") != OPSET
            or not isinstance(manifest.get("graphs"), list)):
        return {}
    valid = {}
    for e in manifest["graphs"]:
        if not isinstance(e, dict) or e.get("graph") not in IO or e.get("precision") not in PRECISIONS:
            continue
        name = e.get("path")
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            continue        # confined to the folder: a bare file name only
        path = folder / name
        if path.is_file() and not path.is_symlink() and file_sha256(path) == e.get("sha256"):
            valid[(e["graph"], e["precision"])] = path
    return valid


def ort_session(path: Path, threads: int = 0, providers: list[str] | None = None):
    """An ONNX Runtime session of ``path`` (CPU unless ``providers`` says otherwise)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: a stream's encoder runs between frame
    # batches and needs those cores (spinning made a stream's whole step 2.4x slower than
    # its parts).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def shipped_folder(weights: Path) -> Path:
    """Where graphs shipped with a model live: ``<name>-onnx/`` beside ``<name>.safetensors``."""
    return weights.parent / f"{weights.stem}-onnx"


def ensure_exported(weights: Path, folder: Path, precision: str, log=None) -> dict[str, Path]:
    """The graphs of the model at ``weights`` ({name: path}: style, frames of ``precision``,
    and init/step for a recurrent generator): shipped beside the weights, or in ``folder``
    (the cache), when valid; else exported (and checked) into ``folder`` now, once, which
    needs PyTorch."""
    from t2v_rt.compile.cache import model_digest
    from t2v_rt.generators.io import read_config

    form = read_config(weights).FORM
    need = {name: (precision if name == "frames" else "fp32") for name in graph_names(form)}
    digest = model_digest(weights)
    for where in (shipped_folder(weights), folder):
        have = cached_exports(where, digest)
        if all((name, p) in have for name, p in need.items()):
            return {name: have[(name, p)] for name, p in need.items()}
    from t2v_rt.extras import require

    require("torch", f"exporting this model to ONNX ({precision}; once, then cached)")
    from t2v_rt.compile.export import export_to_folder
    from t2v_rt.generators.io import load_generator

    g = load_generator(weights)     # weights that do not fit fail here, before any work
    if log:
        log(f"no ONNX export of this model ({precision}) in {folder}: exporting it once "
            "('t2v-rt export-onnx' does it ahead of time)")
    export_to_folder(weights, folder, (precision,), log=log, g=g)
    return {name: graph_path(folder, name, p) for name, p in need.items()}
