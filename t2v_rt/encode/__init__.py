"""Encoders and muxers: frames to a video stream or file."""

from t2v_rt.encode.sink import EXTENSIONS, FORMATS, FdWriter, PacketSink, VideoSink

__all__ = ["EXTENSIONS", "FORMATS", "FdWriter", "PacketSink", "VideoSink"]
