"""The encoder chain: ``--encoder auto|nvenc|nvjpeg|x264|raw``, one small interface.

Each encoder is a sink: ``write(frames)``, ``close()``, ``describe()``; ``takes`` says what
``write`` gets: ``"rgb"`` (host uint8 [N, R, R, 3], the backend's :meth:`display`) or
``"tensor"`` (the backend's float frames [N, 3, R, R] where they are, on the GPU: the GPU
encoders, whose host side sees compressed bytes only).

- ``nvenc``: NVENC (``t2v_rt._nvenc``): NV12 conversion + resize on the GPU straight into the
  encoder's surfaces, H.264 (or HEVC), low latency, no B-frames, SPS/PPS at every IDR;
- ``nvjpeg``: GPU JPEG (``torchvision.io.encode_jpeg`` on CUDA tensors), MJPEG in NUT or
  Matroska, for GPUs without NVENC (H100, H200);
- ``x264``: libx264 through PyAV (swscale does the resize and colour conversion);
- ``raw``: uncompressed YUV 4:2:0 in Y4M.

``auto`` takes the first of these that works here for the chosen container and logs why it
skipped the others; an encoder named explicitly that cannot run is a clear error.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from t2v_rt.encode.sink import EncoderOptions, FdWriter, PacketSink, VideoSink
from t2v_rt.errors import RuntimeUnavailable, UsageError

ENCODERS = ("nvenc", "nvjpeg", "x264", "raw")
MJPEG_FORMATS = ("nut", "matroska")


def encoder_problem(name: str, fmt: str, on_cuda: bool, codec: str = "h264") -> str | None:
    """Why encoder ``name`` cannot write container ``fmt`` here (frames on a CUDA GPU or not)
    in ``codec`` (h264, or hevc: NVENC only), or None."""
    if codec != "h264" and name != "nvenc":
        return f"{name} does not encode {codec.upper()} (NVENC does; or --codec h264)"
    if name == "raw":
        return None if fmt == "y4m" else "raw frames go in Y4M only (--format y4m, or a .y4m file)"
    if fmt == "y4m":
        return "Y4M carries raw frames only (--encoder raw, or auto)"
    if name == "x264":
        import av

        return None if "libx264" in av.codecs_available else "this PyAV build has no libx264"
    if not on_cuda:
        return "the frames are not on a CUDA GPU (the backend runs on the CPU)"
    if name == "nvenc":
        import torch

        from t2v_rt.encode.nvenc import nvenc_status

        ok, why = nvenc_status(torch.cuda.current_device())
        return None if ok else why
    if name == "nvjpeg":
        if fmt not in MJPEG_FORMATS:
            return f"MJPEG goes in NUT or Matroska, not {fmt} (--format nut or matroska)"
        try:
            from torchvision.io import encode_jpeg  # noqa: F401
        except ImportError as e:
            return f"torchvision is not installed ({e}); pip install torchvision"
        return None
    return f"unknown encoder '{name}'"


def choose_encoder(name: str, fmt: str, on_cuda: bool, log=None, codec: str = "h264") -> str:
    """The encoder to use: ``name`` if it can run (else :class:`RuntimeUnavailable`), or for
    ``auto`` the first in :data:`ENCODERS` that can, logging why the others were skipped."""
    if name == "auto":
        reasons = []
        for candidate in ("raw",) if fmt == "y4m" else ENCODERS[:3]:
            why = encoder_problem(candidate, fmt, on_cuda, codec)
            if why is None:
                if reasons and log:
                    log(f"encoder auto: {candidate} (skipped {'; '.join(reasons)})")
                return candidate
            reasons.append(f"{candidate}: {why}")
        raise RuntimeUnavailable("no encoder can write this here: " + "; ".join(reasons))
    if name not in ENCODERS:
        raise UsageError(f"unknown encoder '{name}'; choose one of: auto, {', '.join(ENCODERS)}")
    why = encoder_problem(name, fmt, on_cuda, codec)
    if why:
        raise RuntimeUnavailable(f"encoder '{name}' cannot run here: {why}; use --encoder auto")
    return name


class X264Sink(VideoSink):
    """libx264 (or raw for Y4M) through PyAV; takes host uint8 RGB."""

    takes = "rgb"

    def __init__(self, target, fmt: str, fps: Fraction, size, gop: int | None = None, crf: int = 23,
                 bitrate: int = 0):
        super().__init__(target, fmt, fps, size, gop=gop, crf=crf, bitrate=bitrate)
        if self.stream.codec_context.name == "rawvideo":
            self._what = "raw YUV 4:2:0 (Y4M)"
        else:
            rate = f"{bitrate // 1000} kbit/s" if bitrate > 0 else f"CRF {crf}"
            self._what = (f"x264 ultrafast zerolatency, {rate}, "
                          f"GOP {gop or max(1, round(2 * float(fps)))}")

    def describe(self) -> str:
        return self._what


class NvencSink:
    """NVENC: CUDA frames -> packets -> the container (no re-encode)."""

    takes = "tensor"

    def __init__(self, target, fmt: str, fps: Fraction, size: tuple[int, int], options: EncoderOptions):
        from t2v_rt.encode.nvenc import NvencEncoder

        self.encoder = NvencEncoder(size, fps, options)
        try:
            self.packets = PacketSink(target, fmt, fps, size, options.codec)
        except Exception:
            self.encoder.close()
            raise

    def write(self, frames) -> None:   # torch.Tensor on the GPU
        for p in self.encoder.encode(frames):
            self.packets.mux(p.data, p.key)

    def close(self) -> None:
        try:
            for p in self.encoder.flush():
                self.packets.mux(p.data, p.key)
        finally:
            self.encoder.close()
            self.packets.close()

    def describe(self) -> str:
        return self.encoder.describe()


class NvjpegSink:
    """GPU JPEG: CUDA frames resized on the GPU, encoded by nvJPEG (torchvision), muxed as
    MJPEG (every frame a keyframe)."""

    takes = "tensor"

    def __init__(self, target, fmt: str, fps: Fraction, size: tuple[int, int], quality: int = 90):
        self.size, self.quality = size, quality
        self.packets = PacketSink(target, fmt, fps, size, "mjpeg")

    def write(self, frames) -> None:   # torch.Tensor on the GPU
        import torch
        from torchvision.io import encode_jpeg

        width, height = self.size
        x = frames.float()
        if x.shape[-2:] != (height, width):
            x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        x = ((x + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
        for jpeg in encode_jpeg(list(x), quality=self.quality):
            self.packets.mux(bytes(jpeg.cpu().numpy()), True)

    def close(self) -> None:
        self.packets.close()

    def describe(self) -> str:
        return f"nvjpeg (torchvision) MJPEG, quality {self.quality}"


def open_sink(name: str, target: str | Path | BinaryIO | FdWriter, fmt: str, fps: Fraction,
              size: int | tuple[int, int], options: EncoderOptions | None = None,
              on_cuda: bool = False, log=None):
    """The sink of encoder ``name`` (or ``auto``'s choice) writing container ``fmt``."""
    size = (size, size) if isinstance(size, int) else size
    options = options or EncoderOptions()
    chosen = choose_encoder(name, fmt, on_cuda, log, options.codec)
    if chosen == "nvenc":
        return NvencSink(target, fmt, fps, size, options)
    if chosen == "nvjpeg":
        return NvjpegSink(target, fmt, fps, size)
    return X264Sink(target, fmt, fps, size, gop=options.gop, crf=options.quality, bitrate=options.bitrate)
