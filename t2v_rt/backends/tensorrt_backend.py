"""The ``tensorrt`` backend: the model's TensorRT engines (``t2v-rt build-engine``) on a CUDA GPU.

Before anything runs, each of these is checked and a "no" is one line with its fix (``auto``
logs it and takes the next backend): TensorRT importable (the full package, else TensorRT-RTX);
a CUDA GPU; a GPU the flavour supports (TensorRT-RTX: the compute capabilities of its
``ComputeCapability`` enum, and the engines' targets); an intact engine folder in the cache
built for this model and this TensorRT version (:func:`t2v_rt.compile.engine.find_engine`);
for TensorRT-RTX, each engine's header valid for this GPU, driver and version
(``Runtime.get_engine_validity``); then the engine deserialises.

Running: inputs and outputs are torch CUDA tensors whose addresses go to the execution context,
and work is enqueued on torch's current stream (``execute_async_v3``), so the frames are ordered
with whatever the caller does next on that stream. Batches above the profile's MAX are split,
batches below its MIN padded (the extra rows are dropped). The frames engine runs from a CUDA
graph per batch size: static inputs and output, one plain enqueue (TensorRT's lazy set-up, and
TensorRT-RTX's kernel compilation), then capture on a side stream and ``replay()``; if capture
fails the backend says so once and enqueues plainly from then on.

TensorRT-RTX compiles its kernels for the GPU when a context is created and at new shapes
(JIT); its runtime cache keeps them beside the engines, one file per GPU model with a record
of its digest, GPU and version (``t2v_rt.compile.engine.read_runtime_cache``): loaded only when
the record matches the bytes read and this GPU and version, else ignored with one log line;
written (atomically, under the engine folder's lock) after the first frames and when the
backend closes.

Not yet run on a GPU (none was available for this work): written against the TensorRT-RTX
1.7 Python API as installed (``help()`` on its classes) and NVIDIA's documentation.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.compile.engine import (
    OTHER_BACKEND,
    capability_problem,
    find_engine,
    flavour_label,
    read_runtime_cache,
    runtime_cache_identity,
    tensorrt_module,
    validity_problem,
    write_runtime_cache,
)
from t2v_rt.compile.graphs import graph_names, io_names
from t2v_rt.errors import RuntimeUnavailable
from t2v_rt.files import read_inside, sha256_bytes
from t2v_rt.generators.io import read_config, require_weights

TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
                "INT64": torch.int64, "INT32": torch.int32, "INT8": torch.int8,
                "UINT8": torch.uint8, "BOOL": torch.bool}


@dataclass(frozen=True)
class Found:
    """What :func:`locate` found: the TensorRT module, the GPU and the engines to run."""
    flavour: str
    trt: object
    device: torch.device
    gpu: str
    cc: tuple[int, int]
    folder: Path
    manifest: dict


def no_gpu_reason() -> str:
    build = (f"PyTorch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
             else f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees none")
    return f"no CUDA GPU: {build}; TensorRT engines run on an NVIDIA GPU; {OTHER_BACKEND}"


def locate(model: str | Path | None = None, precision: str = "fp16") -> Found:
    """Every check that needs no deserialisation, in order: TensorRT, CUDA, the GPU, the
    engines. A "no" raises :class:`RuntimeUnavailable` with what to do."""
    weights = require_weights(model)
    try:
        flavour, trt = tensorrt_module()
    except RuntimeUnavailable as e:
        raise RuntimeUnavailable(f"{e} (the extra: pip install 't2v-rt[tensorrt]'); or "
                                 f"{OTHER_BACKEND}") from None
    if not torch.cuda.is_available():
        raise RuntimeUnavailable(no_gpu_reason())
    device = torch.device("cuda", torch.cuda.current_device())
    gpu, cc = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
    problem = capability_problem(flavour, trt, cc, gpu)
    if problem:
        raise RuntimeUnavailable(problem)
    folder, manifest = find_engine(weights, flavour, trt, precision, cc, gpu)
    return Found(flavour, trt, device, gpu, cc, folder, manifest)


def probe_tensorrt(model: str | Path | None = None) -> tuple[bool, str]:
    try:
        f = locate(model)
    except RuntimeUnavailable as e:
        return False, str(e)
    return True, (f"{flavour_label(f.flavour, f.trt.__version__)} engines {f.folder.name} on "
                  f"{f.gpu} (compute capability {f.cc[0]}.{f.cc[1]})")


def runtime_cache_name(gpu: str, cc: tuple[int, int]) -> str:
    """'runtime-cache-nvidia-geforce-rtx-4090-sm89.bin': kernels compiled for one GPU model."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    return f"runtime-cache-{slug}-sm{cc[0]}{cc[1]}.bin"


def trt_logger(trt):
    """A TensorRT logger that keeps the last errors (for the one-line message) instead of
    printing them. TensorRT keeps the first logger of the process: when a builder or runtime
    made one before (``build-engine`` in the same process), that one stays in use."""

    class Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = collections.deque(maxlen=2)

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg).strip())

    return Log()


def deserialize_engine(trt, flavour: str, runtime, errors: collections.deque, path: Path, log,
                       sha256: str | None = None):
    """The engine at ``path`` (a plain file, not a link); ``sha256``: the manifest's digest,
    checked on the very bytes then deserialised; for TensorRT-RTX the header is checked
    first (``get_engine_validity``). ``errors``: where ``runtime``'s logger keeps TensorRT's
    errors, quoted in the message when it refuses."""
    label = flavour_label(flavour, trt.__version__)

    def said() -> str:
        return f" (TensorRT: {errors[0]})" if errors else ""

    blob = read_inside(path.parent, path.name)
    if blob is None:
        raise RuntimeUnavailable(f"cannot read the engine {path} (missing, unreadable or not a "
                                 f"plain file); rebuild with 't2v-rt build-engine --force', or "
                                 f"{OTHER_BACKEND}")
    if sha256 is not None and sha256_bytes(blob) != sha256:
        raise RuntimeUnavailable(f"the engine {path} differs from its manifest's digest (changed "
                                 f"or cut); rebuild with 't2v-rt build-engine --force', or "
                                 f"{OTHER_BACKEND}")
    errors.clear()
    if flavour == "tensorrt_rtx":
        validity, diagnostics = runtime.get_engine_validity(blob)
        problem = validity_problem(trt, validity, diagnostics)
        if problem:
            raise RuntimeUnavailable(f"the engine {path} {problem}{said()}")
        if validity == trt.EngineValidity.SUBOPTIMAL:
            log(f"backend tensorrt: {label} says {path.name} may run slower on this GPU than "
                "an engine built for it")
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise RuntimeUnavailable(f"{label} could not load the engine {path}{said()}; rebuild "
                                 f"with 't2v-rt build-engine --force', or {OTHER_BACKEND}")
    return engine


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` [m, ...] -> [n, ...], n >= m, repeating the last row (dropped after the run)."""
    return x if len(x) == n else torch.cat([x, x[-1:].expand(n - len(x), *x.shape[1:])])


def batched(feeds: dict[str, torch.Tensor], lo: int, hi: int, run):
    """``run(feeds)`` over chunks of at most ``hi`` rows, each padded to at least ``lo``: an
    engine's profile batch range. ``run`` returns one tensor or a dict of them; the outputs,
    concatenated, without the padding."""
    n = len(next(iter(feeds.values())))
    outs = []
    for start in range(0, n, hi):
        chunk = {k: v[start:start + hi] for k, v in feeds.items()}
        m = len(next(iter(chunk.values())))
        got = run({k: _pad(v, max(m, lo)) for k, v in chunk.items()})
        outs.append({k: v[:m] for k, v in got.items()} if isinstance(got, dict) else got[:m])
    if isinstance(outs[0], dict):
        return {k: outs[0][k] if len(outs) == 1 else torch.cat([o[k] for o in outs]) for k in outs[0]}
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class _Engine:
    """One deserialised engine (its runtime config, TensorRT-RTX) and the execution context of
    its plain enqueues: its inputs, outputs and batch range."""

    def __init__(self, trt, engine, config, label: str, device: torch.device):
        self.engine, self.config, self.label, self.device = engine, config, label, device
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: TORCH_DTYPES[engine.get_tensor_dtype(n).name] for n in names}
        self.shapes = {n: tuple(engine.get_tensor_shape(n)) for n in names}   # -1: the batch
        lo, _, hi = engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.min, self.max = int(lo[0]), int(hi[0])
        self.context = self.new_context()

    def new_context(self):
        """An execution context with its own device memory (TensorRT-RTX: compiled for this GPU
        now, or taken from the runtime cache)."""
        context = (self.engine.create_execution_context(self.config) if self.config is not None
                   else self.engine.create_execution_context())
        if context is None:
            raise RuntimeUnavailable(f"TensorRT could not create an execution context for the "
                                     f"{self.label} engine; {OTHER_BACKEND}")
        return context

    def feed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked against the engine's input ``name``, on the GPU in its dtype."""
        want = self.shapes[name][1:]
        x = torch.as_tensor(x)
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{self.label} engine: input '{name}' must be [N, "
                             f"{', '.join(map(str, want))}], got {list(x.shape)}")
        return x.to(self.device, self.dtypes[name]).contiguous()

    def outputs_for(self, batch: int) -> dict[str, torch.Tensor]:
        return {n: torch.empty((batch, *self.shapes[n][1:]), dtype=self.dtypes[n],
                               device=self.device) for n in self.outputs}

    def enqueue(self, context, feeds: dict[str, torch.Tensor], outs: dict[str, torch.Tensor],
                stream: torch.cuda.Stream) -> None:
        for name, x in feeds.items():
            if not context.set_input_shape(name, tuple(x.shape)):
                raise RuntimeError(f"TensorRT refused shape {list(x.shape)} for '{name}' of the "
                                   f"{self.label} engine (profile batch {self.min}..{self.max})")
            context.set_tensor_address(name, x.data_ptr())
        for name, y in outs.items():
            context.set_tensor_address(name, y.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to enqueue the {self.label} engine")

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One plain enqueue on torch's current stream; the batch is within the profile. (On
        the legacy default stream, torch's unless the caller picks one, TensorRT adds a device
        synchronisation: correct, slower; graph replays do not go through here.)"""
        outs = self.outputs_for(len(next(iter(feeds.values()))))
        self.enqueue(self.context, feeds, outs, torch.cuda.current_stream(self.device))
        return outs

    def release(self) -> None:
        self.context = None      # the context before the engine it was made from
        self.engine = None


@dataclass
class _Graph:
    """The frames engine captured at one batch size, with an execution context of its own (so
    nothing another batch size sets in a context can change what this graph replays): replay
    after filling ``w`` and ``features``."""
    graph: torch.cuda.CUDAGraph
    context: object
    w: torch.Tensor         # [b, S]
    features: torch.Tensor  # [b, F]
    frames: torch.Tensor    # [b, 3, R, R]


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: str | Path | None = None, precision: str = "fp16", log=None,
                 cuda_graphs: bool = True):
        # TensorRT's objects, in the order they are released (close(), or Python's own order if
        # construction fails half-way): each before what it was made from or uses.
        self._graphs: dict[int, _Graph] = {}
        self._engines: dict[str, _Engine] = {}
        self._style = self._frames = None
        self._rt_configs: dict = {}
        self._rt_cache = None      # the runtime configs do not keep it alive: it goes after them
        self._runtime = None
        self._closed = True
        self.log = log or (lambda msg: None)
        weights = require_weights(model)
        self.config = read_config(weights)
        names = graph_names(self.config.FORM)
        found = locate(weights, precision)
        self.flavour, trt = found.flavour, found.trt
        self.version, self.gpu, self.cc = trt.__version__, found.gpu, found.cc
        self.device, self.folder = found.device, found.folder
        self.precision = found.manifest.get("precision", "?")
        if self.precision != precision:
            self.log(f"backend tensorrt: no {precision} engine in the cache; using the "
                     f"{self.precision} one ({self.folder.name})")
        self.cuda_graphs = cuda_graphs
        self._closed = False
        torch.zeros(1, device=self.device)     # a current CUDA context, shared with TensorRT
        self._logger = trt_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        digests = found.manifest.get("engine_sha256", {})
        engines = {name: deserialize_engine(trt, self.flavour, self._runtime, self._logger.errors,
                                            self.folder / f"{name}.engine", self.log,
                                            sha256=digests.get(name, ""))
                   for name in names}
        self._rt_cache_path, self._rt_cache_bytes = None, b""
        if self.flavour == "tensorrt_rtx":
            # One runtime cache for every engine's config, on disk per GPU model.
            self._rt_configs = {name: engines[name].create_runtime_config() for name in names}
            self._rt_cache = self._rt_configs["style"].create_runtime_cache()
            self._rt_cache_path = self.folder / runtime_cache_name(self.gpu, self.cc)
            self._rt_identity = runtime_cache_identity(self.gpu, self.cc, self.version)
            self._load_runtime_cache()
            if not self._rt_cache_bytes:
                self.log(f"backend tensorrt: compiling TensorRT-RTX's kernels for {self.gpu} "
                         f"(once; kept in {self._rt_cache_path.name} beside the engines)")
            for config in self._rt_configs.values():
                if not config.set_runtime_cache(self._rt_cache):
                    raise RuntimeUnavailable(f"TensorRT-RTX refused its runtime cache; "
                                             f"{OTHER_BACKEND}")
                if cuda_graphs:
                    # Shape-specialised kernels compiled at the first enqueue of a batch size
                    # (the warm-up), not later in the background, where a captured graph would
                    # keep the generic kernel.
                    config.dynamic_shapes_kernel_specialization_strategy = \
                        trt.DynamicShapesKernelSpecializationStrategy.EAGER
        for name, engine in engines.items():
            got = self._engines[name] = _Engine(trt, engine, self._rt_configs.get(name), name,
                                                self.device)
            inputs, outputs = io_names(name, self.config)
            if sorted(got.inputs) != sorted(inputs) or sorted(got.outputs) != sorted(outputs):
                raise RuntimeUnavailable(
                    f"{self.folder / f'{name}.engine'} has inputs {got.inputs} and outputs "
                    f"{got.outputs}, not {list(inputs)} and {list(outputs)}; rebuild with "
                    "'t2v-rt build-engine --force'")
        self._style, self._frames = self._engines["style"], self._engines["frames"]
        self._capture_stream = torch.cuda.Stream(self.device) if cuda_graphs else None
        self._saved_after_first_frames = False

    # --- set-up -------------------------------------------------------------------------

    def _load_runtime_cache(self) -> None:
        """Load the runtime cache if :func:`read_runtime_cache` accepts it (a plain file in the
        engine folder whose digest, on the bytes read, and GPU and version match its record)."""
        path = self._rt_cache_path
        blob, why = read_runtime_cache(self.folder, path.name, self._rt_identity)
        if why:
            self.log(f"backend tensorrt: ignoring the runtime cache {path} ({why}); kernels are "
                     "compiled anew and the file replaced")
        if blob is None:
            return
        if self._rt_cache.deserialize(blob):
            self._rt_cache_bytes = blob
            self.log(f"backend tensorrt: kernels from the runtime cache {path.name}")
        else:
            self.log(f"backend tensorrt: the runtime cache {path} does not fit this GPU, driver "
                     "or TensorRT-RTX; kernels are compiled anew and the file replaced")

    def _save_runtime_cache(self) -> None:
        """Write TensorRT-RTX's runtime cache beside the engines if it learnt something."""
        if self._rt_cache is None:
            return
        try:
            memory = self._rt_cache.serialize()
            blob = bytes(memory) if memory is not None else b""
            if blob and blob != self._rt_cache_bytes:
                write_runtime_cache(self.folder, self._rt_cache_path.name, blob, self._rt_identity)
                self._rt_cache_bytes = blob
                self.log(f"backend tensorrt: runtime cache ({len(blob) / 1e6:.1f} MB) saved to "
                         f"{self._rt_cache_path}")
        except Exception as e:  # noqa: BLE001 - a cache that cannot be saved costs time only
            self.log(f"backend tensorrt: runtime cache not saved ({type(e).__name__}: {e})")

    # --- running ------------------------------------------------------------------------

    def style(self, text: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """text: the style engine's text input by its name (``config.text_input``: tokens
        int64, or a sentence embedding float32), z [B, Z]."""
        e, name = self._style, io_names("style", self.config)[0][0]
        feeds = {name: e.feed(name, text), "z": e.feed("z", z)}
        if len(feeds[name]) != len(feeds["z"]):
            raise ValueError(f"{name} [{len(text)}, ...] and z [{len(z)}, Z] differ in batch")
        if len(text) == 0:
            return torch.empty((0, *e.shapes["w"][1:]), dtype=torch.float32, device=self.device)
        return batched(feeds, e.min, e.max, lambda f: e.run(f)["w"]).float()

    def frames(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        e = self._frames
        w, features = torch.as_tensor(w), torch.as_tensor(features)
        if features.dim() != 2 or len(w) != len(features):
            raise ValueError(f"frames: w [N, S] and features [N, F] needed, got {list(w.shape)} "
                             f"and {list(features.shape)}")
        feeds = {"w": e.feed("w", w), "features": e.feed("features", features)}
        if len(features) == 0:
            return torch.empty((0, 3, self.resolution, self.resolution), device=self.device)
        out = batched(feeds, e.min, e.max, self._run_frames).float()
        if not self._saved_after_first_frames:
            self._saved_after_first_frames = True
            self._save_runtime_cache()
        return out

    def initial_state(self, w: torch.Tensor) -> torch.Tensor:
        e = self._engines.get("init")
        if e is None:
            return super().initial_state(w)
        return batched({"w": e.feed("w", w)}, e.min, e.max, lambda f: e.run(f)["state"]).float()

    def step(self, w: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self._engines.get("step")
        if e is None:
            return super().step(w, state)
        feeds = {"w": e.feed("w", w), "state": e.feed("state", state)}
        out = batched(feeds, e.min, e.max, e.run)
        return out["features"].float(), out["next_state"].float()

    def _run_frames(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        b = len(feeds["w"])
        g = self._graphs.get(b) if self.cuda_graphs else None
        if g is None and self.cuda_graphs:
            g = self._capture(b, feeds)
        if g is None:
            return self._frames.run(feeds)["frames"]
        g.w.copy_(feeds["w"])
        g.features.copy_(feeds["features"])
        g.graph.replay()
        return g.frames.clone()     # the static output is overwritten by the next replay

    def _capture(self, b: int, feeds: dict[str, torch.Tensor]) -> _Graph | None:
        """The frames engine at batch ``b`` as a CUDA graph, or None (graphs off from then on)."""
        e, side = self._frames, self._capture_stream
        context = e.new_context()
        static = {k: v.clone() for k, v in feeds.items()}
        outs = e.outputs_for(b)
        # warm-up, not captured: TensorRT's lazy set-up and TensorRT-RTX's kernel compilation
        e.enqueue(context, static, outs, torch.cuda.current_stream(self.device))
        if hasattr(context, "is_stream_capturable") and \
                not context.is_stream_capturable(side.cuda_stream):
            self._graphs_off("TensorRT says this context cannot be captured")
            return None
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: CUDA calls of TensorRT's own threads do not invalidate the capture
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                e.enqueue(context, static, outs, side)
        except Exception as err:  # noqa: BLE001 - plain enqueues give the same frames
            self._graphs_off(f"{type(err).__name__}: {err}")
            return None
        g = self._graphs[b] = _Graph(graph, context, static["w"], static["features"], outs["frames"])
        return g

    def _graphs_off(self, why: str) -> None:
        self.cuda_graphs = False
        self._graphs.clear()
        self.log(f"backend tensorrt: CUDA graph capture failed ({why}); running without graphs")

    # --- the rest -------------------------------------------------------------------------

    def describe(self) -> str:
        e = self._frames
        return (f"tensorrt ({flavour_label(self.flavour, self.version)}, {self.precision}, "
                f"batch {e.min}..{e.max}, CUDA graphs {'on' if self.cuda_graphs else 'off'}) "
                f"on {self.gpu} (compute capability {self.cc[0]}.{self.cc[1]})")

    def close(self) -> None:
        """Save the runtime cache, then release TensorRT's objects, each before what it uses:
        graphs, contexts and engines, runtime configs, the runtime cache, the runtime."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._frames is not None:    # fully built: it may have compiled kernels
            self._save_runtime_cache()
        self._graphs.clear()
        for e in self._engines.values():
            e.release()
        self._engines.clear()
        self._style = self._frames = None
        self._rt_configs.clear()
        self._rt_cache = None
        self._runtime = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - nothing to report to at interpreter exit
            pass
