"""ONNX export of any generator: its graphs, each checked against PyTorch through ONNX Runtime.

The graphs follow the generator interface (``t2v_rt.generators.interface``):

- ``style``: the text input and latents [B, Z] float32 -> per-video style w [B, S] float32
  (once per video). The text input is named by the config (``config.text_input``,
  :func:`~t2v_rt.compile.graphs.io_names`): ``tokens``, token ids [B, L] int64, or
  ``text_embedding``, a pretrained sentence embedding [B, E] float32 computed on the host (the
  encoder is not in the graph);
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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from t2v_rt.compile.graphs import (  # noqa: F401 - the graph names, files and sessions live there
    FORMAT, IN_MEMORY, IO, MANIFEST, OPSET, PRECISIONS, TOLERANCE, Graph, cached_exports,
    ensure_exported, file_sha256, graph_names, graph_path, io_names, load_exports,
    manifest_entries, ort_session,
)
from t2v_rt.errors import CompileError, UsageError
from t2v_rt.files import atomic_write, atomic_write_bytes, sha256_bytes

class StyleGraph(nn.Module):
    """text (tokens [B, L] int64, or an embedding [B, E] float32), z [B, Z] -> w [B, S]
    (float32)."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, text: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.g.style(text, z)


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
    """One exported and checked graph, in memory: its file name and serialised model."""
    precision: str
    graph: str
    name: str             # its file name (graph_path)
    sha256: str
    rel_error: float      # against PyTorch fp32 through ONNX Runtime, fresh random inputs
    tolerance: float
    check_seed: int       # the seed of those inputs, to replay a failure
    data: bytes = field(repr=False)

    def entry(self) -> dict:
        """Its manifest entry."""
        return {"precision": self.precision, "graph": self.graph, "path": self.name,
                "sha256": self.sha256, "rel_error": self.rel_error,
                "tolerance": self.tolerance, "check_seed": self.check_seed}

    def loaded(self, folder: Path | None) -> Graph:
        return Graph(self.graph, self.precision, self.data, self.sha256,
                     None if folder is None else folder / self.name)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius norms, float64); numpy or torch."""
    got, want = torch.as_tensor(got).double().cpu(), torch.as_tensor(want).double().cpu()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def random_inputs(g, n_videos: int, n_frames: int, seed: int) -> dict[str, torch.Tensor]:
    """Fresh inputs of every graph, from the generator's own front end and latent: the text
    input of random prompts it reads (``front_end().features``: token ids, or a pretrained
    encoder's embeddings), under ``"text"`` and under the style graph's input name
    (``config.text_input``: ``"tokens"`` or ``"text_embedding"``), standard-normal latents,
    their styles, and per frame its features (continuous: the time features of random times in
    [0, 1000) s; recurrent: the features of real steps, from states a random number of steps
    in)."""
    import numpy as np

    cfg = g.config
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    front = cfg.front_end()
    text = torch.from_numpy(np.array(front.features(front.example_prompts(rng, n_videos))))
    z = torch.randn(n_videos, cfg.latent_dim, generator=gen)
    with torch.no_grad():
        w = g.style(text, z)
        w_frames = w.repeat_interleave(-(-n_frames // n_videos), 0)[:n_frames]
        out = {"text": text, cfg.text_input: text, "z": z, "w": w, "w_frames": w_frames}
        if cfg.FORM == "continuous":
            t = torch.rand(n_frames, generator=gen, dtype=torch.float64) * 1000
            out["features"] = torch.as_tensor(cfg.time_features(t.numpy()))
        else:
            state = g.initial_state(w_frames)
            for _ in range(rng.randint(1, 20)):
                feats, state = g.step(w_frames, state)
            out["features"], out["state"] = feats, state
    return out


def _export(module: nn.Module, args: tuple, names: tuple[list[str], list[str]], name: str) -> bytes:
    """The serialised ONNX model of ``module`` (in memory: written, if at all, by the caller)."""
    inputs, outputs = names
    batch = torch.export.Dim("batch", min=1, max=4096)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # optional torchvision ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=inputs,
            output_names=outputs, dynamic_shapes=tuple({0: batch} for _ in inputs),
            verbose=False)
    try:
        return program.model_proto.SerializeToString()
    except ValueError as e:     # protobuf's 2 GB limit
        raise CompileError(f"{name} does not fit in one ONNX file ({e}); models over 2 GB "
                           "are not supported") from None


def _check_graph(data: bytes) -> None:
    import onnx

    onnx.checker.check_model(data, full_check=True)
    onnx.shape_inference.infer_shapes(onnx.load_from_string(data), check_type=True,
                                      strict_mode=True)


def export_model(g, out: Path, precisions: tuple[str, ...] = PRECISIONS, log=None,
                 check_seed: int | None = None,
                 skip: set[tuple[str, str]] = frozenset()) -> list[Export]:
    """:func:`export_graphs`, each graph then written into ``out`` (atomically)."""
    exports = export_graphs(g, precisions, log, check_seed, skip)
    for e in exports:
        atomic_write_bytes(Path(out) / e.name, e.data)
    return exports


def export_graphs(g, precisions: tuple[str, ...] = PRECISIONS, log=None,
                  check_seed: int | None = None,
                  skip: set[tuple[str, str]] = frozenset()) -> list[Export]:
    """Export ``style.onnx`` (float32), ``frames-<precision>.onnx`` for each precision and, for
    a recurrent generator, ``init.onnx`` and ``step.onnx`` (float32), in memory (none of
    ``skip``); check each with ``onnx.checker`` and strict shape inference, then compare it
    with PyTorch fp32 through ONNX Runtime on fresh random inputs (other batch sizes than the
    export's). A comparison over tolerance raises :class:`ExportMismatch` with the numbers."""
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
    text_name = io_names("style", g.config)[0][0]
    jobs = [("style", "fp32", StyleGraph(g), (x["text"][:2], x["z"][:2]),
             {text_name: x["text"].numpy(), "z": x["z"].numpy()}, (x["w"],))]
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
        file = graph_path(Path(), name, precision).name
        start = time.time()
        data = _export(module, example, io_names(name, g.config), file)
        _check_graph(data)
        try:
            got = ort_session(data).run(None, feed)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's own words, in one line
            raise ExportMismatch(
                f"{file} does not run in ONNX Runtime on a batch other than the "
                f"export's ({str(e).splitlines()[0][:160]}); the generator's code probably "
                "fixes the batch size (use x.shape[0] or view(-1, ...) rather than "
                "len(x) or a Python int); the export is not kept") from None
        err = max(relative_error(torch.from_numpy(a), b) for a, b in zip(got, want))
        tol = TOLERANCE[precision]
        if not err <= tol:
            raise ExportMismatch(
                f"{file}: ONNX Runtime differs from PyTorch by {err:.3g} relative "
                f"(tolerance {tol:g}, check seed {seed}); the export is not kept")
        log(f"exported {file} ({len(data) / 1e6:.1f} MB, {time.time() - start:.1f} s); "
            f"ONNX Runtime vs PyTorch: relative error {err:.2e} (tolerance {tol:g})")
        results.append(Export(precision, name, file, sha256_bytes(data), err, tol, seed, data))
    return results


class ExportMismatch(CompileError):
    """An exported graph does not compute what PyTorch computes."""


def write_manifest(out: Path, model_sha256: str, architecture: str, exports: list[Export],
                   kept: list[dict] | None = None) -> Path:
    """``export.json``, atomically: the model's digest and architecture, versions, and per graph
    its file, digest and checked error; ``kept``: entries of an earlier manifest still valid
    (other graphs or precisions)."""
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
        "graphs": (kept or []) + [e.entry() for e in exports],
    }
    path = out / MANIFEST
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return path


class _Exporter:
    """Exports a model's graphs and stores them in a folder with the manifest; called with the
    folder's writer lock held (``cache.store`` / ``cache.store_in``). What the folder holds is
    read again first, so graphs a concurrent writer stored are kept, not exported twice, and
    every entry of the manifest survives; graphs exported for a folder that then failed are
    reused for the next. Files are written atomically and the manifest last; an entry whose
    file is about to be replaced leaves the manifest first, so at no moment does the manifest
    name a missing, partial or other file."""

    def __init__(self, weights: Path, precisions: tuple[str, ...], g, force: bool, log,
                 say_kept: bool = False):
        from t2v_rt.compile.cache import model_digest

        for p in precisions:
            if p not in PRECISIONS:
                raise UsageError(f"unknown precision '{p}'; choose from: {', '.join(PRECISIONS)}")
        self.digest, self.g = model_digest(weights), g
        self.precisions, self.force = precisions, force
        self.log, self.say_kept = log or (lambda msg: None), say_kept
        self.wanted = {(n, p if n == "frames" else "fp32") for n in graph_names(g.config.FORM)
                       for p in precisions}
        self.exported: dict[tuple[str, str], Export] = {}
        self.graphs: dict[tuple[str, str], Graph] = {}

    def _export(self, keys: set[tuple[str, str]]) -> None:
        keys = keys - self.exported.keys()
        if keys:
            for e in export_graphs(self.g, self.precisions, self.log, skip=self.wanted - keys):
                self.exported[(e.graph, e.precision)] = e

    def in_memory(self) -> dict[tuple[str, str], Graph]:
        """Every wanted graph, exported if not yet, kept in this process (``IN_MEMORY``): for
        a process with no writable folder."""
        self._export(self.wanted)
        graphs = {k: self.exported[k].loaded(None) for k in self.wanted}
        IN_MEMORY.update({(self.digest, *k): g for k, g in graphs.items()})
        return graphs

    def __call__(self, folder: Path) -> None:
        have = load_exports(folder, self.digest)        # valid now, under the lock
        reuse = set() if self.force else self.wanted & have.keys()
        if reuse and self.say_kept:
            self.log(f"kept the graphs already valid in {folder} ('--force' exports them again)")
        self._export(self.wanted - reuse)
        new = [self.exported[k] for k in sorted(self.wanted - reuse)]
        entries = manifest_entries(folder, self.digest)
        names = {e.name for e in new}
        kept = [entries[k] for k in have
                if k not in self.wanted - reuse and entries[k]["path"] not in names]
        arch = self.g.config.ARCH
        written = []
        try:
            if new or len(kept) != len(entries):
                if any(e["path"] in names for e in entries.values()):
                    write_manifest(folder, self.digest, arch, [], kept)
                for e in new:
                    atomic_write_bytes(folder / e.name, e.data)
                    written.append(folder / e.name)
                write_manifest(folder, self.digest, arch, new, kept)
        except BaseException:
            listed = {e["path"] for e in manifest_entries(folder, self.digest).values()}
            for path in written:
                if path.name not in listed:
                    path.unlink(missing_ok=True)
            raise
        self.graphs = {k: have[k] for k in reuse}
        self.graphs.update({(e.graph, e.precision): e.loaded(folder) for e in new})
        if new:
            self.log(f"wrote {', '.join(e.name for e in new)} and {MANIFEST} to {folder}")


def export_into_cache(weights: Path, precisions: tuple[str, ...], log=None,
                      g=None) -> dict[tuple[str, str], Graph]:
    """Export the model at ``weights`` (``g``, when already loaded) into its cache folder, the
    first writable one (``t2v_rt.compile.cache.store``), or in memory when none is; graphs a
    concurrent writer stored meanwhile are taken as they are. (graph, precision) -> graph."""
    from t2v_rt.compile.cache import model_folder, store
    from t2v_rt.generators.io import load_generator

    g = g if g is not None else load_generator(weights)    # weights that do not fit fail here
    if log:
        log(f"no ONNX export of this model ({', '.join(precisions)}) in the cache: exporting "
            "it once ('t2v-rt export-onnx' does it ahead of time)")
    exporter = _Exporter(weights, precisions, g, False, log)
    if store(lambda root: model_folder(weights, root), exporter, log) is None:
        return exporter.in_memory()
    return exporter.graphs


def export_to_folder(weights: Path, folder: Path | None, precisions: tuple[str, ...],
                     log=None, g=None, force: bool = False) -> Path:
    """Export the model at ``weights`` (``g``, when already loaded) into ``folder`` (checked,
    see :func:`export_graphs`) and write the manifest; graphs already valid in ``folder`` are
    kept, not exported again, unless ``force``. ``folder`` None: the model's cache folder (the
    first writable one, see :mod:`t2v_rt.compile.cache`); a folder the user named is never
    swapped for another: a failure to write there is :class:`t2v_rt.files.NotWritable`.
    Returns the manifest's path."""
    from t2v_rt.compile.cache import model_folder, store, store_in
    from t2v_rt.generators.io import load_generator

    g = g if g is not None else load_generator(weights)
    exporter = _Exporter(weights, precisions, g, force, log, say_kept=True)
    if folder is not None:
        return store_in(Path(folder), exporter, "the ONNX export", "--out", log) / MANIFEST
    where = store(lambda root: model_folder(weights, root), exporter, log)
    if where is None:
        model_folder(weights)       # raises NotWritable: no cache folder can be written
    return where / MANIFEST
