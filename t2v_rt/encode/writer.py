"""Write uint8 RGB frames to a video file with PyAV (libx264, or raw for .y4m)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch


def write_video(path: str | Path, frames: torch.Tensor, fps: int) -> None:
    """frames [T, H, W, 3] uint8 -> path (container from the extension)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        for frame in frames.numpy():
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
