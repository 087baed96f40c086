"""The command line end to end: stream/generate outputs decode; bad input exits 2 cleanly."""

import os
import subprocess
import sys
import time
from fractions import Fraction

import av
import pytest
import torch

CMD = [sys.executable, "-m", "t2v_rt"]
PROMPT = "a large red circle moving left and right slowly"


def run(*args, timeout=120, **kw):
    return subprocess.run([*CMD, *args], capture_output=True, timeout=timeout, **kw)


def decode(data_or_path, fmt=None):
    import io

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(src, format=fmt) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return frames, stream.average_rate or stream.guessed_rate


def assert_one_clean_line(proc, needle):
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], err
    assert proc.stdout == b""


@pytest.mark.parametrize("fmt", ["mpegts", "nut", "matroska", "y4m"])
def test_stream_decodes_to_requested_frames_size_and_fps(fmt):
    proc = run("stream", PROMPT, "--frames", "12", "--size", "96", "--fps", "24",
               "--no-realtime", "--format", fmt)
    assert proc.returncode == 0, proc.stderr.decode()
    frames, rate = decode(proc.stdout, {"y4m": "yuv4mpegpipe"}.get(fmt, fmt))
    assert len(frames) == 12
    assert frames[0].shape == (96, 96, 3)
    assert Fraction(rate) == 24
    assert frames[0].std() > 0


def test_stream_seconds_and_realtime_pacing():
    start = time.monotonic()
    proc = run("stream", "a blue square", "--seconds", "1", "--fps", "10", "--size", "64")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr.decode()
    frames, rate = decode(proc.stdout, "matroska")
    assert len(frames) == 10 and Fraction(rate) == 10
    assert elapsed >= 0.9  # paced: 10 frames at 10 fps span 0.9 s after the first


def test_stream_stdout_is_video_only_and_logs_go_to_stderr():
    proc = run("stream", PROMPT, "--frames", "3", "--no-realtime", "--size", "64")
    assert proc.stdout[:4] == b"\x1a\x45\xdf\xa3"  # Matroska (EBML) magic: nothing else came first
    assert b"streaming" in proc.stderr


def test_reader_going_away_exits_zero_quietly():
    p = subprocess.Popen([*CMD, "stream", PROMPT, "--size", "64"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = p.stdout.read(1000)
    p.stdout.close()  # like `| head -c 1000`
    rc = p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert len(first) == 1000
    assert rc == 0, err
    assert "Traceback" not in err and "rror" not in err


def test_ctrl_c_ends_the_stream_cleanly():
    import signal

    p = subprocess.Popen([*CMD, "stream", PROMPT, "--size", "64"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.read(2000)  # streaming has started
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts", ".y4m"])
def test_generate_writes_each_container(tmp_path, ext):
    out = tmp_path / f"clip{ext}"
    proc = run("generate", "a green triangle circling", "-o", str(out), "--seconds", "0.5",
               "--fps", "12", "--size", "64")
    assert proc.returncode == 0, proc.stderr.decode()
    frames, rate = decode(out, "yuv4mpegpipe" if ext == ".y4m" else None)
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3) and Fraction(rate) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


@pytest.mark.parametrize("args,needle", [
    (["stream", ""], "empty prompt"),
    (["stream", "a blu ball"], "did you mean 'blue'"),
    (["stream", "a red blue circle"], "conflicts with 'red'"),
    (["stream", PROMPT, "--fps", "0"], "--fps"),
    (["stream", PROMPT, "--fps", "-3"], "--fps"),
    (["stream", PROMPT, "--fps", "100000"], "--fps"),
    (["stream", PROMPT, "--fps", "abc"], "must be a number"),
    (["stream", PROMPT, "--size", "255"], "must be even"),
    (["stream", PROMPT, "--size", "100000"], "between 16 and 2048"),
    (["stream", PROMPT, "--size", "8"], "between 16 and 2048"),
    (["stream", PROMPT, "--seconds", "-1"], "positive"),
    (["stream", PROMPT, "--frames", "0"], "at least 1"),
    (["stream", PROMPT, "--frames", "3", "--seconds", "1"], "not allowed with"),
    (["stream", PROMPT, "--format", "avi"], "invalid choice"),
    (["stream", PROMPT, "--backend", "magic"], "unknown backend 'magic'"),
    (["stream", PROMPT, "--model", "/nonexistent/g.safetensors"], "model weights not found"),
    (["stream", PROMPT, "--backend", "onnxruntime", "--model", "/nonexistent/g.safetensors"],
     "model weights not found"),
    (["export-onnx", "--model", "/nonexistent/g.safetensors"], "model weights not found"),
    (["export-onnx", "--precision", "fp8"], "invalid choice"),
    (["build-engine", "--model", "/nonexistent/g.safetensors"], "model weights not found"),
    (["build-engine", "--batch", "16"], "MIN:OPT:MAX"),
    (["export-onnx", "--out", "/proc/t2v-rt-out"], "cannot create --out folder"),
    (["generate", PROMPT, "-o", "clip.avi"], "cannot tell the container"),
    (["generate", PROMPT, "-o", "/nonexistent-dir/clip.mp4"], "does not exist"),
    (["generate", PROMPT, "-o", "/proc/clip.mp4"], "not writable"),
    (["generate", PROMPT, "-o", "x.mp4", "--seconds", "-2"], "positive"),
    (["frobnicate"], "invalid choice"),
    (["train", "--resume", "/nonexistent/run"], "no such run folder"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    proc = run(*args, cwd=tmp_path)
    assert_one_clean_line(proc, needle)
    assert list(tmp_path.iterdir()) == []


def test_failed_generate_leaves_nothing(tmp_path):
    out = tmp_path / "clip.mp4"
    proc = run("generate", PROMPT, "-o", str(out), "--model", str(tmp_path / "missing.safetensors"))
    assert proc.returncode == 2 and not out.exists() and list(tmp_path.iterdir()) == []


def test_stream_refuses_a_terminal():
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.run([*CMD, "stream", PROMPT], stdout=slave, stderr=subprocess.PIPE,
                              timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 2 and b"pipe the video to a player" in proc.stderr


def test_doctor():
    proc = run("doctor")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    for needle in ("torch", "CUDA", "TensorRT", "NVENC", "Triton", "libx264", "auto backend: onnxruntime",
                   "bundled model"):
        assert needle in out
    assert "MISSING" not in out


def test_train_dry_run(tmp_path):
    proc = run("train", "--dry-run", "--run-dir", str(tmp_path), "--steps", "5")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "00000-shapes" / "config.json").is_file()


def test_eval_prints_a_table_and_writes_json(tmp_path):
    import json

    out = tmp_path / "eval.json"
    proc = run("eval", "--samples", "4", "--seconds", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "background" in proc.stdout.decode() and "held_out" in proc.stdout.decode()
    result = json.loads(out.read_text())
    assert result["samples"] == 4 and set(result["groups"]) == {"seen", "held_out"}
    assert {"kinds", "long_run", "flicker", "frechet"} <= set(result)
    assert "eval 4/4" in proc.stderr.decode()   # progress on stderr


def test_eval_reference_scores_the_renderer():
    proc = run("eval", "--reference", "--samples", "3", "--seconds", "1", "--long-run", "0")
    assert proc.returncode == 0, proc.stderr.decode()
    table = proc.stdout.decode()
    assert "100.0%" in table and "@600s" not in table
    bad = run("eval", "--reference", "--model", "x.safetensors")
    assert bad.returncode == 2 and b"--reference" in bad.stderr and b"Traceback" not in bad.stderr


def test_weights_of_another_generator_are_one_line_and_exit_2(tmp_path):
    """Weights saved by an older generator (other modules, other shapes): a clear error."""
    from safetensors.torch import save_file

    from t2v_rt.models.shapes.generator import Generator
    from t2v_rt.models.shapes.config import ModelConfig

    g = Generator(ModelConfig())
    state = {k: v for k, v in g.state_dict().items() if not k.startswith("to_alpha")}
    state["to_rgb.weight"] = torch.randn(3, 16, 3, 3)
    save_file(state, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(g.cfg.to_json())
    proc = run("stream", PROMPT, "--frames", "1", "--model", str(tmp_path / "old.safetensors"))
    assert_one_clean_line(proc, "do not fit their config")


def test_the_default_stdout_container_decodes_in_ffprobe_from_a_pipe():
    """No --format: the container chosen for pipes (bench/first_picture.py) is read by
    FFmpeg's own prober from a pipe, with every frame."""
    import shutil

    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is part of the test setup (apt install ffmpeg; .ci/run does it)"
    stream = subprocess.Popen([*CMD, "stream", PROMPT, "--frames", "15", "--no-realtime",
                               "--size", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    probe = subprocess.run([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=codec_name,nb_read_frames,width:format=format_name",
                            "-of", "json", "-i", "pipe:0"], stdin=stream.stdout,
                           capture_output=True, timeout=120)
    stream.stdout.close()
    assert stream.wait(timeout=120) == 0, stream.stderr.read().decode()
    assert probe.returncode == 0, probe.stderr.decode()
    import json

    info = json.loads(probe.stdout)
    assert "matroska" in info["format"]["format_name"]
    s = info["streams"][0]
    assert s["codec_name"] == "h264" and int(s["nb_read_frames"]) == 15 and s["width"] == 64


# --- regressions from the hostile-input probe (issue #16) ----------------------------------

def test_stderr_closed_keeps_logs_out_of_the_video():
    """With stderr closed (2>&-) the logs go nowhere, never into stdout's video."""
    proc = subprocess.run(["sh", "-c", f'"$0" -m t2v_rt stream "{PROMPT}" --frames 5 '
                           "--no-realtime --size 32 2>&-", sys.executable],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout[:4] == b"\x1a\x45\xdf\xa3" and b"t2v-rt:" not in proc.stdout
    assert len(decode(proc.stdout, "matroska")[0]) == 5


def test_a_huge_fps_exponent_is_refused_at_once():
    start = time.monotonic()
    proc = run("stream", "a red ball", "--fps", "1e100000000", timeout=30)
    assert time.monotonic() - start < 10
    assert_one_clean_line(proc, "must be in (0, 240]")


@pytest.mark.parametrize("prompt,char", [("ｂｌｕｅ ball", "U+FF42"), ("a red \x1b[31mball", "U+001B"),
                                         ("a red ball\x07", "U+0007")])
def test_non_ascii_and_control_characters_are_named_never_dropped_or_echoed(prompt, char):
    proc = run("stream", prompt, "--frames", "1")
    assert_one_clean_line(proc, char)
    assert b"\x1b" not in proc.stderr and b"\x07" not in proc.stderr


def test_a_long_word_is_shown_shortened_and_a_huge_prompt_refused_by_length():
    proc = run("stream", "a " + "x" * 900 + " ball", "--frames", "1")
    assert_one_clean_line(proc, "unknown word")
    assert len(proc.stderr) < 400
    proc = run("stream", "a " + "x" * 100_000 + " ball", "--frames", "1")
    assert_one_clean_line(proc, "prompt too long (100007 characters, at most 1000)")


def test_a_bundled_model_is_named_with_model_name(tmp_path):
    """--model NAME picks a model shipped in the package (t2v-rt models lists them); a file of
    that name here wins; an unknown name is one line listing the bundled names."""
    from t2v_rt.generators.io import bundled_models, bundled_path, model_path

    assert bundled_models()["default"] == bundled_path()
    assert model_path("default") == bundled_path()
    proc = run("generate", PROMPT, "--model", "default", "--seconds", "0.2", "-o",
               str(tmp_path / "a.mp4"))
    assert proc.returncode == 0, proc.stderr.decode()
    proc = run("generate", PROMPT, "--model", "no-such-model", "--seconds", "0.2", "-o",
               str(tmp_path / "b.mp4"))
    assert_one_clean_line(proc, "not found")
    assert "default" in proc.stderr.decode().splitlines()[-1]
    assert not (tmp_path / "b.mp4").exists()
    (tmp_path / "default").mkdir()
    assert model_path(str(tmp_path / "default")) == tmp_path / "default"
    listing = run("models").stdout.decode()
    assert "bundled models" in listing
    assert any(x.startswith("default ") and "64x64" in x for x in listing.splitlines())


def test_unseen_word_prompts_need_a_pretrained_text_encoder():
    proc = run("eval", "--prompts", "unseen-words", "--samples", "2")
    assert_one_clean_line(proc, "needs a model with a pretrained text encoder")
