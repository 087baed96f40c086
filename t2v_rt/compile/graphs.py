"""The exported graphs of a model, as the runtime reads them: names, files, the manifest, the
cache, ONNX Runtime sessions. Torch-free: streaming on the ``onnxruntime`` backend needs numpy
and ONNX Runtime alone. Exporting (which needs PyTorch) lives in :mod:`t2v_rt.compile.export`
and is imported only when a graph is missing.

Where a model's graphs are looked for, in order:

1. beside the weights: ``<name>-onnx/`` next to ``<name>.safetensors`` (the bundled model ships
   its graphs there, so no run ever exports it);
2. the model's folders in the cache (``t2v_rt.compile.cache``: the configured cache, then the
   per-user temporary one);

and exported once into the cache if none holds them (kept in memory when no cache folder is
writable). A folder's graphs are used only when its manifest (``export.json``) names the
model's digest, each file is a plain file inside the folder, and the digest of the bytes read,
the ones then loaded, matches the manifest's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from t2v_rt.files import is_bare_name, read_verified


OPSET = 18
FORMAT = 2            # of the manifest and the graphs' names (1: the shapes-only "basis" graphs)
PRECISIONS = ("fp32", "fp16")
# Relative error (Frobenius norm of the difference over that of PyTorch fp32's output).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
MANIFEST = "export.json"
# Each graph: its inputs and outputs. The style graph's first input is the text input its
# config names (io_names): "tokens" here, or "text_embedding" (a pretrained encoder's).
IO = {
    "style": (("tokens", "z"), ("w",)),
    "frames": (("w", "features"), ("frames",)),
    "init": (("w",), ("state",)),
    "step": (("w", "state"), ("features", "next_state")),
}


def io_names(graph: str, config=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The inputs and outputs of ``graph`` for a model of ``config``: the style graph's text
    input is named by ``config.text_input`` ("tokens", int64 [B, L]; or "text_embedding",
    float32 [B, E]: the sentence encoder itself runs on the host, outside the graph)."""
    inputs, outputs = IO[graph]
    if graph == "style" and config is not None:
        inputs = (getattr(config, "text_input", "tokens"), *inputs[1:])
    return inputs, outputs


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


@dataclass(frozen=True)
class Graph:
    """One exported graph as loaded: its serialised ONNX model, whose SHA-256 is ``sha256``
    (computed on these bytes), and the file it was read from or written to (None: it exists
    in this process's memory only)."""
    graph: str
    precision: str
    data: bytes = field(repr=False)
    sha256: str
    path: Path | None = None


# Graphs exported in this process while no cache folder was writable: (model digest, graph,
# precision) -> graph. Later backends of the same model in this process take them from here.
IN_MEMORY: dict[tuple[str, str, str], Graph] = {}


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_entries(folder: Path, model_sha256: str) -> dict[tuple[str, str], dict]:
    """The entries of ``folder``'s manifest, when it is of this format and names this model's
    digest, whose graph and precision are known and whose file is a bare name (confined to the
    folder). (graph, precision) -> entry. The files are not read."""
    manifest = _read_manifest(folder)
    if (manifest is None or manifest.get("format") != FORMAT
            or manifest.get("model_sha256") != model_sha256 or manifest.get("opset") != OPSET
            or not isinstance(manifest.get("graphs"), list)):
        return {}
    entries = {}
    for e in manifest["graphs"]:
        if (isinstance(e, dict) and e.get("graph") in IO and e.get("precision") in PRECISIONS
                and is_bare_name(e.get("path"))):
            entries[(e["graph"], e["precision"])] = e
    return entries


def load_exports(folder: Path, model_sha256: str,
                 want: set[tuple[str, str]] | None = None) -> dict[tuple[str, str], Graph]:
    """The graphs in ``folder`` (those of ``want`` only, when given) that are valid for the
    model: listed by :func:`manifest_entries`, each a plain file inside ``folder`` (no link)
    whose bytes, as read, have the manifest's digest. (graph, precision) -> :class:`Graph`."""
    valid = {}
    for key, e in manifest_entries(folder, model_sha256).items():
        if want is not None and key not in want:
            continue
        data = read_verified(folder, e["path"], e.get("sha256"))
        if data is not None:
            valid[key] = Graph(key[0], key[1], data, e["sha256"], folder / e["path"])
    return valid


def cached_exports(folder: Path, model_sha256: str) -> dict[tuple[str, str], Path]:
    """The files of :func:`load_exports`: (graph, precision) -> path."""
    return {key: g.path for key, g in load_exports(folder, model_sha256).items()}


def ort_session(model: Path | bytes, threads: int = 0, providers: list[str] | None = None):
    """An ONNX Runtime session of ``model``: a file, or the serialised model itself (a
    :class:`Graph`'s checked bytes); CPU unless ``providers`` says otherwise."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: a stream's encoder runs between frame
    # batches and needs those cores (spinning made a stream's whole step 2.4x slower than
    # its parts).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, so, providers=providers or ["CPUExecutionProvider"])


def shipped_folder(weights: Path) -> Path:
    """Where graphs shipped with a model live: ``<name>-onnx/`` beside ``<name>.safetensors``."""
    return weights.parent / f"{weights.stem}-onnx"


def ensure_exported(weights: Path, precision: str, log=None) -> dict[str, Graph]:
    """The graphs of the model at ``weights`` ({name: graph}: style, frames of ``precision``,
    and init/step for a recurrent generator), each checked against its manifest's digest on
    the bytes returned: shipped beside the weights, or in the cache (the configured one, then
    the temporary one), when valid; else exported (and checked) now, once, which needs
    PyTorch, and stored in the cache, or kept in memory when no cache folder is writable
    (:mod:`t2v_rt.compile.cache`)."""
    from t2v_rt.compile.cache import configured_root, model_digest, model_folders, write_root
    from t2v_rt.generators.io import read_config

    form = read_config(weights).FORM
    need = {name: (precision if name == "frames" else "fp32") for name in graph_names(form)}
    want = set(need.items())
    digest = model_digest(weights)
    shipped, configured = shipped_folder(weights), configured_root()[0]
    for where in (shipped, *model_folders(weights)):
        if where != shipped and where.parent != configured:
            write_root(log)     # past the configured cache: say where this run writes, if elsewhere
        have = load_exports(where, digest, want)
        if len(have) == len(want):
            return {name: have[(name, p)] for name, p in need.items()}
    if all((digest, *key) in IN_MEMORY for key in want):
        return {name: IN_MEMORY[(digest, name, p)] for name, p in need.items()}
    from t2v_rt.extras import require

    require("torch", f"exporting this model to ONNX ({precision}; once, then cached)")
    from t2v_rt.compile.export import export_into_cache

    graphs = export_into_cache(weights, (precision,), log=log)
    return {name: graphs[(name, p)] for name, p in need.items()}
