"""Browser transports: what the page at ``/`` plays, each a :class:`~t2v_rt.serve.session.Viewer`.

Both are plain chunked HTTP responses of ``GET /api/streams/{id}/video?format=...``, so they go
through any HTTP proxy (Ray Serve's included) and need nothing but ``fetch`` / ``<img>`` in the
browser:

- ``fmp4`` (:class:`Fmp4Viewer`): H.264 (libx264, ultrafast zero-latency, one thread, as the
  Matroska transport) in fragmented MP4, one ``moof``/``mdat`` fragment per frame, read with
  ``fetch`` and appended to a Media Source Extensions ``SourceBuffer``; the page keeps its
  ``<video>`` at the live edge. The default where the browser's MSE plays
  ``video/mp4; codecs="avc1..."`` (Chrome, Edge, Firefox, Safari, Debian's chromium). With the
  server's encoder ``nvenc`` (a CUDA GPU with NVENC) each viewer has its own NVENC session
  instead (:class:`Fmp4NvencSink`, the GPU frames in), falling back to x264 for that viewer
  when the session cannot open;
- ``mjpeg`` (:class:`MjpegViewer`): one JPEG per frame in ``multipart/x-mixed-replace`` into an
  ``<img>``: every browser, no decoder state, no buffering, several times the bytes of H.264.
  The fallback.

docs/serving.md ("The browser page") has the measured latencies behind that choice.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from concurrent.futures import Executor
from fractions import Fraction

import av
import numpy as np

from t2v_rt.serve.session import ByteChannel, Session, Viewer, ViewerStats

BOUNDARY = "t2vframe"
TRANSPORTS = {"fmp4": "video/mp4", "mjpeg": f"multipart/x-mixed-replace; boundary={BOUNDARY}"}


# --- fragmented MP4, written here ---------------------------------------------------------
# ffmpeg's mp4 muxer writes a frame's fragment only when the next frame arrives (then it
# knows the sample's duration): a frame period late. This writer sends each frame's fragment
# the moment x264 gives its packet (the duration is the nominal frame period).

def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def nal_units(annexb: bytes) -> list[bytes]:
    """The NAL units of an H.264 Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    out, i, n = [], 0, len(annexb)
    starts = []
    while True:
        j = annexb.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, a in enumerate(starts):
        b = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = annexb[a:b]
        if k + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal[:-1]                 # the next start code's leading zero (00 00 00 01)
        if nal:
            out.append(nal)
    return out


class Fmp4Writer:
    """H.264 access units (Annex B, from libx264) -> fragmented MP4 for MSE: the init segment
    (ftyp + moov with the avcC of the first keyframe's SPS/PPS) before the first frame, then
    one moof + mdat per frame, its decode time ``pts`` frame periods (tfdt)."""

    def __init__(self, write, fps: Fraction, width: int, height: int):
        self.write, self.width, self.height = write, width, height
        scale = max(1, -(-1000 // fps.numerator))      # a timescale of at least 1000 ticks/s
        self.timescale = fps.numerator * scale
        self.duration = fps.denominator * scale         # one frame period in ticks
        self.sequence = 0
        self.started = False

    def codec(self, sps: bytes) -> str:
        return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"

    def init_segment(self, sps: bytes, pps: bytes) -> bytes:
        w, h, ts = self.width, self.height, self.timescale
        avcc = _box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),
                    struct.pack(">H", len(sps)), sps, b"\x01", struct.pack(">H", len(pps)), pps)
        avc1 = _box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16),
                    struct.pack(">HHIIIH", w, h, 0x480000, 0x480000, 0, 1), bytes(32),
                    struct.pack(">Hh", 0x18, -1), avcc)
        stbl = _box(b"stbl", _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
                    _full(b"stts", 0, 0, bytes(4)), _full(b"stsc", 0, 0, bytes(4)),
                    _full(b"stsz", 0, 0, bytes(8)), _full(b"stco", 0, 0, bytes(4)))
        minf = _box(b"minf", _full(b"vmhd", 0, 1, bytes(8)),
                    _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1),
                                        _full(b"url ", 0, 1))), stbl)
        mdia = _box(b"mdia", _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, ts, 0, 0x55C4, 0)),
                    _full(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"t2v-rt video\x00"),
                    minf)
        tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, 0), bytes(8),
                     struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX,
                     struct.pack(">II", w << 16, h << 16))
        mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, ts, 0, 0x10000, 0x100), bytes(10),
                     _MATRIX, bytes(24), struct.pack(">I", 2))
        mvex = _box(b"mvex", _full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
        ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso5iso6avc1mp41")
        return ftyp + _box(b"moov", mvhd, _box(b"trak", tkhd, mdia), mvex)

    def frame(self, pts: int, annexb: bytes, key: bool) -> None:
        nals = nal_units(annexb)
        if not self.started:
            sps = next((n for n in nals if n[0] & 0x1F == 7), None)
            pps = next((n for n in nals if n[0] & 0x1F == 8), None)
            if sps is None or pps is None:
                raise RuntimeError("the first H.264 frame carries no SPS/PPS")
            self.write(self.init_segment(sps, pps))
            self.started = True
        data = b"".join(struct.pack(">I", len(n)) + n for n in nals if n[0] & 0x1F not in (7, 8, 9))
        self.sequence += 1
        flags = 0x02000000 if key else 0x01010000      # sync sample / depends on others, non-sync
        trun_len = 12 + 4 + 4 + 12                      # full box header, count, offset, 1 sample
        moof_len = 8 + 16 + 8 + 16 + 20 + trun_len      # moof, mfhd, traf, tfhd, tfdt v1, trun
        traf = _box(b"traf", _full(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),
                    _full(b"tfdt", 1, 0, struct.pack(">Q", pts * self.duration)),
                    _full(b"trun", 0, 0x000701, struct.pack(">IiIII", 1, moof_len + 8,
                                                             self.duration, len(data), flags)))
        moof = _box(b"moof", _full(b"mfhd", 0, 0, struct.pack(">I", self.sequence)), traf)
        assert len(moof) == moof_len
        self.write(moof + struct.pack(">I", 8 + len(data)) + b"mdat" + data)


class Fmp4Sink:
    """libx264 (the settings of :class:`t2v_rt.encode.sink.VideoSink`, baseline profile, one
    thread) -> :class:`Fmp4Writer`: frame ``index`` is on its way the moment it is encoded."""

    def __init__(self, write, fps: Fraction, size: int, gop: int | None = None, crf: int = 23):
        ctx = self.codec = av.CodecContext.create("libx264", "w")
        ctx.width = ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1) / fps
        ctx.framerate = fps
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": str(crf),
                       "profile": "baseline", "g": str(gop or max(1, round(2 * float(fps)))),
                       "threads": "1"}
        ctx.open()
        self.size = size
        self.writer = Fmp4Writer(write, fps, size, size)
        self.index = 0
        self.closed = False

    def write(self, frames: np.ndarray) -> None:
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
                width=self.size, height=self.size, format="yuv420p", interpolation="BILINEAR")
            frame.pts = self.index
            self.index += 1
            for packet in self.codec.encode(frame):
                self.writer.frame(packet.pts, bytes(packet), packet.is_keyframe)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for packet in self.codec.encode(None):      # zerolatency: normally nothing is left
            self.writer.frame(packet.pts, bytes(packet), packet.is_keyframe)


class Fmp4NvencSink:
    """One NVENC session (H.264, SPS/PPS at every IDR, no B-frames) -> :class:`Fmp4Writer`:
    CUDA frames [N, 3, R, R] in [-1, 1] in, frame ``index`` on its way once NVENC gives its
    packet. Not run on an NVENC GPU yet (docs/serving.md, "Not yet")."""

    takes = "tensor"

    def __init__(self, write, fps: Fraction, size: int, options=None):
        from t2v_rt.encode.nvenc import NvencEncoder
        from t2v_rt.encode.sink import EncoderOptions

        self.encoder = NvencEncoder((size, size), fps, options or EncoderOptions())
        self.writer = Fmp4Writer(write, fps, size, size)
        self.index = 0
        self.closed = False

    def write(self, frames) -> None:   # torch.Tensor on the GPU
        for p in self.encoder.encode(frames):
            self.writer.frame(self.index, bytes(p.data), p.key)
            self.index += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            for p in self.encoder.flush():
                self.writer.frame(self.index, bytes(p.data), p.key)
                self.index += 1
        finally:
            self.encoder.close()

    def describe(self) -> str:
        return self.encoder.describe()


# encoder name -> the sink of an Fmp4Viewer (a table, so a test can stand in for NVENC)
FMP4_SINKS: dict[str, Callable] = {"x264": Fmp4Sink, "nvenc": Fmp4NvencSink}


class _ChannelViewer(Viewer):
    """A viewer writing bytes into a :class:`ByteChannel` that the HTTP response reads; a
    reader more than ``max_lag_s`` of frames behind is slow (its frames are dropped)."""

    media_type = "application/octet-stream"

    def __init__(self, session: Session, pool: Executor, stats: ViewerStats,
                 loop: asyncio.AbstractEventLoop, max_lag_s: float = 1.0):
        super().__init__(session, pool, stats)
        self.channel = ByteChannel(loop)
        self.max_lag = max(2, round(max_lag_s * float(session.spec.fps)))

    def backlogged(self) -> bool:
        return self.channel.lag >= self.max_lag


class Fmp4Viewer(_ChannelViewer):
    """H.264 in fragmented MP4 (Media Source Extensions)."""

    media_type = TRANSPORTS["fmp4"]

    def __init__(self, session: Session, pool: Executor, stats: ViewerStats,
                 loop: asyncio.AbstractEventLoop, max_lag_s: float = 1.0,
                 encoder: str = "x264"):
        super().__init__(session, pool, stats, loop, max_lag_s)
        spec = session.spec
        self.sink, self.encoder = self._open_encoder(encoder, {
            name: (lambda f=f: f(self.channel.write, spec.fps, spec.size))
            for name, f in FMP4_SINKS.items()})
        self.takes = getattr(self.sink, "takes", "rgb")

    def _encode(self, pts: int, frame) -> None:
        self.sink.index = pts                  # the sink stamps frames with its index
        self.sink.write(frame[None])
        self.channel.frame_done()

    def _close(self, clean: bool) -> None:
        try:
            if not clean:
                self.channel.closed = True     # the reader is gone: nobody waits for the end
            self.sink.close()
        finally:
            self.channel.close()


class MjpegViewer(_ChannelViewer):
    """One JPEG per frame, ``multipart/x-mixed-replace`` (an ``<img>`` shows the latest).

    Each part ends with the next part's boundary: a browser shows a part when it sees the
    boundary after it, so this way a frame is shown when its own bytes arrive, not with the
    next frame's. Dropping frames for a slow reader costs nothing here (every frame is a
    keyframe).
    """

    media_type = TRANSPORTS["mjpeg"]
    encoder = "mjpeg"           # libavcodec's, on the host, whatever the server's encoder

    def __init__(self, session: Session, pool: Executor, stats: ViewerStats,
                 loop: asyncio.AbstractEventLoop, max_lag_s: float = 0.5, quality: int = 4):
        super().__init__(session, pool, stats, loop, max_lag_s)
        self.size = session.spec.size
        ctx = self.codec = av.CodecContext.create("mjpeg", "w")
        ctx.width = ctx.height = self.size
        ctx.pix_fmt = "yuvj420p"            # full-range 4:2:0, what JPEG decoders expect
        ctx.time_base = Fraction(1) / session.spec.fps
        ctx.options = {"qmin": "2", "qmax": str(max(2, quality))}
        ctx.open()
        self._started = False

    def _encode(self, pts: int, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            width=self.size, height=self.size, format="yuvj420p", interpolation="BILINEAR")
        frame.pts = pts
        for packet in self.codec.encode(frame):
            jpeg = bytes(packet)
            head = b"" if self._started else f"--{BOUNDARY}\r\n".encode()
            self._started = True
            self.channel.write(head + f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                               f"\r\nX-Frame: {pts}\r\n\r\n".encode() + jpeg
                               + f"\r\n--{BOUNDARY}\r\n".encode())
        self.channel.frame_done()

    def _close(self, clean: bool) -> None:
        self.channel.close()


def make_viewer(fmt: str, session: Session, pool: Executor, stats: ViewerStats,
                loop: asyncio.AbstractEventLoop, encoder: str = "x264") -> Viewer:
    """The viewer of browser transport ``fmt`` (one of :data:`TRANSPORTS`); ``encoder``, the
    server's (``x264`` or ``nvenc``), encodes fMP4 (MJPEG is always on the host)."""
    if fmt == "fmp4":
        return Fmp4Viewer(session, pool, stats, loop, encoder=encoder)
    if fmt == "mjpeg":
        return MjpegViewer(session, pool, stats, loop)
    raise KeyError(fmt)
