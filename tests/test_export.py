"""ONNX export: checked graphs for both precisions, ONNX Runtime parity with PyTorch on fresh
random inputs, the manifest and its validation, the onnxruntime backend against torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2v_rt.compile import export as ex
from t2v_rt.compile.cache import model_digest
from t2v_rt.generators.io import bundled_path, load_generator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both precisions of the bundled model, exported once for this module."""
    out = tmp_path_factory.mktemp("onnx")
    manifest = ex.export_to_folder(bundled_path(), out, ex.PRECISIONS)
    return out, json.loads(manifest.read_text())


def test_export_writes_checked_graphs_of_both_precisions(exported):
    import onnx

    out, manifest = exported
    assert manifest["model_sha256"] == model_digest(bundled_path())
    assert manifest["opset"] == ex.OPSET >= 17
    got = {(e["graph"], e["precision"]): e for e in manifest["graphs"]}
    assert set(got) == {("style", "fp32"), ("frames", "fp32"), ("frames", "fp16")}
    for (graph, precision), e in got.items():
        path = out / e["path"]
        assert ex.file_sha256(path) == e["sha256"]
        assert e["rel_error"] <= ex.TOLERANCE[precision] == e["tolerance"]
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        # the batch dimension is dynamic on every input and output
        for v in (*model.graph.input, *model.graph.output):
            assert v.type.tensor_type.shape.dim[0].dim_param, (path.name, v.name)
        if graph == "frames":
            types = {init.data_type for init in model.graph.initializer if len(init.dims) == 4}
            want = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
            assert types == {want}, (path.name, types)   # the precision lives in the graph


@pytest.mark.parametrize("precision", ex.PRECISIONS)
def test_onnxruntime_matches_pytorch_on_fresh_inputs(exported, precision):
    out, _ = exported
    g = load_generator()
    seed = int.from_bytes(os.urandom(4), "little")
    x = ex.random_inputs(g, 7, 11, seed)
    tokens, z, basis = x["tokens"], x["z"], x["features"]
    with torch.no_grad():
        w = g.style(tokens, z)
        w_frames = w[torch.randint(0, 7, (11,))]
        want = g.synthesize(w_frames, basis)
    style = ex.ort_session(ex.graph_path(out, "style", "fp32"))
    frames = ex.ort_session(ex.graph_path(out, precision=precision, graph="frames"))
    w_ort = torch.from_numpy(style.run(None, {"tokens": tokens.numpy(), "z": z.numpy()})[0])
    assert ex.relative_error(w_ort, w) <= ex.TOLERANCE["fp32"], seed
    got = torch.from_numpy(frames.run(None, {"w": w_frames.numpy(), "features": basis.numpy()})[0])
    assert got.shape == want.shape == (11, 3, 64, 64)
    assert ex.relative_error(got, want) <= ex.TOLERANCE[precision], seed


def test_a_failing_comparison_stops_the_export_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setitem(ex.TOLERANCE, "fp32", 0.0)
    with pytest.raises(ex.ExportMismatch, match=r"differs from PyTorch by .* relative"):
        ex.export_model(load_generator(), tmp_path, ("fp32",), check_seed=1)
    assert list(tmp_path.iterdir()) == []          # nothing half-written is kept


def test_cached_exports_are_only_those_of_this_model(exported, tmp_path):
    import shutil

    src, _ = exported
    folder = tmp_path / "cache"
    shutil.copytree(src, folder)
    digest = model_digest(bundled_path())
    assert len(ex.cached_exports(folder, digest)) == 3
    assert ex.cached_exports(folder, "0" * 64) == {}                 # another model
    path = ex.graph_path(folder, "frames", "fp16")
    path.write_bytes(path.read_bytes()[:1000])                       # truncated
    assert set(ex.cached_exports(folder, digest)) == {("style", "fp32"), ("frames", "fp32")}
    (folder / ex.MANIFEST).write_text("{not json")
    assert ex.cached_exports(folder, digest) == {}


def test_onnxruntime_backend_gives_the_torch_backends_frames():
    from t2v_rt.backends import create_backend
    from t2v_rt.pipeline import Video

    t = torch.rand(6, dtype=torch.float64) * 700
    prompts = ("a large orange triangle moving diagonally slowly on a white background",
               "a ball", "a tiny cyan box staying still over a gray background")
    torch_be = create_backend("torch")
    for precision, tol in (("fp32", 1e-4), ("fp16", 1e-2)):
        ort_be = create_backend("onnxruntime", precision=precision)
        for i, prompt in enumerate(prompts):
            want = Video(torch_be, prompt, i).frames_at(t)
            got = Video(ort_be, prompt, i).frames_at(t)
            assert ex.relative_error(got, want) <= tol, (precision, prompt)


def test_auto_picks_onnxruntime_on_a_cpu():
    from t2v_rt.backends import auto_choice

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: auto picks torch there")
    assert auto_choice() == ("onnxruntime", [])


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "t2v_rt", *args], capture_output=True,
                          timeout=300, env={**os.environ, **(env or {})}, check=False)


def test_cli_export_onnx_keeps_valid_graphs(exported, tmp_path):
    """export-onnx into a folder that holds valid graphs exports nothing again (the cache
    never re-exports a valid entry); the manifest still lists them."""
    import shutil

    shutil.copytree(exported[0], tmp_path / "x")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "x").glob("*.onnx")}
    proc = _cli("export-onnx", "--precision", "all", "--out", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr.decode()
    manifest = Path(proc.stdout.decode().strip())
    assert manifest == tmp_path / "x" / ex.MANIFEST and manifest.is_file()
    assert b"kept the graphs already valid" in proc.stderr and b"relative error" not in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "x").glob("*.onnx")} == before
    assert len(json.loads(manifest.read_text())["graphs"]) == 3
    (tmp_path / "file").write_text("")
    proc = _cli("export-onnx", "--out", str(tmp_path / "file"))
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1
    assert b"is a file" in proc.stderr


def test_stream_onnxruntime_matches_stream_torch(tmp_path):
    """Raw Y4M from both backends: the same 8-bit frames, give or take a rounding step."""
    import numpy as np

    from tests.test_cli import decode

    prompt = "a small magenta circle standing still on a gray background"
    videos = {}
    for backend in ("torch", "onnxruntime"):
        proc = _cli("stream", prompt, "--backend", backend, "--frames", "8", "--no-realtime",
                    "--format", "y4m", "--size", "64")
        assert proc.returncode == 0, proc.stderr.decode()
        videos[backend] = np.stack(decode(proc.stdout, "yuv4mpegpipe")[0]).astype(int)
    diff = np.abs(videos["torch"] - videos["onnxruntime"])
    assert videos["torch"].shape == (8, 64, 64, 3) and diff.max() <= 2, diff.max()
