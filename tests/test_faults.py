"""Fault injection: a hostile environment gets one clear line, the right exit status, no
traceback, and nothing half-written.

Each case is the real command in a subprocess with the fault made by the operating system:
closed and full stdout/stderr (``/dev/full``), a full or read-only file system (a small tmpfs
where this machine may mount one; everywhere a file-size limit, RLIMIT_FSIZE, makes writes fail
with EFBIG, and an in-process ENOSPC injected at the write), paths through files, names too
long for the file system, too little memory (RLIMIT_AS), broken model files, and signals sent
twice. The cache's faults (read-only, full, HOME unset) are in tests/test_cache.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

CMD = [sys.executable, "-m", "t2v_rt"]
PROMPT = "a large red circle moving left and right slowly"


def run(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=None, env=None,
        timeout=120):
    return subprocess.run([*CMD, *args], stdout=stdout, stderr=stderr, preexec_fn=preexec_fn,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def lines(err: bytes) -> list[str]:
    return [x for x in err.decode(errors="replace").splitlines() if x.strip()]


def one_line(proc, code: int, *needles: str) -> str:
    """The process exited ``code`` with no traceback and its last stderr line holding every
    needle; the only other lines allowed are t2v-rt's own log lines before it."""
    err = lines(proc.stderr)
    text = "\n".join(err)
    assert proc.returncode == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert err, "no message"
    for needle in needles:
        assert needle in err[-1], text
    assert len(err[-1]) < 400, err[-1]
    return err[-1]


def decoded_frames(data: bytes, fmt="matroska") -> int:
    import io

    with av.open(io.BytesIO(data), format=fmt) as c:
        return sum(1 for _ in c.decode(video=0))


def close_fds(*fds):
    def pre():
        for fd in fds:
            os.close(fd)
    return pre


def limit(kind, value):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of being killed
        resource.setrlimit(kind, (value, value))
    return pre


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small tmpfs at ``path`` (root on Linux only); None where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                        capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield path if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- stdout and stderr -------------------------------------------------------------------

def test_stdout_closed_is_refused_in_one_line():
    proc = run("stream", PROMPT, "--frames", "3", stdout=None, preexec_fn=close_fds(1))
    one_line(proc, 2, "stdout is closed")


def test_stdout_full_is_one_line_exit_1():
    with open("/dev/full", "wb") as full:
        proc = run("stream", PROMPT, "--frames", "3", "--no-realtime", stdout=full)
    one_line(proc, 1, "stdout", "No space left on device")


@pytest.mark.parametrize("how", ["closed", "full"])
def test_stderr_closed_or_full_never_stops_the_stream(how):
    if how == "closed":
        proc = run("stream", PROMPT, "--frames", "5", "--no-realtime", stderr=None,
                   preexec_fn=close_fds(2))
    else:
        with open("/dev/full", "wb") as full:
            proc = run("stream", PROMPT, "--frames", "5", "--no-realtime", stderr=full)
    assert proc.returncode == 0
    assert decoded_frames(proc.stdout) == 5


def test_stdout_and_stderr_both_closed_exit_2_and_nothing_else():
    proc = run("stream", PROMPT, "--frames", "3", stdout=None, stderr=None,
               preexec_fn=close_fds(1, 2))
    assert proc.returncode == 2


def test_other_commands_with_stdout_closed_still_work():
    proc = run("models", stdout=None, preexec_fn=close_fds(1))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""


# --- signals, twice ------------------------------------------------------------------------

@pytest.mark.parametrize("first,second,after", [
    (signal.SIGINT, signal.SIGINT, 0.3),      # while starting (imports, model)
    (signal.SIGINT, signal.SIGINT, None),     # while streaming
    (signal.SIGTERM, signal.SIGTERM, None),
    (signal.SIGINT, signal.SIGTERM, None),
])
def test_two_signals_in_a_burst_never_print_a_traceback(first, second, after):
    p = subprocess.Popen([*CMD, "stream", PROMPT, "--size", "64"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    if after is None:
        assert len(p.stdout.read(200)) == 200        # streaming
    else:
        time.sleep(after)
    p.send_signal(first)
    time.sleep(0.005)
    p.send_signal(second)
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(second)                          # a third, for good measure
    out, err = p.communicate(timeout=60)
    text = err.decode()
    assert p.returncode in (0, 130), text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert len(lines(err)) <= 4, text


# --- full and read-only file systems ---------------------------------------------------------

def test_generate_onto_a_full_tmpfs_leaves_nothing(tmp_path):
    with tmpfs(tmp_path / "full", "size=48k") as full:
        if full is None:
            pytest.skip("cannot mount a tmpfs here (not root); the RLIMIT_FSIZE and injected "
                        "ENOSPC tests cover a full disk")
        proc = run("generate", PROMPT, "-o", str(full / "clip.mp4"), "--seconds", "8",
                   "--size", "512")
        one_line(proc, 1, "No space left on device", "clip.mp4")
        assert leftovers(full) == []


def test_init_model_onto_a_full_tmpfs_leaves_nothing(tmp_path):
    with tmpfs(tmp_path / "full", "size=16k") as full:
        if full is None:
            pytest.skip("cannot mount a tmpfs here (not root); the injected ENOSPC test covers it")
        proc = run("init-model", "stylegan-v", "-o", str(full / "m.safetensors"))
        one_line(proc, 1, "No space left on device", "m.safetensors")
        assert leftovers(full) == []


def test_a_read_only_tmpfs_is_refused_before_any_work(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=16k") as ro:
        if ro is None:
            pytest.skip("cannot mount a tmpfs here (not root); paths through files cover it")
        start = time.monotonic()
        proc = run("generate", PROMPT, "-o", str(ro / "clip.mp4"))
        one_line(proc, 2, "not writable", "Read-only file system")
        assert time.monotonic() - start < 20


def test_a_file_size_limit_mid_write_leaves_nothing(tmp_path):
    """RLIMIT_FSIZE (no root needed): the encoder's writes fail with EFBIG mid-file."""
    proc = run("generate", PROMPT, "-o", str(tmp_path / "clip.mp4"), "--seconds", "4",
               preexec_fn=limit(resource.RLIMIT_FSIZE, 4096))
    one_line(proc, 1, "File too large")
    assert leftovers(tmp_path) == []


def test_enospc_injected_at_the_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Where no tmpfs can be mounted: the disk fills half-way through writing the weights."""
    from t2v_rt import cli

    real = Path.write_bytes

    def half_then_full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    code = cli.main(["init-model", "stylegan-v", "--preset", "tiny", "-o",
                     str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "No space left on device" in err and "m.safetensors" in err, err
    assert leftovers(tmp_path) == []


# --- paths ---------------------------------------------------------------------------------

LONG = "n" * 300


@pytest.mark.parametrize("args,needle", [
    (["generate", PROMPT, "-o", "{tmp}/" + LONG + ".mp4"], "too long a name"),
    (["generate", PROMPT, "-o", "{tmp}/a-file/clip.mp4"], "is a file, not a folder"),
    (["generate", PROMPT, "-o", "{tmp}/a-folder.mp4"], "is a folder"),
    (["eval", "--samples", "2", "--json", "{tmp}/" + LONG + ".json"], "too long a name"),
    (["eval", "--samples", "2", "--json", "{tmp}/a-file/x.json"], "is a file, not a folder"),
    (["eval", "--samples", "2", "--json", "{tmp}/a-folder.mp4"], "is a folder"),
    (["eval", "--samples", "2", "--json", "/proc/x.json"], "not writable"),
    (["init-model", "stylegan-v", "-o", "{tmp}/" + LONG + ".safetensors"], "too long a name"),
    (["init-model", "stylegan-v", "-o", "{tmp}/a-file/m.safetensors"], "is a file, not a folder"),
    (["export-onnx", "--out", "{tmp}/a-file"], "is a file"),
    (["export-onnx", "--out", "{tmp}/a-file/sub"], "cannot create --out folder"),
    (["export-onnx", "--out", "/proc/t2v"], "cannot create --out folder"),
])
def test_output_paths_are_checked_before_any_work(tmp_path, args, needle):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder.mp4").mkdir()
    start = time.monotonic()
    proc = run(*[a.format(tmp=tmp_path) for a in args])
    one_line(proc, 2, needle)
    assert time.monotonic() - start < 20            # refused up front, not after the work
    assert leftovers(tmp_path) == ["a-file", "a-folder.mp4"]


@pytest.mark.parametrize("args,needle", [
    (["eval", "--samples", "1000000000"], "--samples"),
    (["eval", "--seconds", "1e12"], "--seconds"),
    (["eval", "--long-run", "1e300"], "--long-run"),
    (["generate", PROMPT, "-o", "x.mp4", "--seconds", "1e12"], "--seconds"),
    (["stream", PROMPT, "--seconds", "1e308"], "--seconds"),
    (["stream", PROMPT, "--frames", "9" * 5000], "--frames"),
    (["stream", PROMPT, "--gop", "1e9"], "--gop"),
    (["stream", PROMPT, "--seconds", "nan"], "--seconds"),
])
def test_sizes_are_bounded_where_they_are_parsed(args, needle):
    proc = run(*args, timeout=30)
    line = one_line(proc, 2, needle)
    assert len(line) < 200


# --- memory --------------------------------------------------------------------------------

@pytest.mark.parametrize("megabytes", [300, 420])
def test_too_little_memory_is_one_line(megabytes):
    proc = run("stream", PROMPT, "--size", "2048", "--frames", "2", "--format", "nut",
               preexec_fn=limit(resource.RLIMIT_AS, megabytes << 20))
    if proc.returncode == 0:
        pytest.skip(f"{megabytes} MB of address space was enough here")
    one_line(proc, 1)
    assert "memory" in lines(proc.stderr)[-1]


@pytest.mark.parametrize("exc", [
    RuntimeError("/onnxruntime_src/onnxruntime/core/platform/posix/env.cc:327 onnxruntime::"
                 "PosixThread::PosixThread(...) pthread_create failed, error code: 12 error msg: "
                 "Cannot allocate memory"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 17179869184 bytes."),
    RuntimeError("std::bad_alloc"),
    ImportError("Exception caught: std::bad_alloc"),     # a pybind11 module's init, RLIMIT_AS
    ImportError("libfoo.so: failed to map segment from shared object"),
])
def test_a_native_library_out_of_memory_is_an_environment_failure(exc):
    """What ONNX Runtime and PyTorch raise when they cannot allocate or start a thread (seen
    under RLIMIT_AS on a loaded machine) is one "out of memory" line, not an internal error."""
    from t2v_rt import cli

    failure = cli._environment(exc)
    assert failure is not None and "memory" in str(failure)
    assert cli._environment(RuntimeError("shape mismatch in Conv")) is None
    assert cli._environment(ImportError("No module named 'foo'")) is None


# --- broken model files ----------------------------------------------------------------------

def _tiny_model(folder: Path) -> Path:
    from t2v_rt import cli

    path = folder / "m.safetensors"
    assert cli.main(["init-model", "stylegan-v", "--preset", "tiny", "-o", str(path)]) == 0
    return path


def _break(path: Path, how: str) -> None:
    cfg = path.with_suffix(".json")
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 100])
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "nan-weights":
        from safetensors.torch import load_file, save_file

        state = load_file(str(path))
        state[next(iter(state))].view(-1)[0] = float("nan")
        save_file(state, str(path))
    elif how == "config-not-json":
        cfg.write_text("{architecture: stylegan-v")
    elif how == "config-a-list":
        cfg.write_text("[]")
    elif how == "config-nan":
        cfg.write_text(cfg.read_text().replace('"latent_dim": ', '"latent_dim": NaN, "x": '))
    elif how == "config-huge-width":
        data = json.loads(cfg.read_text())
        data["channels"] = [10**9] * len(data["channels"])
        cfg.write_text(json.dumps(data))
    elif how == "config-binary":
        cfg.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "weights-a-folder":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("how,needle", [
    ("truncated", "cannot be read as safetensors"),
    ("garbage", "cannot be read as safetensors"),
    ("empty", "cannot be read as safetensors"),
    ("nan-weights", "NaN or infinite"),
    ("config-not-json", "not valid JSON"),
    ("config-a-list", "must be a JSON object"),
    ("config-nan", "NaN"),
    ("config-huge-width", "channels"),
    ("config-binary", "not UTF-8"),
    ("weights-a-folder", "not found"),
])
def test_a_broken_model_is_one_line_exit_2(tmp_path, backend, how, needle):
    path = _tiny_model(tmp_path)
    _break(path, how)
    proc = run("stream", "a red ball", "--model", str(path), "--backend", backend,
               "--frames", "2", "--no-realtime", env={"T2V_RT_CACHE": str(tmp_path / "cache")})
    one_line(proc, 2, needle)
    assert proc.stdout == b""


# --- real time -------------------------------------------------------------------------------

def test_a_stream_that_falls_behind_says_so_once_with_its_rate():
    """The pacer, with a reader that takes each frame in 40 ms at 50 fps asked."""
    from fractions import Fraction

    from t2v_rt.pipeline import StreamOptions, _Pacer

    said = []
    pacer = _Pacer(StreamOptions(fps=Fraction(50)), stop=None, log=said.append)
    for k in range(60):                 # 2.4 s of writing, 1.2 s of video
        pacer.emit(k, lambda: time.sleep(0.04))
    assert len(said) == 1, said
    assert "falling behind real time" in said[0] and "of the 50 asked" in said[0]
    rate = float(said[0].split("real time: ")[1].split(" fps")[0])
    assert 15 <= rate <= 30             # 25 fps reached


def test_a_stream_that_keeps_up_says_nothing():
    from fractions import Fraction

    from t2v_rt.pipeline import StreamOptions, _Pacer

    said = []
    pacer = _Pacer(StreamOptions(fps=Fraction(50)), stop=None, log=said.append)
    for k in range(75):
        pacer.emit(k, lambda: None)
    assert said == []


def test_stream_faster_than_this_machine_says_so_in_one_line():
    proc = run("stream", PROMPT, "--fps", "240", "--size", "2048", "--seconds", "2",
               "--format", "nut")
    assert proc.returncode == 0, proc.stderr.decode()
    behind = [x for x in lines(proc.stderr) if "falling behind" in x]
    assert len(behind) == 1, proc.stderr.decode()
    assert decoded_frames(proc.stdout, "nut") == 480
