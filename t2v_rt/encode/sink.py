"""Encode uint8 RGB frames and mux them into a container on a file or a pipe (PyAV).

H.264 with libx264 (ultrafast, zero-latency: no B-frames, no look-ahead, one packet out per
frame in), or raw YUV 4:2:0 for Y4M. Every muxer flushes after each packet, so a frame
reaches the reader as soon as it is encoded (Matroska: with the next frame, when its
cluster closes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np


@dataclass(frozen=True)
class EncoderOptions:
    """What the encoders share: keyframe interval, rate control, codec."""

    gop: int | None = None       # frames between keyframes (default: 2 s)
    bitrate: int = 0             # bits/s; 0: constant quality
    quality: int = 23            # x264 CRF / NVENC constant quality (1..51, lower is better)
    codec: str = "h264"          # nvenc: h264 | hevc
    preset: int = 1              # nvenc: P1 (fastest) .. P7


@dataclass(frozen=True)
class Container:
    muxer: str
    codec: str
    options: dict[str, str] = field(default_factory=dict)


FORMATS: dict[str, Container] = {
    "mpegts": Container("mpegts", "libx264", {"flush_packets": "1"}),
    "nut": Container("nut", "libx264", {"flush_packets": "1"}),
    "matroska": Container("matroska", "libx264",
                          {"flush_packets": "1", "live": "1", "cluster_time_limit": "0"}),
    "y4m": Container("yuv4mpegpipe", "rawvideo", {"flush_packets": "1"}),
    "mp4": Container("mp4", "libx264", {"movflags": "+faststart"}),  # files only: needs seeking
}
# What each pre-encoded codec's stream declares (JPEG: full-range YUV 4:2:0).
PACKET_PIX_FMT = {"h264": "yuv420p", "hevc": "yuv420p", "mjpeg": "yuvj420p"}
EXTENSIONS = {".mp4": "mp4", ".mkv": "matroska", ".ts": "mpegts", ".y4m": "y4m"}


class FdWriter:
    """A minimal unbuffered writer on a file descriptor (stdout): PyAV calls ``write``."""

    def __init__(self, fd: int):
        self.fd = fd
        self.bytes_written = 0

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.bytes_written += n
        return len(data)


class VideoSink:
    """frames [N, h, w, 3] uint8 RGB -> scaled to ``size`` and converted to YUV 4:2:0
    (swscale) -> encoded packets -> container on ``target``.

    ``size``: the side of square output frames, or (width, height).
    """

    def __init__(self, target: str | Path | BinaryIO | FdWriter, fmt: str, fps: Fraction,
                 size: int | tuple[int, int], gop: int | None = None, crf: int = 23,
                 bitrate: int = 0):
        spec = FORMATS[fmt]
        self.fmt = fmt
        target = str(target) if isinstance(target, Path) else target
        self.container = av.open(target, "w", format=spec.muxer, options=dict(spec.options))
        self.stream = self.container.add_stream(spec.codec, rate=fps)
        self.stream.width, self.stream.height = (size, size) if isinstance(size, int) else size
        self.stream.pix_fmt = "yuv420p"
        if spec.codec == "libx264":
            self.stream.options = {"preset": "ultrafast", "tune": "zerolatency",
                                   "g": str(gop or max(1, round(2 * float(fps))))}
            if bitrate > 0:      # average bitrate; else constant quality (CRF)
                self.stream.bit_rate = bitrate
            else:
                self.stream.options = {**self.stream.options, "crf": str(crf)}
        self.stream.codec_context.time_base = Fraction(1) / fps
        self.index = 0
        self.closed = False

    def write(self, frames: np.ndarray) -> None:
        """frames [N, h, w, 3] uint8 RGB, any h, w: scaled (bilinear) to the stream's size."""
        s = self.stream
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                width=s.width, height=s.height, format="yuv420p", interpolation="BILINEAR")
            frame.pts = self.index
            self.index += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


class PacketSink:
    """Already-encoded packets (H.264 / HEVC Annex B from NVENC, JPEG from nvJPEG) -> the
    container on ``target``, without re-encoding: PyAV muxes them with timestamps of one
    frame period each (time base 1 / fps)."""

    def __init__(self, target: str | Path | BinaryIO | FdWriter, fmt: str, fps: Fraction,
                 size: int | tuple[int, int], codec: str):
        spec = FORMATS[fmt]
        target = str(target) if isinstance(target, Path) else target
        self.fmt, self.codec = fmt, codec
        self.container = av.open(target, "w", format=spec.muxer, options=dict(spec.options))
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = (size, size) if isinstance(size, int) else size
        self.stream.pix_fmt = PACKET_PIX_FMT[codec]
        self.time_base = Fraction(1) / fps
        self.stream.time_base = self.time_base
        self.index = 0
        self.closed = False

    def mux(self, data: bytes, key: bool) -> None:
        packet = av.Packet(data)
        packet.stream = self.stream
        packet.pts = packet.dts = self.index
        packet.time_base = self.time_base
        packet.is_keyframe = key
        self.container.mux(packet)
        self.index += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.container.close()

