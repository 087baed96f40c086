"""The encoder chain, the NVENC module and its probe, packet muxing, the NV12 conversion.

On the CPU (CI): the native module builds (nvcc, nvEncodeAPI.h) and imports; its probe says
why NVENC cannot run; ``auto`` falls back to x264 (raw for Y4M) and explicit GPU encoders are
one-line errors; packets already encoded (by PyAV's libx264 and MJPEG encoders here, standing
in for NVENC's and nvJPEG's output) mux into every container and decode to the right frame
count and rate; the NV12 arithmetic matches an independent NumPy reference and swscale. On a
GPU: the CUDA conversion kernel against the reference, and NVENC end to end where the GPU
has it.
"""

import io
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from t2v_rt.encode.encoders import ENCODERS, choose_encoder, encoder_problem, open_sink
from t2v_rt.encode.nv12 import rgb_to_nv12_reference
from t2v_rt.encode.nvenc import NvencEncoder, nvenc_status
from t2v_rt.encode.sink import PacketSink
from t2v_rt.errors import RuntimeUnavailable, UsageError
from t2v_rt.pipeline import StreamOptions, Video, run_stream

GPU = torch.cuda.is_available()
PROMPT = "a large red circle moving left and right slowly"


def native():
    try:
        from t2v_rt import _nvenc
    except ImportError as e:
        if os.environ.get("T2V_RT_REQUIRE_NATIVE") == "1":
            pytest.fail(f"the NVENC module must be built here (T2V_RT_REQUIRE_NATIVE=1): {e}")
        pytest.skip(f"the NVENC module is not built in this install: {e}")
    return _nvenc


# --- the native module and its probe ---------------------------------------------------------

def test_the_native_module_imports_without_a_driver():
    nv = native()
    assert nv.NVENC_API_VERSION >= (11, 0)
    assert {d.name for d in nv.DType.__members__.values()} == {"float32", "float16", "bfloat16"}


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has an NVIDIA driver")
def test_probe_says_why_without_a_driver():
    native()
    ok, why = nvenc_status()
    assert ok is False
    assert "libcuda.so.1" in why and "no NVIDIA driver" in why
    with pytest.raises(RuntimeUnavailable, match="no NVIDIA driver"):
        NvencEncoder((64, 64), Fraction(30))


# --- the chain --------------------------------------------------------------------------------

def test_auto_takes_x264_without_a_gpu_and_says_why(capsys):
    logged = []
    assert choose_encoder("auto", "mpegts", on_cuda=False, log=logged.append) == "x264"
    assert len(logged) == 1 and "nvenc: the frames are not on a CUDA GPU" in logged[0]
    assert "nvjpeg:" in logged[0]
    assert choose_encoder("auto", "y4m", on_cuda=False, log=logged.append) == "raw"


def test_explicit_encoders_that_cannot_run_are_clear_errors():
    with pytest.raises(RuntimeUnavailable, match="encoder 'nvenc' cannot run here: the frames are not on a CUDA GPU"):
        choose_encoder("nvenc", "mpegts", on_cuda=False)
    with pytest.raises(RuntimeUnavailable, match="encoder 'nvjpeg' cannot run here"):
        choose_encoder("nvjpeg", "nut", on_cuda=False)
    with pytest.raises(RuntimeUnavailable, match="raw frames go in Y4M only"):
        choose_encoder("raw", "mpegts", on_cuda=False)
    with pytest.raises(RuntimeUnavailable, match="Y4M carries raw frames only"):
        choose_encoder("x264", "y4m", on_cuda=False)
    with pytest.raises(UsageError, match="unknown encoder 'h265'"):
        choose_encoder("h265", "mpegts", on_cuda=False)


def test_hevc_is_nvenc_only():
    assert "x264 does not encode HEVC" in encoder_problem("x264", "mpegts", on_cuda=False, codec="hevc")
    with pytest.raises(RuntimeUnavailable, match="no encoder can write this here"):
        choose_encoder("auto", "mpegts", on_cuda=False, codec="hevc")


def test_mjpeg_needs_nut_or_matroska():
    assert "MJPEG goes in NUT or Matroska" in encoder_problem("nvjpeg", "mpegts", on_cuda=True)


def test_cli_explicit_gpu_encoder_is_one_line_exit_2(tmp_path):
    out = tmp_path / "clip.mp4"
    p = subprocess.run([sys.executable, "-m", "t2v_rt", "generate", PROMPT, "--encoder", "nvenc",
                        "--backend", "torch", "-o", str(out)], check=False, capture_output=True, timeout=120)
    if GPU:
        pytest.skip("a GPU machine: nvenc may run here")
    assert p.returncode == 2
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("t2v-rt: error: encoder 'nvenc' cannot run here")
    assert not out.exists()


# --- muxing already-encoded packets -------------------------------------------------------------

def encoded_packets(codec: str, n: int, size: int = 64) -> list[tuple[bytes, bool]]:
    """``n`` frames of moving noise encoded by PyAV (libx264 Annex B with SPS/PPS at every
    keyframe, as NVENC is set up; or MJPEG), as (bytes, keyframe)."""
    cc = av.CodecContext.create("libx264" if codec == "h264" else "mjpeg", "w")
    cc.width = cc.height = size
    cc.pix_fmt = "yuv420p" if codec == "h264" else "yuvj420p"
    cc.time_base = Fraction(1, 30)
    if codec == "h264":
        cc.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5",
                      "x264-params": "repeat-headers=1:annexb=1"}
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=cc.pix_fmt)
        frame.pts = i
        out += [(bytes(p), p.is_keyframe) for p in cc.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in cc.encode(None)]
    return out


@pytest.mark.parametrize("codec,fmt", [("h264", "mpegts"), ("h264", "nut"), ("h264", "matroska"),
                                       ("h264", "mp4"), ("mjpeg", "nut"), ("mjpeg", "matroska")])
@pytest.mark.parametrize("fps", [Fraction(30), Fraction(30000, 1001)], ids=["30", "29.97"])
def test_packets_mux_without_reencoding(codec, fmt, fps, tmp_path):
    packets = encoded_packets(codec, 12)
    assert len(packets) == 12
    path = tmp_path / f"clip.{fmt}"            # a file: MP4's faststart moves the index
    sink = PacketSink(path, fmt, fps, 64, codec)
    for data, key in packets:
        sink.mux(data, key)
    sink.close()
    with av.open(str(path), format=fmt) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == 12
    assert stream.codec_context.name == codec
    times = [f.time for f in frames]                  # one frame period apart, from the start
    assert abs((times[-1] - times[0]) / 11 - 1 / float(fps)) < 1e-3
    assert frames[0].width == 64


# --- the NV12 conversion --------------------------------------------------------------------------

def nv12_numpy(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """An independent float64 NumPy implementation: bilinear (half-pixel centres) per axis,
    then the BT.709 limited-range matrix, chroma of each 2 x 2 block's mean colour."""
    def axis(n_in, n_out):
        s = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(s).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), s - i0

    y0, y1, ty = axis(frames.shape[2], height)
    x0, x1, tx = axis(frames.shape[3], width)
    rows = frames[:, :, y0] * (1 - ty)[:, None] + frames[:, :, y1] * ty[:, None]
    img = rows[..., x0] * (1 - tx) + rows[..., x1] * tx
    rgb = np.clip((img + 1) / 2, 0, 1)
    kr, kb = 0.2126, 0.0722
    m = np.array([[kr, 1 - kr - kb, kb]])
    luma = np.einsum("ck,nkhw->nchw", m, rgb)[:, 0]
    y = np.clip(np.floor(16 + 219 * luma + 0.5), 0, 255)
    n = len(frames)
    mean = rgb.reshape(n, 3, height // 2, 2, width // 2, 2).mean(axis=(3, 5))
    lm = np.einsum("ck,nkhw->nchw", m, mean)[:, 0]
    cb = np.clip(np.floor(128 + 224 * 0.5 * (mean[:, 2] - lm) / (1 - kb) + 0.5), 0, 255)
    cr = np.clip(np.floor(128 + 224 * 0.5 * (mean[:, 0] - lm) / (1 - kr) + 0.5), 0, 255)
    uv = np.stack([cb, cr], axis=-1).reshape(n, height // 2, width)
    return np.concatenate([y, uv], axis=1).astype(np.uint8)


@pytest.mark.parametrize("shape,out", [((2, 3, 64, 64), (256, 256)), ((1, 3, 17, 30), (40, 62)),
                                       ((3, 3, 32, 32), (32, 32))])
def test_nv12_reference_matches_numpy(shape, out):
    frames = torch.rand(shape) * 2.2 - 1.1            # a little outside [-1, 1]: clamped
    got = rgb_to_nv12_reference(frames, *out).numpy()
    want = nv12_numpy(frames.double().numpy(), *out)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_nv12_reference_matches_swscale_bt709():
    """Against FFmpeg's own BT.709 limited-range conversion of the same (already uint8, not
    resized) picture: the two round differently and site chroma differently, so a smooth
    picture agrees to within a couple of levels."""
    h = w = 64
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    frames = torch.stack([xx, yy, (xx + yy) / 2])[None]
    rgb8 = ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    ours = rgb_to_nv12_reference(rgb8.float() / 127.5 - 1, h, w)[0].numpy()
    frame = av.VideoFrame.from_ndarray(rgb8[0].permute(1, 2, 0).numpy(), format="rgb24")
    theirs = frame.reformat(format="nv12", dst_colorspace="ITU709", dst_color_range="MPEG").to_ndarray()
    assert np.abs(ours[:h].astype(int) - theirs[:h].astype(int)).max() <= 2          # Y
    assert np.abs(ours[h:].astype(int) - theirs[h:].astype(int)).max() <= 3          # UV


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="the CUDA conversion kernel needs a GPU (its arithmetic is "
                                    "checked on the CPU through the reference above)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nv12_cuda_kernel_matches_reference(dtype):
    from t2v_rt.encode.nv12 import rgb_to_nv12_cuda

    native()
    frames = (torch.rand(4, 3, 64, 64, device="cuda") * 2 - 1).to(dtype)
    for size in ((256, 256), (64, 64), (90, 160)):
        got = rgb_to_nv12_cuda(frames, *size).cpu()
        want = rgb_to_nv12_reference(frames.float().cpu(), *size)
        assert (got.int() - want.int()).abs().max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not (GPU and nvenc_status()[0]), reason="NVENC end to end needs a GPU with NVENC")
def test_nvenc_end_to_end():
    sink = open_sink("nvenc", buf := io.BytesIO(), "mpegts", Fraction(30), 128, on_cuda=True)
    for _ in range(3):
        sink.write(torch.rand(5, 3, 64, 64, device="cuda") * 2 - 1)
    sink.close()
    buf.seek(0)
    with av.open(buf) as c:
        assert sum(1 for _ in c.decode(video=0)) == 15


# --- the overlapped pipeline (tensor-taking sinks) -------------------------------------------------

class Collect:
    """A sink that takes tensors (as the GPU encoders do) and keeps them."""

    takes = "tensor"

    def __init__(self, fail_at=None):
        self.frames, self.fail_at = [], fail_at

    def write(self, frames):
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise OSError("reader went away")
        self.frames.append(frames.clone())


@pytest.fixture(scope="module")
def video():
    from t2v_rt.backends.torch_backend import TorchBackend

    return Video(TorchBackend(), PROMPT, seed=3)


def test_overlapped_pipeline_writes_every_frame_in_order(video):
    sink = Collect()
    n = run_stream(video, sink, StreamOptions(frames=21, realtime=False, batch=8))
    assert n == 21 and len(sink.frames) == 21
    got = torch.cat(sink.frames)
    want = video.frames_at(torch.arange(21, dtype=torch.float64) / 30)
    torch.testing.assert_close(got, want)


def test_overlapped_pipeline_stops_and_reports_failures(video):
    calls = []
    n = run_stream(video, Collect(), StreamOptions(frames=None, realtime=False, batch=4),
                   stop=lambda: calls.append(1) or len(calls) > 10)
    assert n == 10
    with pytest.raises(OSError, match="reader went away"):
        run_stream(video, Collect(fail_at=5), StreamOptions(frames=30, realtime=False, batch=4))


def test_every_encoder_is_in_the_chain():
    assert ENCODERS == ("nvenc", "nvjpeg", "x264", "raw")
