"""TensorRT engines: a real TensorRT-RTX build of the bundled model on this CPU-only machine
(engines and manifest on disk, reuse, --force), the manifest's checks, clear failures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2v_rt.compile import engine as en
from t2v_rt.compile.cache import model_digest
from t2v_rt.errors import RuntimeUnavailable, UsageError
from t2v_rt.generators.io import bundled_path

pytestmark = pytest.mark.slow
trt = pytest.importorskip("tensorrt_rtx", reason="the test extra installs tensorrt-rtx-cu13")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "t2v_rt", *args], capture_output=True,
                          timeout=600, check=False, env=os.environ.copy())


@pytest.fixture(scope="module")
def built():
    proc = cli("build-engine", "--batch", "1:4:16")
    assert proc.returncode == 0, proc.stderr.decode()
    folder = Path(proc.stdout.decode().strip())
    return folder, proc.stderr.decode()


def test_build_writes_engines_and_a_manifest(built):
    folder, log = built
    assert "building the frames engine with tensorrt_rtx" in log and "Building engine" in log
    m = json.loads((folder / en.MANIFEST).read_text())
    assert m["model_sha256"] == model_digest(bundled_path())
    assert (m["flavour"], m["version"]) == ("tensorrt_rtx", trt.__version__)
    assert m["precision"] == "fp16" and m["profile"] == "1:4:16"
    assert m["profiles"]["frames"] == [1, 4, 16] and m["target_compute_capabilities"]
    assert set(m["onnx_sha256"]) == set(m["engine_sha256"]) == {"style", "frames"}
    for name, digest in m["engine_sha256"].items():
        path = folder / f"{name}.engine"
        assert path.stat().st_size > 100_000 and en.file_sha256(path) == digest
    # TensorRT's own reader: a malformed engine is reported as such; ours is not
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    head = (folder / "frames.engine").read_bytes()[: runtime.engine_header_size]
    assert not runtime.get_engine_validity(head)[1] & int(trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE)
    assert runtime.get_engine_validity(b"\0" * 64)[1] & int(trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE)


def test_second_build_reuses_and_force_rebuilds(built):
    folder, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    proc = cli("build-engine", "--batch", "1:4:16")
    assert proc.returncode == 0 and b"reusing the engines" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    proc = cli("build-engine", "--batch", "1:4:16", "--force")
    assert proc.returncode == 0 and b"built the frames engine" in proc.stderr
    assert (folder / "frames.engine").stat().st_mtime_ns > before["frames.engine"]


def test_manifest_rejects_another_model_version_or_a_truncated_engine(built, tmp_path):
    import shutil

    folder = tmp_path / "engines"
    shutil.copytree(built[0], folder)
    m = json.loads((folder / en.MANIFEST).read_text())
    ok = {"model_sha256": model_digest(bundled_path()), "flavour": "tensorrt_rtx",
          "version": trt.__version__}
    assert en.manifest_problem(m, folder, **ok) is None
    assert "another model" in en.manifest_problem(m, folder, **{**ok, "model_sha256": "0" * 64})
    assert "rebuild" in en.manifest_problem(m, folder, **{**ok, "version": "0.0.1"})
    assert "rebuild" in en.manifest_problem({**m, "version": "0.0.1"}, folder, **ok)
    engine = folder / "frames.engine"
    engine.write_bytes(engine.read_bytes()[:5000])
    assert "corrupt or truncated" in en.manifest_problem(m, folder, **ok)
    assert "no readable manifest" in en.manifest_problem(None, folder, **ok)


def test_doctor_lists_the_engines_and_says_why_they_cannot_run_here(built):
    import torch

    proc = cli("doctor")
    out = proc.stdout.decode()
    assert proc.returncode == 0 and built[0].name in out
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in out


def test_no_tensorrt_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(en, "FLAVOURS", ("t2v_rt_no_such_tensorrt",))
    with pytest.raises(RuntimeUnavailable, match="pip install tensorrt-rtx-cu13"):
        en.tensorrt_module()


@pytest.mark.parametrize("batch", ["1:2", "0:1:2", "4:2:8", "a:b:c"])
def test_bad_batch_profile_is_a_usage_error(batch):
    with pytest.raises(UsageError, match="--batch"):
        en.Profile.parse(batch)
    proc = cli("build-engine", "--batch", batch)
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1
