"""ONNX export of the generator: two graphs, each checked against PyTorch through ONNX Runtime.

- ``style``: token ids [B, L] int64 and latents [B, Z] float32 -> per-video style w [B, S]
  float32 (the text reading, the prior head, the mapping and the palettes; once per video);
- ``frames``: w [N, S] float32 and the time basis [N, 2H] float32 -> frames [N, 3, R, R]
  float32 in [-1, 1]. The basis (cos/sin of 2 pi k t / T, :func:`time_features`) is computed
  on the host in float64, so a frame at t = 600 s is as exact as one at t = 0 whatever the
  graph's precision.

Batch dimensions are dynamic. An ``fp16`` frames graph computes in float16 inside, with
float32 inputs and outputs cast at its edges (TensorRT-RTX networks are strongly typed: the
precision lives in the graph). The style graph is float32 in both precisions: it runs once
per video, and its one-hot decisions must not move with rounding.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from t2v_rt.errors import CompileError, UsageError
from t2v_rt.model.generator import Generator, time_features
from t2v_rt.model.io import atomic_write

OPSET = 18
PRECISIONS = ("fp32", "fp16")
# Relative error (Frobenius norm of the difference over that of PyTorch fp32's output).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
MANIFEST = "export.json"


class StyleGraph(nn.Module):
    """tokens [B, L] int64, z [B, Z] -> w [B, S] (float32)."""

    def __init__(self, g: Generator):
        super().__init__()
        self.g = g

    def forward(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.g.style(self.g.encode_text(tokens), z)


class FramesGraph(nn.Module):
    """w [N, S], time basis [N, 2H] (float32) -> frames [N, 3, R, R] (float32), computed in
    ``dtype``."""

    def __init__(self, g: Generator, dtype: torch.dtype):
        super().__init__()
        self.g, self.dtype = copy.deepcopy(g).to(dtype), dtype

    def forward(self, w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        return self.g.synthesize_basis(w.to(self.dtype), basis.to(self.dtype))[0].float()


@dataclass(frozen=True)
class Export:
    precision: str
    graph: str
    path: Path
    sha256: str
    rel_error: float      # against PyTorch fp32 through ONNX Runtime, fresh random inputs
    tolerance: float
    check_seed: int       # the seed of those inputs, to replay a failure


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius norms, float64)."""
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def random_inputs(g: Generator, n_videos: int, n_frames: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh inputs of both graphs: token ids of random captions (canonical, paraphrased,
    partial), standard-normal latents, and the time basis of random times in [0, 1000) s."""
    from t2v_rt.text.grammar import encode_tokens, parse_prompt
    from t2v_rt.world.captions import caption, sample_attributes

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    prompts = [parse_prompt(caption(sample_attributes(rng, rng.choice([0.0, 0.5])), rng))
               for _ in range(n_videos)]
    z = torch.randn(n_videos, g.cfg.latent_dim, generator=gen)
    t = torch.rand(n_frames, generator=gen, dtype=torch.float64) * 1000
    return encode_tokens(prompts), z, time_features(t, g.cfg.harmonics)


def _export(module: nn.Module, args: tuple, names: tuple[list[str], list[str]], path: Path) -> None:
    inputs, outputs = names
    batch = torch.export.Dim("batch", min=1, max=4096)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # optional torchvision ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=inputs,
            output_names=outputs, dynamic_shapes={k: {0: batch} for k in inputs}, verbose=False)
    atomic_write(path, lambda tmp: program.save(str(tmp)))


def _check_graph(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)


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


def export_model(g: Generator, out: Path, precisions: tuple[str, ...] = PRECISIONS, log=None,
                 check_seed: int | None = None) -> list[Export]:
    """Write ``style.onnx`` (float32) and ``frames-<precision>.onnx`` for each precision into
    ``out``; check each with ``onnx.checker`` and strict shape inference, then compare it with
    PyTorch fp32 through ONNX Runtime on fresh random inputs (other batch sizes than the
    export's). A comparison over tolerance raises :class:`ExportMismatch` with the numbers,
    and the file is not kept."""
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision '{p}'; choose from: {', '.join(PRECISIONS)}")
    log = log or (lambda msg: None)
    g = g.float().eval().cpu()
    seed = random.SystemRandom().randrange(2**31) if check_seed is None else check_seed
    tokens, z, basis = random_inputs(g, 3, 5, seed)
    with torch.no_grad():
        w = g.style(g.encode_text(tokens), z)
        w_frames = w.repeat_interleave(2, 0)[:5]
        frames = g.synthesize_basis(w_frames, basis)[0]
    jobs = [("style", "fp32", StyleGraph(g), (tokens[:2], z[:2]), (["tokens", "z"], ["w"]),
             {"tokens": tokens.numpy(), "z": z.numpy()}, w)]
    for p in precisions:
        dtype = torch.float16 if p == "fp16" else torch.float32
        jobs.append(("frames", p, FramesGraph(g, dtype), (w[:2].clone(), basis[:2].clone()),
                     (["w", "basis"], ["frames"]), {"w": w_frames.numpy(), "basis": basis.numpy()},
                     frames))
    results = []
    for name, precision, module, example, names, feed, want in jobs:
        path = graph_path(out, name, precision)
        start = time.time()
        _export(module, example, names, path)
        try:
            _check_graph(path)
            err = relative_error(torch.from_numpy(ort_session(path).run(None, feed)[0]), want)
            tol = TOLERANCE[precision]
            if not err <= tol:
                raise ExportMismatch(
                    f"{path.name}: ONNX Runtime differs from PyTorch by {err:.3g} relative "
                    f"(tolerance {tol:g}, check seed {seed}); the export is not kept")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        log(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB, {time.time() - start:.1f} s); "
            f"ONNX Runtime vs PyTorch: relative error {err:.2e} (tolerance {tol:g})")
        results.append(Export(precision, name, path, file_sha256(path), err, tol, seed))
    return results


class ExportMismatch(CompileError):
    """An exported graph does not compute what PyTorch computes."""


def write_manifest(out: Path, model_sha256: str, exports: list[Export],
                   kept: list[dict] | None = None) -> Path:
    """``export.json``: the model's digest, versions, and per graph its file, digest and
    checked error; ``kept``: entries of an earlier manifest still valid (other precisions)."""
    import onnx
    import onnxruntime

    manifest = {
        "model_sha256": model_sha256,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "graphs": (kept or []) + [{**asdict(e), "path": e.path.name} for e in exports],
    }
    path = out / MANIFEST
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return path


def graph_path(folder: Path, graph: str, precision: str) -> Path:
    return folder / ("style.onnx" if graph == "style" else f"frames-{precision}.onnx")


def cached_exports(folder: Path, model_sha256: str) -> dict[tuple[str, str], Path]:
    """The graphs in ``folder`` that are valid for the model: the manifest names this model's
    digest and each file's digest still matches. (graph, precision) -> path."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if manifest.get("model_sha256") != model_sha256 or manifest.get("opset") != OPSET:
        return {}
    valid = {}
    for e in manifest.get("graphs", []):
        path = folder / str(e.get("path"))
        if path.is_file() and file_sha256(path) == e.get("sha256"):
            valid[(e["graph"], e["precision"])] = path
    return valid


def export_to_folder(weights: Path, folder: Path, precisions: tuple[str, ...],
                     log=None, g: Generator | None = None) -> Path:
    """Export the model at ``weights`` (``g``, when already loaded) into ``folder`` (checked,
    see :func:`export_model`) and write the manifest, keeping the still-valid graphs of other
    precisions; returns the manifest's path."""
    from t2v_rt.compile.cache import model_digest
    from t2v_rt.model.io import load_generator

    g = g if g is not None else load_generator(weights)
    digest = model_digest(weights)
    have = cached_exports(folder, digest)
    exports = export_model(g, folder, precisions, log=log)
    done = {(e.graph, e.precision) for e in exports}
    old = json.loads((folder / MANIFEST).read_text()).get("graphs", []) if have else []
    kept = [e for e in old if (e["graph"], e["precision"]) in have.keys() - done]
    return write_manifest(folder, digest, exports, kept)


def ensure_exported(weights: Path, folder: Path, precision: str, log=None) -> tuple[Path, Path]:
    """(style graph, frames graph) of ``precision`` for the model at ``weights``: from the
    cache when valid, else exported (and checked) now, once."""
    from t2v_rt.compile.cache import model_digest
    from t2v_rt.model.io import load_generator

    have = cached_exports(folder, model_digest(weights))
    if not (("style", "fp32") in have and ("frames", precision) in have):
        g = load_generator(weights)     # weights that do not fit fail here, before any work
        if log:
            log(f"no ONNX export of this model ({precision}) in {folder}: exporting it once "
                "(about 15 s on a 2-core CPU; 't2v-rt export-onnx' does it ahead of time)")
        export_to_folder(weights, folder, (precision,), log=log, g=g)
    return graph_path(folder, "style", "fp32"), graph_path(folder, "frames", precision)
