"""TensorRT engines of the exported graphs: built ahead of time, cached with a manifest.

The full ``tensorrt`` package builds when it is importable (it needs a GPU); otherwise
``tensorrt_rtx`` (TensorRT for RTX, on PyPI), which builds on a machine without a GPU for
the compute capabilities it supports (8.0, 8.6, 8.9, 12.x by default; not 9.0, the
H100/H200). One optimisation profile over the batch dimension (MIN:OPT:MAX) per graph; the
precision lives in the ONNX graph (TensorRT-RTX networks are strongly typed).

Layout, in the model's cache folder (``t2v_rt.compile.cache``)::

    engines/<flavour>-<version>-<precision>-b<min>_<opt>_<max>/
        style.engine  frames.engine  [init.engine  step.engine]  manifest.json

(one engine per exported graph: a recurrent generator's state graphs too).

The manifest says what the engines were built from and for (model and ONNX digests, flavour
and version, target compute capabilities, precision, profiles, build time, engine digests);
an engine is reused only when all of it matches and the files are intact.

Whether engines can run on this machine is decided here too, for the ``tensorrt`` backend and
``doctor``: :func:`find_engine` (the cache), :func:`capability_problem` (the GPU against the
flavour and the engines' targets) and :func:`validity_problem` (TensorRT-RTX's reading of an
engine's header).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from t2v_rt.compile.cache import locked, model_digest, model_folder, model_folders, store, store_in
from t2v_rt.compile.graphs import (  # noqa: F401 - file_sha256: re-exported
    Graph, ensure_exported, file_sha256, graph_names,
)
from t2v_rt.errors import CompileError, RuntimeUnavailable, UsageError
from t2v_rt.files import atomic_write, atomic_write_bytes, is_bare_name, read_inside, sha256_bytes

MANIFEST = "manifest.json"
FLAVOURS = ("tensorrt", "tensorrt_rtx")     # module names, in order of preference
LABELS = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
# Where to go when the engines cannot run: ``auto`` takes the next backend that can.
OTHER_BACKEND = "use --backend auto, triton or torch"


@dataclass(frozen=True)
class Profile:
    min: int
    opt: int
    max: int

    @staticmethod
    def parse(text: str) -> Profile:
        try:
            lo, opt, hi = (int(x) for x in text.split(":"))
        except ValueError:
            raise UsageError(f"--batch must be MIN:OPT:MAX (three integers), got '{text}'") from None
        if not 1 <= lo <= opt <= hi <= 4096:
            raise UsageError(f"--batch needs 1 <= MIN <= OPT <= MAX <= 4096, got '{text}'")
        return Profile(lo, opt, hi)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def tensorrt_module():
    """(flavour, module): the full TensorRT if importable, else TensorRT-RTX; else raises
    :class:`RuntimeUnavailable` with what to install."""
    reasons = []
    for name in FLAVOURS:
        try:
            return name, importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a broken install is a "no" with its reason
            reasons.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
    raise RuntimeUnavailable("no TensorRT is installed (" + "; ".join(reasons) + "); "
                             "pip install tensorrt-rtx-cu13 (builds without a GPU), or "
                             "NVIDIA's full tensorrt")


def engine_folder_name(flavour: str, version: str, precision: str, profile: Profile) -> str:
    return f"{flavour}-{version}-{precision}-b{profile.min}_{profile.opt}_{profile.max}"


def engine_folder(weights: Path, flavour: str, version: str, precision: str,
                  profile: Profile, root: Path | None = None) -> Path:
    """Where :func:`build_engines` writes these engines in the cache (``root``: the cache root,
    by default the one this process writes to)."""
    return (model_folder(weights, root) / "engines"
            / engine_folder_name(flavour, version, precision, profile))


def _progress_monitor(trt, log, label: str):
    """TensorRT's top-level build phases, as lines on ``log``."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                log(f"{label}: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True

        def phase_finish(self, phase_name):
            pass

    return Monitor()


def _build_one(trt, flavour: str, onnx: Graph, profile: Profile, log, label: str) -> tuple[bytes, list[str]]:
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0
    if flavour == "tensorrt" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    name = onnx.path.name if onnx.path is not None else f"the {onnx.graph} graph"
    if not parser.parse(onnx.data):     # the bytes whose digest was checked
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise CompileError(f"TensorRT cannot parse {name}: {errors}")
    config = builder.create_builder_config()
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)

        def shape(n: int, dims=dims) -> tuple[int, ...]:
            return tuple(n if d == -1 else d for d in dims)

        opt_profile.set_shape(tensor.name, shape(profile.min), shape(profile.opt), shape(profile.max))
    config.add_optimization_profile(opt_profile)
    monitor = _progress_monitor(trt, log, label)     # referenced until the build ends
    config.progress_monitor = monitor
    targets = ["current GPU"]
    if flavour == "tensorrt_rtx":
        targets = [str(config.get_compute_capability(i))
                   for i in range(config.num_compute_capabilities)] or ["default (8.0, 8.6, 8.9, 12.x)"]
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise CompileError(f"TensorRT failed to build {name}; rerun with "
                           "T2V_RT_DEBUG=1 and see TensorRT's log")
    return bytes(engine), targets


def read_manifest(folder: Path) -> dict | None:
    """The engine folder's manifest, or None when it is missing, unreadable or not an object."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_problem(manifest: dict | None, folder: Path, *, model_sha256: str, flavour: str,
                     version: str, precision: str | None = None,
                     onnx_sha256: dict[str, str] | None = None) -> str | None:
    """Why the engines in ``folder`` cannot serve this model with this TensorRT, or None."""
    if manifest is None:
        return "no readable manifest"
    if manifest.get("model_sha256") != model_sha256:
        return "built for another model (its weights' digest differs); rebuild with 't2v-rt build-engine'"
    if (manifest.get("flavour"), manifest.get("version")) != (flavour, version):
        return (f"built with {manifest.get('flavour')} {manifest.get('version')}, this machine "
                f"has {flavour} {version}; rebuild with 't2v-rt build-engine --force'")
    if precision is not None and manifest.get("precision") != precision:
        return f"precision {manifest.get('precision')}, not {precision}"
    if onnx_sha256 is not None and manifest.get("onnx_sha256") != onnx_sha256:
        return "built from other ONNX graphs; rebuild with 't2v-rt build-engine --force'"
    engines = manifest.get("engine_sha256")
    graphs = manifest.get("graphs")
    if (not isinstance(engines, dict) or not isinstance(graphs, list)
            or sorted(engines) != sorted(graphs)
            or tuple(graphs) not in (graph_names("continuous"), graph_names("recurrent"))):
        return "the manifest lists no complete set of engines; rebuild with 't2v-rt build-engine --force'"
    for name, digest in engines.items():
        path = folder / f"{name}.engine"
        data = read_inside(folder, path.name)       # a plain file in the folder, not a link
        if data is None:
            return (f"{path.name} is missing or not a plain file; rebuild with "
                    "'t2v-rt build-engine --force'")
        if sha256_bytes(data) != digest:
            return (f"{path.name} is corrupt or truncated (its digest differs from the "
                    "manifest's); rebuild with 't2v-rt build-engine --force'")
    return None


def build_engines(weights: Path, precision: str = "fp16", profile: Profile = Profile(1, 16, 64),
                  out: Path | None = None, force: bool = False, log=None) -> Path:
    """Build (or reuse) the engines of every exported graph of the model at ``weights`` (style
    and frames; init and step for a recurrent generator); returns the engine folder: ``out``,
    else in the model's cache folder (the first writable one, see
    :mod:`t2v_rt.compile.cache`; :class:`t2v_rt.files.NotWritable` when none is). The
    folder's lock is held while building and writing; engines another process built
    meanwhile are reused. Progress on ``log``."""
    log = log or (lambda msg: None)
    flavour, trt = tensorrt_module()
    version = trt.__version__
    graphs = ensure_exported(weights, precision, log)
    onnx_sha = {name: g.sha256 for name, g in graphs.items()}
    digest = model_digest(weights)
    name = engine_folder_name(flavour, version, precision, profile)

    def reusable(folder: Path) -> bool:
        manifest = read_manifest(folder)
        ok = (not force and manifest_problem(manifest, folder, model_sha256=digest, flavour=flavour,
                                             version=version, precision=precision,
                                             onnx_sha256=onnx_sha) is None
              and manifest.get("profile") == str(profile))
        if ok:
            log(f"reusing the engines in {folder} (same model, ONNX, {flavour} {version}, "
                f"{precision}, batch {profile}; --force rebuilds)")
        return ok

    if out is None:
        for folder in (f / "engines" / name for f in model_folders(weights)):
            if not os.path.islink(folder) and reusable(folder):
                return folder
    built: dict[str, bytes] = {}
    built_targets: list[str] = []
    start = time.time()

    def write(folder: Path) -> None:
        if reusable(folder):            # built by another process while this one waited
            return
        if not built:       # built once, whichever folder then takes them
            for gname, graph in graphs.items():
                t0 = time.time()
                log(f"building the {gname} engine with {flavour} {version} ({precision}, "
                    f"batch {profile})")
                built[gname], built_targets[:] = _build_one(trt, flavour, graph, profile, log,
                                                            gname)
                log(f"built the {gname} engine: {len(built[gname]) / 1e6:.1f} MB in "
                    f"{time.time() - t0:.1f} s")
        (folder / MANIFEST).unlink(missing_ok=True)     # no manifest while the engines change
        try:
            for gname, blob in built.items():
                atomic_write_bytes(folder / f"{gname}.engine", blob)
            manifest = {
                "model_sha256": digest, "onnx_sha256": onnx_sha,
                "flavour": flavour, "version": version,
                "target_compute_capabilities": list(built_targets),
                "precision": precision, "profile": str(profile), "graphs": list(graphs),
                "profiles": {n: [profile.min, profile.opt, profile.max] for n in graphs},
                "build_seconds": round(time.time() - start, 2),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "engine_sha256": {n: sha256_bytes(blob) for n, blob in built.items()},
            }
            atomic_write(folder / MANIFEST,
                         lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
        except BaseException:
            for gname in built:         # engines without a manifest: space given back
                (folder / f"{gname}.engine").unlink(missing_ok=True)
            raise
        log(f"engines and manifest in {folder} ({time.time() - start:.1f} s)")

    if out is not None:
        return store_in(Path(out), write, "the engines", "--out", log)
    folder = store(lambda root: engine_folder(weights, flavour, version, precision, profile, root),
                   write, log)
    if folder is None:
        model_folder(weights)       # raises NotWritable: engines need a folder on disk
    return folder


def cached_engines(weights: Path) -> list[tuple[Path, dict | None]]:
    """Every engine folder of the model at ``weights`` in the cache folders (the configured
    cache's, then the temporary one's), with its manifest; symbolic links are passed over."""
    found = []
    for base in (folder / "engines" for folder in model_folders(weights)):
        try:
            if os.path.islink(base) or not os.path.isdir(base):
                continue
            folders = sorted(d for d in base.iterdir() if os.path.isdir(d) and not os.path.islink(d))
        except OSError:         # unreadable: nothing found there
            continue
        found += [(d, read_manifest(d)) for d in folders]
    return found


def flavour_label(flavour: str, version: str) -> str:
    """'TensorRT-RTX 1.7' for ('tensorrt_rtx', '1.7.1.116')."""
    return f"{LABELS.get(flavour, flavour)} {'.'.join(version.split('.')[:2])}"


def _cc(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def supported_capabilities(trt) -> list[tuple[int, int]]:
    """The compute capabilities TensorRT-RTX runs on, read from its ``ComputeCapability`` enum
    (1.7: SM75, SM80, SM86, SM89, SM120, SM121; no 9.0 or 10.0, the data-centre GPUs)."""
    caps = []
    for name in trt.ComputeCapability.__members__:
        m = re.fullmatch(r"SM(\d+)(\d)", name)
        if m:
            caps.append((int(m[1]), int(m[2])))
    return sorted(caps)


def engine_targets(trt, targets: list[str]) -> list[tuple[int, int]] | None:
    """The compute capabilities a TensorRT-RTX manifest's engines run on; None when the
    manifest does not say (built for the build machine's GPU)."""
    caps = set()
    for text in targets:
        if text.startswith("default"):
            # TensorRT-RTX's default targets: Ampere and later (Turing, 7.5, only when asked for)
            caps.update(cc for cc in supported_capabilities(trt) if cc >= (8, 0))
        elif m := re.search(r"SM(\d+)(\d)$", text):
            caps.add((int(m[1]), int(m[2])))
        else:
            return None
    return sorted(caps)


def capability_problem(flavour: str, trt, cc: tuple[int, int], gpu: str,
                       targets: list[str] | None = None) -> str | None:
    """Why engines of ``flavour`` (built for ``targets``, from the manifest) cannot run on a GPU
    of compute capability ``cc`` named ``gpu``, or None. The full TensorRT builds on and for the
    GPU it runs on: nothing to say before deserialising."""
    if flavour != "tensorrt_rtx":
        return None
    label = flavour_label(flavour, trt.__version__)
    caps = supported_capabilities(trt)
    if cc not in caps:
        return (f"{label} does not support compute capability {_cc(cc)} ({gpu}); it runs "
                f"{', '.join(map(_cc, caps))} (RTX-class GPUs); {OTHER_BACKEND}")
    built = engine_targets(trt, targets) if targets is not None else None
    if built is not None and cc not in built:
        return (f"the engines target compute capability {', '.join(map(_cc, built))}, not this "
                f"GPU's {_cc(cc)} ({gpu}), and 't2v-rt build-engine' builds for the default "
                f"targets only; {OTHER_BACKEND}")
    return None


# What TensorRT-RTX's ``EngineInvalidityDiagnostics`` bits mean, and what to do about each.
_DIAGNOSES = {
    "MALFORMED_ENGINE": "is corrupt or truncated (TensorRT-RTX cannot read its header); "
                        "rebuild with 't2v-rt build-engine --force'",
    "VERSION_MISMATCH": "was built by another TensorRT-RTX version than the installed {version}; "
                        "rebuild with 't2v-rt build-engine --force'",
    "UNSUPPORTED_CC": "does not target this GPU's compute capability; " + OTHER_BACKEND,
    "OLD_CUDA_DRIVER": "needs a newer NVIDIA driver than this machine's; update the driver, or "
                       + OTHER_BACKEND,
    "OLD_CUDA_RUNTIME": "needs a newer CUDA runtime than this machine's; update CUDA, or "
                        + OTHER_BACKEND,
    "INSUFFICIENT_GPU_MEMORY": "needs more GPU memory than is free; free some (nvidia-smi shows "
                               "who holds it), or " + OTHER_BACKEND,
    "CUDA_ERROR": "could not be checked: CUDA failed while TensorRT-RTX read the GPU (see "
                  "nvidia-smi); " + OTHER_BACKEND,
}


def validity_problem(trt, validity, diagnostics: int) -> str | None:
    """TensorRT-RTX's ``Runtime.get_engine_validity`` answer as what is wrong with the engine
    and what to do (a phrase to follow the engine's name), or None when it may run (VALID, or
    SUBOPTIMAL: runs, maybe slower). It reads the header only: damage past the header is the
    manifest's digests' to find."""
    if validity != trt.EngineValidity.INVALID:
        return None
    version = trt.__version__
    found, rest = [], int(diagnostics)
    for name, member in trt.EngineInvalidityDiagnostics.__members__.items():
        if rest & int(member):
            found.append(_DIAGNOSES.get(name, f"is invalid here ({name})").format(version=version))
            rest &= ~int(member)
    if rest:
        found.append(f"is invalid here (unknown diagnostics 0x{rest:x})")
    if not found:
        # Observed with tensorrt-rtx 1.7.1.116 on a machine without a usable CUDA GPU or driver:
        # every engine, intact or not, is INVALID with no diagnostics ("Error reading CUDA GPU
        # properties" in TensorRT's log).
        return ("is called invalid by TensorRT-RTX with no reason given, which is its answer "
                "when it cannot read the GPU's properties (no usable CUDA GPU or driver); check "
                f"nvidia-smi, or {OTHER_BACKEND}")
    return "; it also ".join(found)


def find_engine(weights: Path, flavour: str, trt, precision: str = "fp16",
                cc: tuple[int, int] | None = None, gpu: str = "this GPU") -> tuple[Path, dict]:
    """The engine folder in the cache to run the model at ``weights`` with: intact, built for
    this model, flavour and version (and, for TensorRT-RTX, targeting compute capability
    ``cc``); ``precision`` first, then the largest frame batch. None: :class:`RuntimeUnavailable`
    with why each folder was passed over and the command that builds one."""
    digest = model_digest(weights)
    usable, passed = [], {}
    for folder, manifest in cached_engines(weights):
        problem = manifest_problem(manifest, folder, model_sha256=digest, flavour=flavour,
                                   version=trt.__version__)
        if problem is None and cc is not None:
            problem = capability_problem(flavour, trt, cc, gpu,
                                         manifest.get("target_compute_capabilities", []))
        if problem:
            passed.setdefault(problem, []).append(folder.name)
        else:
            usable.append((folder, manifest))
    if not usable:
        from t2v_rt.generators.io import bundled_path

        model = "" if weights == bundled_path() else f" --model {weights}"
        folders = " or ".join(str(f / "engines") for f in model_folders(weights)) or "the cache"
        where = f"{flavour_label(flavour, trt.__version__)} engine of this model in {folders}"
        build = f"build one with 't2v-rt build-engine{model}', or {OTHER_BACKEND}"
        if not passed:
            raise RuntimeUnavailable(f"no {where}; {build}")
        found = "; ".join(f"{', '.join(names)}: {problem}" for problem, names in passed.items())
        fixed = all("build-engine" in p or "--backend" in p for p in passed)
        raise RuntimeUnavailable(f"no usable {where} ({found})" + ("" if fixed else f"; {build}"))
    def largest_batch(manifest: dict) -> int:
        try:
            return int(max(manifest["profiles"]["frames"]))
        except (KeyError, TypeError, ValueError):
            return 0

    usable.sort(key=lambda fm: (fm[1].get("precision") != precision, -largest_batch(fm[1])))
    return usable[0]


def engine_status(folder: Path, manifest: dict | None, weights: Path) -> str:
    """Whether an engine folder could run here, and if not, why: for ``doctor``."""
    try:
        flavour, trt = tensorrt_module()
    except RuntimeUnavailable as e:
        return f"not usable: {e}"
    problem = manifest_problem(manifest, folder, model_sha256=model_digest(weights),
                               flavour=flavour, version=trt.__version__)
    if problem:
        return f"invalid: {problem}"
    import torch

    if not torch.cuda.is_available():
        return "intact, built for this model and TensorRT; not runnable here: no CUDA GPU"
    cc, gpu = torch.cuda.get_device_capability(), torch.cuda.get_device_name()
    targets = manifest.get("target_compute_capabilities", [])
    problem = capability_problem(flavour, trt, cc, gpu, targets)
    if problem:
        return f"intact; not runnable on this GPU: {problem}"
    label = flavour_label(flavour, trt.__version__)
    return (f"intact; this GPU ({gpu}, compute capability {_cc(cc)}) is supported by {label}, "
            f"the engines target {', '.join(targets)}")


# --- TensorRT-RTX's runtime cache -------------------------------------------------------------
# Kernels TensorRT-RTX compiled for one GPU model, kept beside the engines (the backend names
# the file, one per GPU model) with a record of what it is: its digest, the GPU, its compute
# capability and the TensorRT-RTX version that wrote it. Both checks live here, torch-free, so
# that they are tested without a GPU; the backend loads only what read_runtime_cache returns.

def runtime_cache_identity(gpu: str, cc: tuple[int, int], version: str) -> dict:
    """What a runtime cache is valid for: the GPU model, its compute capability, the version
    of TensorRT-RTX."""
    return {"gpu": gpu, "compute_capability": f"{cc[0]}.{cc[1]}", "tensorrt_rtx": version}


def runtime_cache_record(name: str) -> str:
    """The record beside the runtime cache ``name``: ``<name>.json``."""
    return f"{name}.json"


def read_runtime_cache(folder: Path, name: str, identity: dict) -> tuple[bytes | None, str | None]:
    """The runtime cache ``name`` of the engine folder, when it may be loaded: a plain file
    directly inside ``folder`` (not a link), beside a record naming ``identity`` and the SHA-256
    of the very bytes returned. (bytes, None); (None, None) when there is none yet; (None,
    why) when one is there and must be ignored (the caller compiles anew and replaces it)."""
    if not is_bare_name(name):
        return None, "its name points outside the engine folder"
    if not os.path.lexists(folder / name):
        return None, None
    data = read_inside(folder, name)
    if data is None:
        return None, ("it is not a plain file inside the engine folder (a link, a folder or "
                      "unreadable)")
    raw = read_inside(folder, runtime_cache_record(name))
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return None, f"no readable record of its digest ({runtime_cache_record(name)}) beside it"
    for key, want in identity.items():
        if record.get(key) != want:
            return None, f"it was written for {key} {record.get(key)}, this is {want}"
    if record.get("sha256") != sha256_bytes(data):
        return None, "its digest differs from its record (changed or cut since it was written)"
    return data, None


def write_runtime_cache(folder: Path, name: str, blob: bytes, identity: dict) -> Path:
    """Store the runtime cache ``blob`` as ``name`` in the engine folder with its record, under
    the folder's lock, each file atomically. A reader that comes between the two writes finds
    a digest that does not match, and ignores the file."""
    if not is_bare_name(name):
        raise ValueError(f"runtime cache name {name!r} is not a plain file name")
    record = {**identity, "sha256": sha256_bytes(blob), "size": len(blob)}
    with locked(folder):
        atomic_write_bytes(folder / name, blob)
        atomic_write(folder / runtime_cache_record(name),
                     lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return folder / name
