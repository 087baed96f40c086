"""ONNX export of any generator: its graphs, each checked against PyTorch through ONNX Runtime.

The graphs follow the generator interface (``t2v_rt.generators.interface``):

- ``style``: token ids [B, L] int64 and latents [B, Z] float32 -> per-video style w [B, S]
  float32 (once per video);
- ``frames``: w [N, S] float32 and the frames' features [N, F] float32 -> frames
  [N, 3, R, R] float32 in [-1, 1]. A continuous generator's features are its time features,
  computed on the host in float64 (``config.time_features``), so a frame at t = 600 s is as
  exact as one at t = 0 whatever the graph's precision;
- recurrent generators also: ``init``: w -> state [B, D], and ``step``: w, state ->
  features, next_state (float32: the state lives for hours).

Batch dimensions are dynamic. An ``fp16`` frames graph computes in float16 inside, with
float32 inputs and outputs cast at its edges (TensorRT-RTX networks are strongly typed: the
precision lives in the graph). The other graphs are float32 in both precisions: they run once
per video or carry the state, and their decisions must not move with rounding.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from t2v_rt.compile.graphs import (  # noqa: F401 - the graph names, files and sessions live there
    FORMAT, IO, MANIFEST, OPSET, PRECISIONS, TOLERANCE, _read_manifest, cached_exports,
    ensure_exported, file_sha256, graph_names, graph_path, ort_session,
)
from t2v_rt.errors import CompileError, UsageError
from t2v_rt.files import atomic_write

class StyleGraph(nn.Module):
    """tokens [B, L] int64, z [B, Z] -> w [B, S] (float32)."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.g.style(tokens, z)


class FramesGraph(nn.Module):
    """w [N, S], features [N, F] (float32) -> frames [N, 3, R, R] (float32), computed in
    ``dtype``."""

    def __init__(self, g, dtype: torch.dtype):
        super().__init__()
        self.g, self.dtype = copy.deepcopy(g).to(dtype), dtype

    def forward(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.g.synthesize(w.to(self.dtype), features.to(self.dtype)).float()


class InitGraph(nn.Module):
    """w [B, S] -> state [B, D]."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.g.initial_state(w)


class StepGraph(nn.Module):
    """w [B, S], state [B, D] -> features [B, F], next state [B, D]."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, w: torch.Tensor, state: torch.Tensor):
        return self.g.step(w, state)


@dataclass(frozen=True)
class Export:
    precision: str
    graph: str
    path: Path
    sha256: str
    rel_error: float      # against PyTorch fp32 through ONNX Runtime, fresh random inputs
    tolerance: float
    check_seed: int       # the seed of those inputs, to replay a failure


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius norms, float64); numpy or torch."""
    got, want = torch.as_tensor(got).double().cpu(), torch.as_tensor(want).double().cpu()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def random_inputs(g, n_videos: int, n_frames: int, seed: int) -> dict[str, torch.Tensor]:
    """Fresh inputs of every graph, from the generator's own front end and latent: token ids
    of random prompts it reads, standard-normal latents, their styles, and per frame its
    features (continuous: the time features of random times in [0, 1000) s; recurrent: the
    features of real steps, from states a random number of steps in)."""
    cfg = g.config
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    front = cfg.front_end()
    tokens = torch.from_numpy(front.encode(front.example_prompts(rng, n_videos)))
    z = torch.randn(n_videos, cfg.latent_dim, generator=gen)
    with torch.no_grad():
        w = g.style(tokens, z)
        w_frames = w.repeat_interleave(-(-n_frames // n_videos), 0)[:n_frames]
        out = {"tokens": tokens, "z": z, "w": w, "w_frames": w_frames}
        if cfg.FORM == "continuous":
            t = torch.rand(n_frames, generator=gen, dtype=torch.float64) * 1000
            out["features"] = torch.as_tensor(cfg.time_features(t.numpy()))
        else:
            state = g.initial_state(w_frames)
            for _ in range(rng.randint(1, 20)):
                feats, state = g.step(w_frames, state)
            out["features"], out["state"] = feats, state
    return out


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


def export_model(g, out: Path, precisions: tuple[str, ...] = PRECISIONS, log=None,
                 check_seed: int | None = None,
                 skip: set[tuple[str, str]] = frozenset()) -> list[Export]:
    """Write ``style.onnx`` (float32), ``frames-<precision>.onnx`` for each precision and, for
    a recurrent generator, ``init.onnx`` and ``step.onnx`` (float32) into ``out``; check each
    with ``onnx.checker`` and strict shape inference, then compare it with PyTorch fp32
    through ONNX Runtime on fresh random inputs (other batch sizes than the export's). A
    comparison over tolerance raises :class:`ExportMismatch` with the numbers, and the file
    is not kept."""
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision '{p}'; choose from: {', '.join(PRECISIONS)}")
    log = log or (lambda msg: None)
    g = g.float().eval().cpu()
    seed = random.SystemRandom().randrange(2**31) if check_seed is None else check_seed
    x = random_inputs(g, 3, 5, seed)
    recurrent = g.config.FORM == "recurrent"
    with torch.no_grad():
        frames = g.synthesize(x["w_frames"], x["features"])
        if recurrent:
            state0 = g.initial_state(x["w"])
            step_out = g.step(x["w_frames"], x["state"])
    jobs = [("style", "fp32", StyleGraph(g), (x["tokens"][:2], x["z"][:2]),
             {"tokens": x["tokens"].numpy(), "z": x["z"].numpy()}, (x["w"],))]
    for p in precisions:
        dtype = torch.float16 if p == "fp16" else torch.float32
        jobs.append(("frames", p, FramesGraph(g, dtype),
                     (x["w"][:2].clone(), x["features"][:2].clone()),
                     {"w": x["w_frames"].numpy(), "features": x["features"].numpy()}, (frames,)))
    if recurrent:
        jobs.append(("init", "fp32", InitGraph(g), (x["w"][:2].clone(),),
                     {"w": x["w"].numpy()}, (state0,)))
        jobs.append(("step", "fp32", StepGraph(g), (x["w"][:2].clone(), x["state"][:2].clone()),
                     {"w": x["w_frames"].numpy(), "state": x["state"].numpy()}, step_out))
    results = []
    for name, precision, module, example, feed, want in jobs:
        if (name, precision) in skip:       # valid in the cache already
            continue
        path = graph_path(out, name, precision)
        start = time.time()
        _export(module, example, IO[name], path)
        try:
            _check_graph(path)
            try:
                got = ort_session(path).run(None, feed)
            except Exception as e:  # noqa: BLE001 - ONNX Runtime's own words, in one line
                raise ExportMismatch(
                    f"{path.name} does not run in ONNX Runtime on a batch other than the "
                    f"export's ({str(e).splitlines()[0][:160]}); the generator's code probably "
                    "fixes the batch size (use x.shape[0] or view(-1, ...) rather than "
                    "len(x) or a Python int); the export is not kept") from None
            err = max(relative_error(torch.from_numpy(a), b) for a, b in zip(got, want))
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


def write_manifest(out: Path, model_sha256: str, architecture: str, exports: list[Export],
                   kept: list[dict] | None = None) -> Path:
    """``export.json``: the model's digest and architecture, versions, and per graph its file,
    digest and checked error; ``kept``: entries of an earlier manifest still valid (other
    precisions)."""
    import onnx
    import onnxruntime

    manifest = {
        "format": FORMAT,
        "model_sha256": model_sha256,
        "architecture": architecture,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "graphs": (kept or []) + [{**asdict(e), "path": e.path.name} for e in exports],
    }
    path = out / MANIFEST
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return path


def export_to_folder(weights: Path, folder: Path, precisions: tuple[str, ...],
                     log=None, g=None, force: bool = False) -> Path:
    """Export the model at ``weights`` (``g``, when already loaded) into ``folder`` (checked,
    see :func:`export_model`) and write the manifest; graphs already valid in ``folder`` are
    kept, not exported again, unless ``force``. Returns the manifest's path."""
    from t2v_rt.compile.cache import model_digest
    from t2v_rt.generators.io import load_generator

    g = g if g is not None else load_generator(weights)
    digest = model_digest(weights)
    have = cached_exports(folder, digest)
    keep = set() if force else set(have)
    exports = export_model(g, folder, precisions, log=log, skip=keep)
    done = {(e.graph, e.precision) for e in exports}
    old = _read_manifest(folder)["graphs"] if have else []
    kept = [e for e in old if isinstance(e, dict)
            and (e.get("graph"), e.get("precision")) in have.keys() - done]
    if log and keep & {(n, p if n == "frames" else "fp32") for n in graph_names(g.config.FORM)
                       for p in precisions}:
        log(f"kept the graphs already valid in {folder} ('--force' exports them again)")
    return write_manifest(folder, digest, g.config.ARCH, exports, kept)


