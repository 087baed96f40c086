"""Encoders and muxers: frames to a video stream or file."""

from t2v_rt.encode.sink import EXTENSIONS, FORMATS, STREAM_FORMATS, FdWriter, VideoSink

__all__ = ["EXTENSIONS", "FORMATS", "STREAM_FORMATS", "FdWriter", "VideoSink"]
