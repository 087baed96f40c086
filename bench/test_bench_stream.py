"""pytest-benchmark: the stream pipeline's stages on the bundled model, in process.

    pytest bench/ --benchmark-only

Each benchmark times one stage for a batch of 16 frames at 256x256, so the per-stage share
of a frame's cost can be read off side by side: generation (the auto backend), display
conversion (to uint8), and scaling + YUV conversion + encoding + muxing (swscale, libx264,
MPEG-TS, into memory).
"""

import io
from fractions import Fraction

import pytest

from t2v_rt.backends import create_backend
from t2v_rt.backends.base import to_display
from t2v_rt.encode import VideoSink
from t2v_rt.pipeline import Video, frame_times

N, SIZE = 16, 256


@pytest.fixture(scope="module")
def video():
    return Video(create_backend("auto"), "a large red circle moving left and right slowly", 0)


def test_generate_16_frames(benchmark, video):
    t = frame_times(0, N, Fraction(30))
    benchmark(video.frames_at, t)


def test_to_display_16_frames(benchmark, video):
    frames = video.frames_at(frame_times(0, N, Fraction(30)))
    benchmark(to_display, frames)


def test_encode_mux_16_frames(benchmark, video):
    rgb = to_display(video.frames_at(frame_times(0, N, Fraction(30))))
    sink = VideoSink(io.BytesIO(), "mpegts", Fraction(30), SIZE)
    benchmark(sink.write, rgb)
    sink.close()


def test_pipeline_16_frames(benchmark, video):
    sink = VideoSink(io.BytesIO(), "mpegts", Fraction(30), SIZE)
    state = {"i": 0}

    def step():
        t = frame_times(state["i"], N, Fraction(30))
        state["i"] += N
        sink.write(to_display(video.frames_at(t)))

    benchmark(step)
    sink.close()
