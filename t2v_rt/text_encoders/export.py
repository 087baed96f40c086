"""ONNX export of the pretrained text encoder, checked against PyTorch, stored in the cache.

``minilm-fp32.onnx``: input_ids, attention_mask (int64 ``[B, L]``, both axes dynamic) ->
embedding ``[B, 384]`` float32, exported with ``torch.onnx`` (dynamo, opset
:data:`t2v_rt.compile.graphs.OPSET`), checked with ``onnx.checker`` and strict shape inference,
then run through ONNX Runtime on fresh random valid token batches (other batch sizes and
lengths than the export's) and on real sentences, and compared with PyTorch fp32: relative
error at most :data:`TOLERANCE` ``["fp32"]``.

``minilm-int8.onnx`` (on request): the fp32 graph with its weights stored in int8 (every
MatMul's and the word-embedding table, one scale per output channel; computed in float32),
a quarter of the size, kept only when every embedding of the same checks has cosine
similarity at least :data:`MIN_COSINE` with PyTorch fp32's.

The files go to ``<cache root>/minilm-<digest[:16]>/`` with ``export.json`` (written last,
atomically, under the folder's writer lock; see :mod:`t2v_rt.compile.cache`), or stay in this
process's memory when no cache folder is writable. Needs PyTorch, onnx and onnxscript.
"""

from __future__ import annotations

import json
import logging
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from t2v_rt.compile.graphs import OPSET, ort_session
from t2v_rt.errors import CompileError, UsageError
from t2v_rt.files import atomic_write, atomic_write_bytes, sha256_bytes
from t2v_rt.text_encoders.bert import SentenceEncoder, load_encoder
from t2v_rt.text_encoders.minilm import (
    CLS, DIM, FORMAT, IN_MEMORY, INPUTS, MANIFEST, NAME, OFFICIAL_SHA256, OUTPUT, PRECISIONS,
    SEP, ModelFiles, WordPieces, cache_folder, file_sha256, graph_name, load_graph,
    manifest_entries,
)

TOLERANCE = {"fp32": 1e-4}      # relative error against PyTorch fp32 (as the generators' graphs)
MIN_COSINE = 0.99               # int8: every embedding at least this close to PyTorch fp32's
FIRST_WORD = 999                # ids below are [PAD], [unused*], [UNK], [CLS], [SEP], [MASK]

SENTENCES = (
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "a large red circle moving left and right slowly on a black background",
    "a crimson sphere drifting across a starry night sky",
    "two kittens playing with a ball of yarn",
    "a",
    "Zebra-striped hot-air balloons float over snowy mountains at dawn, 1080p, cinematic",
)


class ExportMismatch(CompileError):
    """The exported text encoder does not compute what PyTorch computes."""


@dataclass(frozen=True)
class TextExport:
    precision: str
    name: str
    sha256: str
    rel_error: float        # against PyTorch fp32, through ONNX Runtime (the checks below)
    min_cosine: float
    check_seed: int
    data: bytes = field(repr=False)

    def entry(self) -> dict:
        return {"precision": self.precision, "path": self.name, "sha256": self.sha256,
                "bytes": len(self.data), "rel_error": self.rel_error,
                "min_cosine": self.min_cosine, "check_seed": self.check_seed}


def random_tokens(rng: np.random.Generator, batch: int,
                  length: int) -> tuple[np.ndarray, np.ndarray]:
    """A valid token batch ``[batch, length]``: per row [CLS], random word pieces, [SEP], then
    padding; each row's length drawn in [2, length], one row of exactly ``length``."""
    ids = np.zeros((batch, length), dtype=np.int64)
    mask = np.zeros((batch, length), dtype=np.int64)
    sizes = rng.integers(2, length + 1, size=batch)
    sizes[rng.integers(batch)] = length
    for b, n in enumerate(sizes):
        ids[b, 0], ids[b, n - 1] = CLS, SEP
        ids[b, 1:n - 1] = rng.integers(FIRST_WORD, 30522, size=n - 2)
        mask[b, :n] = 1
    return ids, mask


def check_feeds(tokenizer: WordPieces, seed: int) -> list[dict[str, np.ndarray]]:
    """The inputs an export is checked on: fresh random valid batches of several sizes and
    lengths (not the export's 2 x 7), and the real :data:`SENTENCES`."""
    rng = np.random.default_rng(seed)
    feeds = [dict(zip(INPUTS, random_tokens(rng, b, n))) for b, n in ((1, 3), (3, 17), (5, 40))]
    ids, mask = tokenizer(list(SENTENCES))
    feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _onnx_fp32(model: SentenceEncoder) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=4096)
    tokens = torch.export.Dim("tokens", min=2, max=model.config.max_position_embeddings)
    ids, mask = random_tokens(np.random.default_rng(0), 2, 7)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (torch.from_numpy(ids), torch.from_numpy(mask)), dynamo=True,
            opset_version=OPSET, input_names=list(INPUTS), output_names=[OUTPUT],
            dynamic_shapes={k: {0: batch, 1: tokens} for k in INPUTS}, verbose=False)
    return program.model_proto.SerializeToString()


def _int8(data: bytes) -> bytes:
    """The fp32 graph with its large weights stored in int8, symmetric, one scale per output
    channel (MatMul weights [K, N]: per column, dequantised by ``DequantizeLinear``) or per
    row (the word-embedding table [V, H]: the rows gathered, then scaled); the computation
    stays float32. (ONNX Runtime's dynamic quantisation, int8 activations too, measured a
    worst cosine of 0.973 per channel, 0.906 per tensor, against PyTorch on random token
    batches: under :data:`MIN_COSINE`.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    g = model.graph
    uses: dict[str, list] = {}
    for n in g.node:
        for k, x in enumerate(n.input):
            uses.setdefault(x, []).append((n, k))
    keep, head = [], []
    for init in g.initializer:
        used = uses.get(init.name, [])
        big = init.data_type == TensorProto.FLOAT and len(init.dims) == 2 and \
            init.dims[0] * init.dims[1] >= 1 << 16
        matmul = big and used and all(n.op_type == "MatMul" and k == 1 for n, k in used)
        gather = big and used and all(n.op_type == "Gather" and k == 0 and
                                      all(a.i == 0 for a in n.attribute if a.name == "axis")
                                      for n, k in used)
        if not (matmul or gather):
            keep.append(init)
            continue
        w = numpy_helper.to_array(init).astype(np.float64)
        axis = 1 if matmul else 0       # the output channel: a column, or a table's row
        scale = np.abs(w).max(axis=1 - axis) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / np.expand_dims(scale, 1 - axis)), -127, 127).astype(np.int8)
        qn, sn = f"{init.name}_int8", f"{init.name}_scale"
        keep += [numpy_helper.from_array(q, qn),
                 numpy_helper.from_array(scale.astype(np.float32), sn)]
        if matmul:
            zn = f"{init.name}_zero"
            keep.append(numpy_helper.from_array(np.zeros(len(scale), np.int8), zn))
            head.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [init.name],
                                         axis=1, name=f"{init.name}_dequantize"))
            continue
        for i, (n, _) in enumerate(used):
            out, ids = n.output[0], n.input[1]
            tag = f"{init.name}_{i}"
            n.input[0], n.output[0] = qn, f"{tag}_q"
            at = list(g.node).index(n) + 1
            for j, node in enumerate([
                helper.make_node("Gather", [sn, ids], [f"{tag}_s"], axis=0, name=f"{tag}_gs"),
                helper.make_node("Unsqueeze", [f"{tag}_s", f"{tag}_axes"], [f"{tag}_su"],
                                 name=f"{tag}_us"),
                helper.make_node("Cast", [f"{tag}_q"], [f"{tag}_f"], to=TensorProto.FLOAT,
                                 name=f"{tag}_cast"),
                helper.make_node("Mul", [f"{tag}_f", f"{tag}_su"], [out], name=f"{tag}_mul"),
            ]):
                g.node.insert(at + j, node)
            keep.append(numpy_helper.from_array(np.array([-1], np.int64), f"{tag}_axes"))
    del g.initializer[:]
    g.initializer.extend(keep)
    for j, node in enumerate(head):
        g.node.insert(j, node)
    return model.SerializeToString()


def _check_graph(data: bytes) -> None:
    import onnx

    onnx.checker.check_model(data, full_check=True)
    onnx.shape_inference.infer_shapes(onnx.load_from_string(data), check_type=True,
                                      strict_mode=True)


def compare(data: bytes, model: SentenceEncoder, feeds) -> tuple[float, float]:
    """(worst relative error, worst cosine similarity) of ONNX Runtime against PyTorch fp32
    over ``feeds``."""
    session = ort_session(data)
    worst_err, worst_cos = 0.0, 1.0
    for feed in feeds:
        (got,) = session.run([OUTPUT], feed)
        with torch.no_grad():
            want = model(*(torch.from_numpy(feed[k]) for k in INPUTS)).double().numpy()
        got = got.astype(np.float64)
        assert got.shape == want.shape == (len(feed["input_ids"]), DIM), (got.shape, want.shape)
        worst_err = max(worst_err, float(np.linalg.norm(got - want) / np.linalg.norm(want)))
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        worst_cos = min(worst_cos, float(cos.min()))
    return worst_err, worst_cos


def export_graphs(files: ModelFiles, precisions=("fp32",), log=None,
                  check_seed: int | None = None, model: SentenceEncoder | None = None
                  ) -> list[TextExport]:
    """The checked graphs of ``precisions``, in memory (see the module's text);
    :class:`ExportMismatch` with the numbers when one is off."""
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown text-encoder precision '{p}'; choose from: "
                             f"{', '.join(PRECISIONS)}")
    log = log or (lambda msg: None)
    seed = random.SystemRandom().randrange(2**31) if check_seed is None else check_seed
    model = model if model is not None else load_encoder(files.folder)
    feeds = check_feeds(WordPieces(files.tokenizer), seed)
    start = time.time()
    fp32 = _onnx_fp32(model)
    _check_graph(fp32)
    out = []
    for p in precisions:
        t0 = time.time()
        data = fp32 if p == "fp32" else _int8(fp32)
        err, cos = compare(data, model, feeds)
        name = graph_name(p)
        if p == "fp32" and not err <= TOLERANCE[p]:
            raise ExportMismatch(f"{name}: ONNX Runtime differs from PyTorch by {err:.3g} relative "
                                 f"(tolerance {TOLERANCE[p]:g}, check seed {seed}); not kept")
        if not cos >= MIN_COSINE:
            raise ExportMismatch(f"{name}: an embedding is only {cos:.4f} cosine-similar to "
                                 f"PyTorch fp32's (at least {MIN_COSINE} wanted, check seed "
                                 f"{seed}); not kept")
        took = time.time() - (start if p == "fp32" else t0)
        log(f"exported {name} ({len(data) / 2**20:.1f} MiB, {took:.1f} s); ONNX Runtime vs "
            f"PyTorch: relative error {err:.2e}, worst cosine {cos:.5f}")
        out.append(TextExport(p, name, sha256_bytes(data), err, cos, seed, data))
    return out


def write_manifest(folder: Path, files: ModelFiles, entries: list[dict]) -> None:
    import onnx
    import onnxruntime

    manifest = {
        "format": FORMAT,
        "encoder": NAME,
        "model_sha256": files.digest,
        "files_sha256": {n: file_sha256(files.folder / n) for n in OFFICIAL_SHA256},
        "official": files.official,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "graphs": entries,
    }
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(folder / MANIFEST, lambda tmp: tmp.write_text(text))


class _Writer:
    """Exports (once) and stores the wanted precisions in a folder, under its writer lock:
    valid graphs already there are kept unless ``force``; files are written atomically and the
    manifest last; an entry whose file is about to be replaced leaves the manifest first."""

    def __init__(self, files: ModelFiles, precisions, force: bool, log):
        self.files, self.wanted, self.force = files, set(precisions), force
        self.log = log or (lambda msg: None)
        self.exported: dict[str, TextExport] = {}
        self.graphs: dict[str, bytes] = {}

    def _export(self, precisions: set[str]) -> None:
        todo = sorted(precisions - self.exported.keys())
        if todo:
            for e in export_graphs(self.files, todo, self.log):
                self.exported[e.precision] = e

    def in_memory(self) -> dict[str, bytes]:
        self._export(self.wanted)
        self.graphs = {p: self.exported[p].data for p in self.wanted}
        IN_MEMORY.update({(self.files.digest, p): d for p, d in self.graphs.items()})
        return self.graphs

    def __call__(self, folder: Path) -> None:
        digest = self.files.digest
        have = {p: d for p in PRECISIONS if (d := load_graph(folder, digest, p)) is not None}
        reuse = set() if self.force else self.wanted & have.keys()
        self._export(self.wanted - reuse)
        new = [self.exported[p] for p in sorted(self.wanted - reuse)]
        entries = manifest_entries(folder, digest)
        kept = [entries[p] for p in have if p not in self.wanted - reuse]
        if new:
            write_manifest(folder, self.files, kept)     # the replaced entries leave first
            for e in new:
                atomic_write_bytes(folder / e.name, e.data)
            write_manifest(folder, self.files, kept + [e.entry() for e in new])
            self.log(f"wrote {', '.join(e.name for e in new)} and {MANIFEST} to {folder}")
        self.graphs = {p: have[p] for p in reuse} | {e.precision: e.data for e in new}


def export_into_cache(files: ModelFiles, precisions=("fp32",), log=None,
                      force: bool = False) -> dict[str, bytes]:
    """Export the text encoder into its cache folder (the first writable root), or in memory
    when none is; precision -> the graph's checked bytes."""
    from t2v_rt.compile.cache import store

    writer = _Writer(files, precisions, force, log)
    if store(lambda root: cache_folder(root, files.digest), writer, log) is None:
        return writer.in_memory()
    return writer.graphs


__all__ = ["MIN_COSINE", "SENTENCES", "TOLERANCE", "ExportMismatch", "TextExport", "compare",
           "export_graphs", "export_into_cache", "random_tokens"]
