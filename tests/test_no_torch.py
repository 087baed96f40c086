"""The CPU runtime without the training framework (issue #15): with PyTorch, Triton, ONNX (the
exporter) and TensorRT hidden from the interpreter, stream, generate and doctor work on the
bundled model's shipped graphs (no export, no cache written), and every command that needs an
extra says which one, in one line, without a traceback. The bundled model's shipped graphs
are checked against the PyTorch model they were exported from."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2v_rt.generators.io import bundled_models
from test_cli import decode

HIDDEN = ("torch", "triton", "onnx", "onnxscript", "tensorrt_rtx", "torchvision", "tensorrt")
PROMPT = "a large red circle moving left and right slowly"


def hide_imports(names) -> str:
    """Python source that makes the packages ``names`` (a source expression of a set or
    tuple of top-level names) unimportable, as in an install without them: their imports
    raise ModuleNotFoundError and importlib.util.find_spec says None. It binds ``HIDDEN``."""
    return f"""
import importlib.util, sys
HIDDEN = set({names})
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, Hide())
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in HIDDEN else _find(name, package))
"""


# Run the CLI with those packages made unimportable (as in an install without the extras).
RUNNER = hide_imports(repr(HIDDEN)) + """
sys.argv = ["t2v-rt", *sys.argv[1:]]
from t2v_rt.cli import entry
entry()
"""


def run_without_torch(*args, cache: Path, timeout=120):
    env = {**os.environ, "T2V_RT_CACHE": str(cache)}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True,
                          timeout=timeout, env=env)


def test_stream_generate_and_doctor_need_no_torch(tmp_path):
    cache = tmp_path / "cache"
    proc = run_without_torch("stream", PROMPT, "--frames", "12", "--no-realtime", "--size", "64",
                             "--format", "nut", cache=cache)
    assert proc.returncode == 0, proc.stderr.decode()
    frames, _ = decode(proc.stdout, "nut")
    assert len(frames) == 12 and frames[0].std() > 0
    assert b"onnxruntime" in proc.stderr
    out = tmp_path / "clip.mp4"
    proc = run_without_torch("generate", "a blue square", "-o", str(out), "--seconds", "0.5",
                             cache=cache)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(decode(out)[0]) == 15
    proc = run_without_torch("doctor", cache=cache)
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    assert "torch       not installed" in text and "auto backend: onnxruntime" in text
    assert not cache.exists() or not any(cache.rglob("*.onnx"))   # shipped graphs: no export


@pytest.mark.parametrize("args,extra", [
    (("train", "--steps", "1"), "t2v-rt[torch]"),
    (("eval", "--samples", "1"), "t2v-rt[torch]"),
    (("export-onnx",), "t2v-rt[torch]"),
    (("init-model", "shapes", "-o", "{tmp}/m.safetensors"), "t2v-rt[torch]"),
    (("build-engine",), "t2v-rt[gpu]"),
    (("stream", PROMPT, "--backend", "torch"), "t2v-rt[torch]"),
    (("stream", PROMPT, "--backend", "triton"), "t2v-rt[gpu]"),
])
def test_commands_that_need_an_extra_say_which_in_one_line(tmp_path, args, extra):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_without_torch(*args, cache=tmp_path / "cache")
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert extra in lines[0], err
    assert proc.stdout == b""


def test_a_model_without_shipped_graphs_names_the_extra_for_its_one_export(tmp_path):
    """Another model exports on first use, which needs PyTorch: one line saying so."""
    from t2v_rt.generators.io import init_generator, save_generator

    save_generator(init_generator("stylegan-v", "tiny"), tmp_path / "sg.safetensors")
    proc = run_without_torch("stream", "a red ball", "--model", str(tmp_path / "sg.safetensors"),
                             "--frames", "2", cache=tmp_path / "cache")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "exporting this model to ONNX" in err and "t2v-rt[torch]" in err


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_the_shipped_graphs_are_the_bundled_model(name, request):
    """The graphs in t2v_rt/weights/NAME-onnx/ are valid for each bundled model's weights
    (manifest digests) and compute what the PyTorch model computes, on fresh random inputs
    (text inputs from the model's own front end: token ids, or MiniLM's embeddings of random
    prompts, which need its graph exported once)."""
    from t2v_rt.compile.cache import model_digest
    from t2v_rt.compile.export import TOLERANCE, random_inputs, relative_error
    from t2v_rt.compile.graphs import cached_exports, ort_session, shipped_folder
    from t2v_rt.generators.io import load_generator

    weights = bundled_models()[name]
    have = cached_exports(shipped_folder(weights), model_digest(weights))
    assert {("style", "fp32"), ("frames", "fp32")} <= set(have), (
        f"re-export with: t2v-rt export-onnx --model {name} --precision fp32 --force --out "
        f"t2v_rt/weights/{name}-onnx")
    g = load_generator(weights)
    if getattr(g.config, "text_encoder", None):
        request.getfixturevalue("encoder_exported")
    seed = int.from_bytes(os.urandom(4), "little")
    x = random_inputs(g, 5, 9, seed)
    with torch.no_grad():
        w = g.style(x["text"], x["z"])
        want = g.synthesize(x["w_frames"], x["features"])
    style = ort_session(have[("style", "fp32")])
    frames = ort_session(have[("frames", "fp32")])
    got_w = style.run(None, {g.config.text_input: x["text"].numpy(), "z": x["z"].numpy()})[0]
    got = frames.run(None, {"w": x["w_frames"].numpy(), "features": x["features"].numpy()})[0]
    assert relative_error(got_w, w) <= TOLERANCE["fp32"], seed
    assert relative_error(got, want) <= TOLERANCE["fp32"], seed


@pytest.mark.slow
def test_a_fresh_venv_without_torch_streams_generates_and_runs_doctor(tmp_path):
    """A real install, as the README's quick start makes it (no extras; the NVENC module left
    out to keep this test short): PyTorch is not installed, and the CLI streams, generates and
    reports from the shipped graphs. (bench/startup.py measures the same install.)"""
    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, cli = venv / "bin" / "python", str(venv / "bin" / "t2v-rt")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH",
                                                           "TRITON_INTERPRET")}
    env["T2V_RT_CACHE"] = str(tmp_path / "cache")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(root),
                          "--config-settings=cmake.define.T2V_RT_NATIVE=OFF"],
                         capture_output=True, timeout=900, env=env)
    assert pip.returncode == 0, pip.stderr.decode()[-2000:]
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None)"], capture_output=True, env=env)
    assert probe.stdout.strip() == b"True"          # the runtime install has no PyTorch
    proc = subprocess.run([cli, "stream", PROMPT, "--frames", "10", "--no-realtime"],
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(decode(proc.stdout, "matroska")[0]) == 10
    out = tmp_path / "clip.mkv"
    proc = subprocess.run([cli, "generate", "a blue square", "-o", str(out), "--seconds", "0.5"],
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(decode(out)[0]) == 15
    proc = subprocess.run([cli, "doctor"], capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0 and b"torch       not installed" in proc.stdout, proc.stderr
    proc = subprocess.run([cli, "train", "--steps", "1"], capture_output=True, timeout=120, env=env)
    assert proc.returncode == 2 and b"t2v-rt[torch]" in proc.stderr
