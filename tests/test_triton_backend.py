"""The ``triton`` backend (the generator's body on the fused kernels) against ``torch``.

Without a GPU the kernels run under Triton's interpreter (conftest sets TRITON_INTERPRET=1),
in fp32; on a GPU the same tests run the compiled kernels in the backend's default fp16 with
fp16's tolerance, and the CUDA-graph replay.
"""

import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from t2v_rt.backends.base import to_display
from t2v_rt.backends.torch_backend import TorchBackend
from t2v_rt.backends.triton_backend import TritonBackend, fusion_summary, unavailable_reason
from t2v_rt.errors import RuntimeUnavailable
from t2v_rt.pipeline import Video

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a large red circle moving left and right slowly", "a small blue triangle on a white background",
           "a green square moving in a circle quickly"]
GPU = torch.cuda.is_available()
ATOL = 2e-2 if GPU else 1e-4          # fp16 body on the GPU, fp32 under the interpreter


@pytest.fixture(scope="module")
def logged():
    return []


@pytest.fixture(scope="module")
def backends(logged):
    return TritonBackend(log=logged.append), TorchBackend()


def test_every_block_of_the_bundled_model_is_fused_and_checked_at_load(backends, logged):
    report = backends[0].report
    assert (report.fused, report.found) == (4, 5)
    assert set(report.patterns()) == {"upsample3x3+bias+coord+film+leaky_relu"}
    (left,) = [b for b in report.blocks if not b.fused]
    assert left.name == "to_alpha" and "no x2 upsample" in left.reason
    assert any(line.startswith("triton: fused 4 of 5 convolutions") for line in logged)
    assert any("matches eager PyTorch" in line and "seed" in line for line in logged)


def test_frames_match_the_torch_backend(backends):
    triton_be, torch_be = backends
    t = torch.tensor([0.37, 600.3], dtype=torch.float64)    # a batch of 2, any times
    for i, prompt in enumerate(PROMPTS[:2]):
        got = Video(triton_be, prompt, seed=i).frames_at(t)
        want = Video(torch_be, prompt, seed=i).frames_at(t)
        assert got.shape == want.shape == (2, 3, 64, 64) and got.dtype == torch.float32
        torch.testing.assert_close(got.cpu(), want.cpu(), atol=ATOL, rtol=0)


def test_display_frames_are_the_frames_as_uint8(backends):
    triton_be, torch_be = backends
    t = torch.tensor([0.1], dtype=torch.float64)
    got = Video(triton_be, PROMPTS[0], seed=5).display_at(t)
    want = to_display(Video(torch_be, PROMPTS[0], seed=5).frames_at(t))
    assert got.dtype == np.uint8 and got.shape == want.shape == (1, 64, 64, 3)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= (3 if GPU else 1)


def test_batch_of_one_then_another_size(backends):
    """The first frame alone, then a batch (the stream's pattern): each batch size gets its
    own CUDA graph on a GPU; the frames do not depend on how they were batched."""
    triton_be, _ = backends
    video = Video(triton_be, PROMPTS[1], seed=2)
    t = torch.tensor([0.0, 1 / 30], dtype=torch.float64)
    one = torch.cat([video.frames_at(t[k : k + 1]) for k in range(2)])
    together = video.frames_at(t)
    torch.testing.assert_close(one, together, atol=1e-5, rtol=0)


def test_describe_says_where_it_runs_and_what_is_fused(backends):
    text = backends[0].describe()
    assert text.startswith("triton (") and "4 of 5 convs fused" in text
    assert ("CUDA graphs" in text) if GPU else ("interpreter" in text)


def test_fusion_summary_for_doctor_is_one_line():
    line = fusion_summary(None)
    assert "\n" not in line
    assert line.startswith("fused 4 of 5 convolutions (4x upsample3x3+bias+coord+film+leaky_relu)")
    assert "to_alpha" in line


@pytest.mark.skipif(GPU, reason="checks the CPU refusal; this machine has a GPU")
def test_without_gpu_or_interpreter_it_says_so(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "needs a CUDA GPU" in unavailable_reason()
    with pytest.raises(RuntimeUnavailable, match="backend 'triton' needs a CUDA GPU"):
        TritonBackend()


def test_generate_on_the_triton_backend(tmp_path):
    """``generate --backend triton`` end to end (fusion, the check at load, frames into the
    encoder)."""
    out = tmp_path / "clip.mp4"
    p = subprocess.run([sys.executable, "-m", "t2v_rt", "generate", PROMPTS[0], "--backend", "triton",
                        "--seconds", "0.3", "--fps", "10", "--size", "64", "-o", str(out)],
                       check=False, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    assert b"triton (" in p.stderr
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


@pytest.mark.skipif(GPU, reason="checks the CPU refusal; this machine has a GPU")
def test_explicit_triton_without_gpu_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "clip.mp4"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    p = subprocess.run([sys.executable, "-m", "t2v_rt", "generate", PROMPTS[0], "--backend", "triton",
                        "-o", str(out)], check=False, capture_output=True, timeout=120, env=env)
    assert p.returncode == 2
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "backend 'triton' cannot run here: needs a CUDA GPU" in lines[0]
    assert not out.exists()
