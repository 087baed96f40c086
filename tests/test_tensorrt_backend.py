"""The tensorrt backend on a machine without a GPU: backend choice, and every refusal as one
clear line, from real files (engines built here by TensorRT-RTX, then damaged or moved) and
TensorRT-RTX's real answers (its enums, ``Runtime.get_engine_validity``). No mock of TensorRT.

What needs a GPU (deserialising, enqueueing, CUDA graphs, the runtime cache) is not run here.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2v_rt.backends import auto_choice, auto_order, create_backend, probe
from t2v_rt.backends.tensorrt_backend import (
    TensorRTBackend,
    batched,
    deserialize_engine,
    runtime_cache_name,
    trt_logger,
)
from t2v_rt.compile import engine as en
from t2v_rt.compile.cache import model_digest, model_folder
from t2v_rt.errors import RuntimeUnavailable
from t2v_rt.generators.io import bundled_path

trt = pytest.importorskip("tensorrt_rtx", reason="the test extra installs tensorrt-rtx-cu13")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answers")
PROMPT = "a large red circle moving left and right slowly"


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """fp16 engines of the bundled model, built here by TensorRT-RTX into a cache of this
    module's own (the other tests' engines stay out of its folder listing)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2V_RT_CACHE", str(root))
        folder = en.build_engines(bundled_path(), "fp16", en.Profile(1, 2, 8))
    return root, folder


@pytest.fixture
def cache(engines, tmp_path, monkeypatch):
    """A copy of the module's cache, this test's to damage."""
    root = tmp_path / "cache"
    shutil.copytree(engines[0], root)
    monkeypatch.setenv("T2V_RT_CACHE", str(root))
    return root


def another_model(folder: Path) -> Path:
    """The bundled weights with a config that differs by one trailing newline: another digest,
    so another cache folder, and the same generator."""
    weights = folder / "other.safetensors"
    shutil.copyfile(bundled_path(), weights)
    weights.with_suffix(".json").write_text(bundled_path().with_suffix(".json").read_text() + "\n")
    assert model_digest(weights) != model_digest(bundled_path())
    return weights


# --- choosing a backend without a GPU --------------------------------------------------------

@cpu_only
def test_auto_keeps_to_the_cpu_backends_and_picks_onnxruntime():
    assert auto_order() == ("onnxruntime", "torch")
    assert auto_choice() == ("onnxruntime", [])
    logged = []
    backend = create_backend("auto", precision="fp16", log=logged.append)
    assert backend.name == "onnxruntime"
    assert not [m for m in logged if "skipped" in m]


@cpu_only
def test_explicit_tensorrt_without_a_gpu_says_so():
    ok, why = probe("tensorrt")
    assert not ok and why.startswith("no CUDA GPU") and "--backend auto" in why
    with pytest.raises(RuntimeUnavailable, match=r"backend 'tensorrt' cannot run here: no CUDA GPU"):
        create_backend("tensorrt")
    with pytest.raises(RuntimeUnavailable, match="no CUDA GPU"):
        TensorRTBackend()


@cpu_only
@pytest.mark.parametrize("command", ["stream", "generate"])
def test_cli_with_tensorrt_and_no_gpu_is_one_line_and_exit_2(command, tmp_path):
    out = tmp_path / "clip.mp4"
    args = [PROMPT, "--backend", "tensorrt"] + (["-o", str(out)] if command == "generate" else [])
    proc = subprocess.run([sys.executable, "-m", "t2v_rt", command, *args], capture_output=True,
                          timeout=120, check=False)
    err = proc.stderr.decode()
    lines = [x for x in err.splitlines() if x.strip()]
    assert proc.returncode == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "backend 'tensorrt' cannot run here: no CUDA GPU" in lines[0]
    assert proc.stdout == b"" and not out.exists()


@cpu_only
def test_doctor_lists_the_tensorrt_backend_with_its_reason():
    from t2v_rt.doctor import report

    text = report()
    assert "  tensorrt    no: no CUDA GPU" in text
    assert "auto backend: onnxruntime" in text


# --- which engine folder, and why not -----------------------------------------------------------
# find_engine is what the backend calls once CUDA and the GPU have passed; here it gets the
# compute capability of an RTX 4090 (8.9) as an argument, the files are real.

@pytest.mark.slow
def test_a_valid_engine_folder_is_found(cache, engines):
    folder, manifest = en.find_engine(bundled_path(), "tensorrt_rtx", trt, "fp16", (8, 9))
    assert folder.name == engines[1].name and manifest["precision"] == "fp16"
    # no fp32 engine: the fp16 one serves a request for fp32 (the backend says so in its log)
    assert en.find_engine(bundled_path(), "tensorrt_rtx", trt, "fp32", (8, 9))[0] == folder


@pytest.mark.slow
def test_no_engine_in_the_cache_names_build_engine(cache, tmp_path):
    weights = another_model(tmp_path)
    with pytest.raises(RuntimeUnavailable) as e:
        en.find_engine(weights, "tensorrt_rtx", trt, "fp16", (8, 9))
    msg = str(e.value)
    assert f"no TensorRT-RTX 1.7 engine of this model in {model_folder(weights) / 'engines'}" in msg
    assert f"'t2v-rt build-engine --model {weights}'" in msg and "\n" not in msg


@pytest.mark.slow
def test_a_truncated_engine_file_is_a_clear_line(cache):
    folder = model_folder(bundled_path()) / "engines"
    engine = next(folder.iterdir()) / "frames.engine"
    engine.write_bytes(engine.read_bytes()[:100_000])
    with pytest.raises(RuntimeUnavailable, match=r"frames\.engine is corrupt or truncated .*"
                                                  r"rebuild with 't2v-rt build-engine --force'"):
        en.find_engine(bundled_path(), "tensorrt_rtx", trt, "fp16", (8, 9))


@pytest.mark.slow
def test_an_engine_of_another_model_is_a_clear_line(cache, engines, tmp_path):
    weights = another_model(tmp_path)
    moved = model_folder(weights) / "engines" / engines[1].name
    shutil.copytree(engines[1], moved)
    with pytest.raises(RuntimeUnavailable, match=r"built for another model .*rebuild with "
                                                  r"'t2v-rt build-engine'"):
        en.find_engine(weights, "tensorrt_rtx", trt, "fp16", (8, 9))


@pytest.mark.slow
def test_an_engine_of_another_tensorrt_version_is_a_clear_line(cache):
    manifest_path = next((model_folder(bundled_path()) / "engines").iterdir()) / en.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "version": "1.6.1.120"}))
    with pytest.raises(RuntimeUnavailable, match=r"built with tensorrt_rtx 1\.6\.1\.120, this "
                                                  r"machine has tensorrt_rtx 1\.7"):
        en.find_engine(bundled_path(), "tensorrt_rtx", trt, "fp16", (8, 9))


@pytest.mark.slow
def test_engines_for_other_compute_capabilities_are_passed_over(cache):
    # TensorRT-RTX builds for Ampere and later by default: a Turing GPU (7.5) is not a target
    with pytest.raises(RuntimeUnavailable, match=r"target compute capability 8\.0, .*not this "
                                                  r"GPU's 7\.5 \(NVIDIA GeForce RTX 2080 Ti\)"):
        en.find_engine(bundled_path(), "tensorrt_rtx", trt, "fp16", (7, 5),
                       "NVIDIA GeForce RTX 2080 Ti")


# --- TensorRT-RTX's validity answers --------------------------------------------------------------

@pytest.mark.slow
def test_validity_of_real_engine_bytes(engines):
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    blob = (engines[1] / "frames.engine").read_bytes()
    # garbage and a file cut inside the header: MALFORMED_ENGINE, on any machine
    for bad in (b"\0" * 64, blob[: runtime.engine_header_size // 2]):
        validity, diagnostics = runtime.get_engine_validity(bad)
        assert validity == trt.EngineValidity.INVALID
        assert "corrupt or truncated" in en.validity_problem(trt, validity, diagnostics)
    # The header is all it reads: a file cut after it answers as the whole file does (the
    # manifest's digests catch that, test above).
    whole = runtime.get_engine_validity(blob)
    assert runtime.get_engine_validity(blob[: len(blob) // 2]) == whole
    if not torch.cuda.is_available():
        # Observed: INVALID with no diagnostics, whatever the engine, without a usable GPU
        assert whole == (trt.EngineValidity.INVALID, 0)
        assert "cannot read the GPU's properties" in en.validity_problem(trt, *whole)


@pytest.mark.slow
def test_the_backends_engine_loader_refuses_with_one_line(engines, tmp_path):
    # deserialize_engine is the backend's loader, run here with TensorRT-RTX's real runtime on
    # real files: a cut engine is refused by its header before deserialisation is tried.
    logger = trt_logger(trt)
    runtime = trt.Runtime(logger)
    cut = tmp_path / "frames.engine"
    cut.write_bytes((engines[1] / "frames.engine").read_bytes()[:40])
    with pytest.raises(RuntimeUnavailable, match=r"frames\.engine is corrupt or truncated"):
        deserialize_engine(trt, "tensorrt_rtx", runtime, logger.errors, cut, print)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeUnavailable) as e:
            deserialize_engine(trt, "tensorrt_rtx", runtime, logger.errors,
                               engines[1] / "frames.engine", print)
        assert "cannot read the GPU's properties (no usable CUDA GPU or driver)" in str(e.value)
        assert "\n" not in str(e.value)


def test_every_diagnostic_has_its_own_line_and_fix():
    messages = {}
    for name, bit in trt.EngineInvalidityDiagnostics.__members__.items():
        msg = en.validity_problem(trt, trt.EngineValidity.INVALID, int(bit))
        assert msg and "\n" not in msg and name not in msg, (name, msg)
        assert any(fix in msg for fix in ("build-engine", "--backend", "nvidia-smi")), msg
        messages[name] = msg
    assert len(set(messages.values())) == len(messages)
    assert trt.__version__ in messages["VERSION_MISMATCH"]
    both = en.validity_problem(trt, trt.EngineValidity.INVALID,
                               int(trt.EngineInvalidityDiagnostics.VERSION_MISMATCH)
                               | int(trt.EngineInvalidityDiagnostics.UNSUPPORTED_CC))
    assert messages["VERSION_MISMATCH"] in both and messages["UNSUPPORTED_CC"] in both
    assert "unknown diagnostics 0x400" in en.validity_problem(trt, trt.EngineValidity.INVALID, 1 << 10)
    assert en.validity_problem(trt, trt.EngineValidity.VALID, 0) is None
    assert en.validity_problem(trt, trt.EngineValidity.SUBOPTIMAL, 0) is None


# --- which GPUs a flavour runs on ----------------------------------------------------------------

def test_supported_capabilities_come_from_the_enum():
    # the enum's values are the capabilities x 10 + y (SM89 = 89, SM120 = 120)
    want = sorted((int(v) // 10, int(v) % 10) for name, v in
                  trt.ComputeCapability.__members__.items() if name.startswith("SM"))
    assert en.supported_capabilities(trt) == want and (8, 9) in want


DEFAULT_TARGETS = ["default (8.0, 8.6, 8.9, 12.x)"]     # what build_engines records


@pytest.mark.parametrize("cc", sorted({(7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0),
                                       (12, 1), (3, 7)}))
def test_capability_problem(cc):
    caps = en.supported_capabilities(trt)
    gpu = f"GPU sm{cc[0]}{cc[1]}"
    problem = en.capability_problem("tensorrt_rtx", trt, cc, gpu)
    if cc in caps:
        assert problem is None
        built = en.capability_problem("tensorrt_rtx", trt, cc, gpu, DEFAULT_TARGETS)
        assert (built is None) == (cc >= (8, 0)), built      # Turing only when asked for
    else:
        assert problem.startswith(f"TensorRT-RTX 1.7 does not support compute capability "
                                  f"{cc[0]}.{cc[1]} ({gpu}); it runs ")
        assert problem.endswith("use --backend auto, triton or torch")
    # the full TensorRT builds on, and for, the GPU it runs on
    assert en.capability_problem("tensorrt", trt, cc, gpu, ["current GPU"]) is None


def test_the_h100_is_named_with_its_fix():
    if (9, 0) in en.supported_capabilities(trt):
        pytest.skip("this TensorRT-RTX supports compute capability 9.0")
    msg = en.capability_problem("tensorrt_rtx", trt, (9, 0), "NVIDIA H100 80GB HBM3")
    assert "does not support compute capability 9.0 (NVIDIA H100 80GB HBM3)" in msg


def test_engine_targets():
    assert en.engine_targets(trt, ["ComputeCapability.SM89", "ComputeCapability.SM120"]) == \
        [(8, 9), (12, 0)]
    assert (7, 5) not in en.engine_targets(trt, DEFAULT_TARGETS)
    assert en.engine_targets(trt, ["current GPU"]) is None


# --- the host-side pieces of running ----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 16, 17, 50])
def test_batches_are_split_above_max_and_padded_below_min(n):
    lo, hi = 3, 8
    x = torch.randn(n, 5)
    y = torch.randint(0, 100, (n, 2))
    seen = []

    def run(feeds):
        seen.append(len(feeds["x"]))
        assert len(feeds["x"]) == len(feeds["y"])
        return feeds["x"] * 2 + feeds["y"][:, :1]

    out = batched({"x": x, "y": y}, lo, hi, run)
    torch.testing.assert_close(out, x * 2 + y[:, :1])
    assert all(lo <= b <= hi for b in seen) and len(seen) == -(-n // hi)


def test_runtime_cache_file_is_named_by_gpu_model():
    assert runtime_cache_name("NVIDIA GeForce RTX 4090", (8, 9)) == \
        "runtime-cache-nvidia-geforce-rtx-4090-sm89.bin"
    assert runtime_cache_name("NVIDIA RTX PRO 6000 Blackwell", (12, 0)) == \
        "runtime-cache-nvidia-rtx-pro-6000-blackwell-sm120.bin"
