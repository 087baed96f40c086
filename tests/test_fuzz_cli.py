"""Property-based fuzz of the command line (hypothesis): whatever the arguments and prompts,

- the exit status is 0, 1, 2 or 130;
- no traceback and no "internal error" (that is for bugs);
- at most a few lines on stderr, none of them huge;
- stdout is a decodable video or empty (``stream``);
- no file is left anywhere but at the output path asked for.

Each example is the real command in a subprocess (start-up ~0.3 s), so the example counts are
small; the strategies lean on the values that broke things before (huge and non-finite
numbers, non-ASCII and control characters, long words, paths through files, odd names).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CMD = [sys.executable, "-m", "t2v_rt"]
SETTINGS = settings(max_examples=int(os.environ.get("T2V_RT_FUZZ_EXAMPLES", "30")),
                    deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

WORDS = ["a", "large", "small", "red", "blue", "green", "circle", "square", "triangle",
         "ball", "moving", "left", "and", "right", "up", "down", "slowly", "quickly", "on",
         "black", "white", "background", "standing", "still", "in", "circle", "around",
         "spinning", "blu", "ｂｌｕｅ", "\x1b[31m", "\u200b", "é", "x" * 300, "", "--fps", "-"]
NUMBERS = ["0", "-1", "1", "2", "3", "15", "30", "29.97", "1e100000000", "1e308", "-1e308",
           "nan", "inf", "-inf", "1/0", "0x10", "9" * 5000, "", " ", "1_000", "３０", "2.5"]
SIZES = ["16", "64", "63", "0", "-64", "2050", "1e3", "abc", "", "96"]
FORMATS = ["matroska", "nut", "mpegts", "y4m", "avi", "", "MATROSKA"]
BACKENDS = ["auto", "onnxruntime", "torch", "magic", "", "tensorrt"]

prompts = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=10).map(" ".join),
    st.text(min_size=0, max_size=60),
)


def _option(name: str, values):
    return st.tuples(st.just(name), st.sampled_from(values))


stream_options = st.lists(st.one_of(
    _option("--fps", NUMBERS), _option("--size", SIZES), _option("--seed", NUMBERS),
    _option("--format", FORMATS), _option("--backend", BACKENDS), _option("--gop", NUMBERS),
    _option("--quality", NUMBERS), _option("--bitrate", NUMBERS),
    _option("--encoder", ["auto", "x264", "raw", "nvenc", "bogus"]),
    _option("--codec", ["h264", "hevc", "vp9"]),
), max_size=4)


def run(argv, cwd):
    return subprocess.run([*CMD, *argv], capture_output=True, timeout=120, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def check(proc, video_fmt=None) -> None:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 1, 2, 130), err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) <= 6, err
    assert all(len(x) < 600 for x in lines), err
    if proc.stdout:
        assert proc.returncode == 0, err
        if video_fmt == "y4m":
            assert proc.stdout.startswith(b"YUV4MPEG2")
        else:
            with av.open(io.BytesIO(proc.stdout), format=video_fmt) as c:
                assert sum(1 for _ in c.decode(video=0)) >= 1


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


SECONDS = ["0", "-1", "0.1", "0.05", "nan", "inf", "1e308", "abc", "", "1e-300"]


@SETTINGS
@given(prompt=prompts, options=stream_options,
       length=st.one_of(st.just(["--frames", "2"]),
                        st.sampled_from(SECONDS).map(lambda s: ["--seconds", s]),
                        st.sampled_from(NUMBERS[:4] + ["9" * 30]).map(lambda n: ["--frames", n])))
def test_stream_fuzz(prompt, options, length):
    argv = ["stream", prompt, *length, "--no-realtime"]
    fmt = "matroska"
    for name, value in options:
        argv += [name, value]
        if name == "--format":
            fmt = value
    with tempfile.TemporaryDirectory() as cwd:
        proc = run(argv, cwd)
        check(proc, {"y4m": "y4m", "nut": "nut", "mpegts": "mpegts"}.get(fmt, "matroska"))
        assert _files(Path(cwd)) == []


OUT_NAMES = ["clip.mp4", "clip.mkv", "clip.ts", "clip.y4m", "clip.avi", "a-file/clip.mp4",
             "a-folder", "missing/clip.mp4", "n" * 300 + ".mp4", ".mp4", "clip", "-o",
             "clip.MP4", "sp ace.mkv"]


@SETTINGS
@given(prompt=prompts, name=st.sampled_from(OUT_NAMES),
       seconds=st.sampled_from(["0.1", "0.2", "0", "-1", "nan", "1e12", "abc"]),
       options=st.lists(st.one_of(_option("--size", SIZES), _option("--fps", NUMBERS[:8]),
                                  _option("--backend", BACKENDS)), max_size=2))
def test_generate_fuzz(prompt, name, seconds, options):
    with tempfile.TemporaryDirectory() as cwd:
        root = Path(cwd)
        (root / "a-file").write_text("x")
        (root / "a-folder").mkdir()
        argv = ["generate", prompt, "-o", name, "--seconds", seconds]
        for option in options:
            argv += list(option)
        proc = run(argv, cwd)
        check(proc)
        made = set(_files(root)) - {"a-file", "a-folder"}
        assert made <= {name}, made                  # the output, or nothing
        if proc.returncode == 0:
            assert made == {name}


SET_KEYS = ["latent_dim", "channels", "resolution", "text_layers", "vocabulary", "bogus",
            "text_dim", "base_fps", "", "=", "architecture"]
SET_VALUES = ["32", "NaN", "Infinity", "-1", "0", "1e9", "[8,4]", "[1000000000]", "\"x\"",
              "null", "{}", "[]", "true", "10**6", "3.5", "\"" + "w" * 200 + "\""]


@SETTINGS
@given(arch=st.sampled_from(["stylegan-v", "mocogan", "shapes", "nope", ""]),
       preset=st.sampled_from(["tiny", "tiny", "default", "huge"]),
       sets=st.lists(st.tuples(st.sampled_from(SET_KEYS), st.sampled_from(SET_VALUES)),
                     max_size=3))
@pytest.mark.slow
def test_init_model_fuzz(arch, preset, sets):
    with tempfile.TemporaryDirectory() as cwd:
        argv = ["init-model", arch, "-o", "m.safetensors", "--preset", preset]
        for key, value in sets:
            argv += ["--set", f"{key}={value}"]
        proc = run(argv, cwd)
        check(proc)
        made = set(_files(Path(cwd)))
        assert made in (set(), {"m.safetensors", "m.json"}), made
