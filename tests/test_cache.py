"""The cache of compiled artefacts (issue #16, "nothing lost, nothing escapes"): a run whose
cache cannot be written (HOME unset or unwritable, a read-only or full cache) still streams,
through the per-user temporary cache or from memory, with one line saying so; a full cache is
left with nothing half-written and no manifest entry without its file; concurrent writers keep
every entry; a folder the user named never falls back silently; manifests are confined to
their folder and digests are checked on the bytes loaded, TensorRT-RTX's runtime cache too.

The environment cases run the real CLI in a subprocess on a model that is not the bundled one
(a tiny StyleGAN-V, whose graphs are exported once, into the cache). A full or read-only cache
is a real tmpfs in a private mount namespace where ``unshare -m`` may mount one (root in most
containers); otherwise the same failures are injected in-process at the write call.
"""

import errno
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from t2v_rt.compile import cache
from t2v_rt.compile import engine as en
from t2v_rt.compile.graphs import MANIFEST, load_exports
from t2v_rt.files import NotWritable, sha256_bytes

UID = os.getuid()
AS_ROOT = os.geteuid() == 0     # chmod does not stop root: other techniques then
BACKEND = "onnxruntime" if torch.cuda.is_available() else "auto"    # auto = onnxruntime on a CPU
KEYS = {("style", "fp32"), ("frames", "fp32")}


# --- helpers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny StyleGAN-V (no shipped graphs: the onnxruntime backend exports it into the cache)."""
    from t2v_rt.generators.io import init_generator, save_generator

    path = tmp_path_factory.mktemp("model") / "sg.safetensors"
    save_generator(init_generator("stylegan-v", "tiny"), path)
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """In-process: this test's own configured cache and temporary folder (never /tmp's)."""
    monkeypatch.setenv("T2V_RT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "cache", tmp_path / "tmp" / f"t2v-rt-{UID}"


def run(*args, env: dict, prefix: tuple = (), timeout=300):
    """The CLI with ``env`` over this environment (None: unset)."""
    full = {**os.environ, **env}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([*prefix, sys.executable, "-m", "t2v_rt", *args], capture_output=True,
                          env=full, timeout=timeout, check=False)


def stream(model: Path, env: dict, prefix: tuple = ()):
    return run("stream", "a red ball", "--model", str(model), "--frames", "3", "--size", "64",
               "--format", "nut", "--no-realtime", "--backend", BACKEND, env=env, prefix=prefix)


def streamed(proc) -> str:
    """The run's stderr, once its 3 frames are checked."""
    from tests.test_cli import decode

    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    frames, _ = decode(proc.stdout, "nut")
    assert len(frames) == 3 and frames[0].std() > 0, err
    return err


def cache_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "for this run" in line]


@functools.cache
def can_mount() -> bool:
    """Whether a tmpfs can be mounted in a private mount namespace here."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.run(["unshare", "-m", "sh", "-c",
                               f"mount -t tmpfs -o size=64k tmpfs {d}"],
                              capture_output=True, check=False)
    return proc.returncode == 0


def on_tmpfs(mnt: Path, options: str) -> tuple:
    """A command prefix: in a private mount namespace with a tmpfs (``options``) on ``mnt``;
    what is in it at the end is listed in ``<mnt>.listing`` (the mount goes with the namespace)."""
    mnt.mkdir()
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; mnt=$2; shift 2; "$@"; rc=$?; '
              'find "$mnt" -mindepth 1 -printf "%P %s\\n" > "$mnt.listing"; exit $rc')
    return "unshare", "-m", "sh", "-c", script, "sh", options, str(mnt)


def unwritable_home(tmp_path: Path) -> Path:
    """A HOME where nothing can be created: a read-only folder, or for root (whom chmod does not
    stop) a path under a regular file (ENOTDIR)."""
    if AS_ROOT:
        (tmp_path / "not-a-folder").write_text("")
        return tmp_path / "not-a-folder" / "home"
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    return home


def _failing_write(monkeypatch, under: Path, err: int, after: int = 0):
    """Make ``os.write`` into files under ``under`` fail with ``err`` (after ``after`` whole
    files, and half-way through the next one, as a disk that fills up does)."""
    real, files_done, seen = os.write, [], set()

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return real(fd, data)
        if not target.startswith(str(under)):
            return real(fd, data)
        if target not in seen:
            seen.add(target)
            files_done.append(target)
        if len(files_done) <= after:
            return real(fd, data)
        real(fd, bytes(data[: len(data) // 2]))
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "write", write)


# --- the environment cases, through the CLI ------------------------------------------------

@pytest.fixture(scope="module")
def fallen_back(model, tmp_path_factory):
    """The first run, which exports, into a cache that fills up in the middle of the export and
    falls back to the temporary cache of a fresh TMPDIR, which the later runs share. Where
    mounting works: the CLI on a 160 kB tmpfs (the frames graph fits, the style graph does
    not). Elsewhere: in-process, ENOSPC injected at the write call half-way through the
    second graph. (stderr, the full cache's files at the end, TMPDIR)"""
    base = tmp_path_factory.mktemp("fallback")
    (base / "tmp").mkdir()
    full = base / "full"
    if can_mount():
        proc = stream(model, {"T2V_RT_CACHE": str(full), "TMPDIR": str(base / "tmp")},
                      on_tmpfs(full, "size=160k"))
        err = streamed(proc)
        listing = (base / "full.listing").read_text().split("\n")
        left = {line.split(" ")[0] for line in listing if line}
        return err, left, base / "tmp"
    from t2v_rt.compile.graphs import ensure_exported

    lines = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2V_RT_CACHE", str(full))
        mp.setattr(tempfile, "tempdir", str(base / "tmp"))
        _failing_write(mp, full, errno.ENOSPC, after=1)
        graphs = ensure_exported(model, "fp32", lines.append)
    assert {g.path.parent.parent for g in graphs.values()} == {base / "tmp" / f"t2v-rt-{UID}"}
    return "\n".join(lines), {str(p.relative_to(full)) for p in full.rglob("*")}, base / "tmp"


def test_a_cache_that_fills_up_falls_back_with_nothing_half_written(fallen_back, model):
    err, left, tmpdir = fallen_back
    temp = tmpdir / f"t2v-rt-{UID}"
    [line] = cache_lines(err)
    assert (f"cache {tmpdir.parent / 'full'} is not writable (No space left on device): using "
            f"{temp} for this run; set T2V_RT_CACHE to a writable folder") in line, err
    assert "exported style.onnx" in err and "exported frames-fp32.onnx" in err
    assert set(load_exports(cache.model_folder(model, temp), cache.model_digest(model))) == KEYS
    assert os.stat(temp).st_mode & 0o777 == 0o700
    # The full cache: no graph (the one written whole before the disk filled up is removed
    # too: no manifest names it), no temporary file, no manifest; the lock file alone.
    d = cache.model_digest(model)[:16]
    assert left == {d, f"{d}/.lock"}, left


def test_home_unset_streams_through_the_temporary_cache(fallen_back, model):
    tmpdir = fallen_back[2]
    err = streamed(stream(model, {"HOME": None, "T2V_RT_CACHE": None, "TMPDIR": str(tmpdir)}))
    [line] = cache_lines(err)
    assert "no cache folder (HOME is not set, nor is T2V_RT_CACHE)" in line, err
    assert "exported" not in err            # the graphs of the first run, not exported again


def test_an_unwritable_home_streams_through_the_temporary_cache(fallen_back, model, tmp_path):
    home = unwritable_home(tmp_path)
    err = streamed(stream(model, {"HOME": str(home), "T2V_RT_CACHE": None,
                                  "TMPDIR": str(fallen_back[2])}))
    [line] = cache_lines(err)
    reason = "Not a directory" if AS_ROOT else "Permission denied"
    assert f"cache {home}/.cache/t2v-rt is not writable ({reason})" in line, err
    assert "exported" not in err


def test_a_read_only_cache_streams_through_the_temporary_cache(fallen_back, model, tmp_path):
    env = {"TMPDIR": str(fallen_back[2]), "T2V_RT_CACHE": str(tmp_path / "ro")}
    if can_mount():
        proc = stream(model, env, on_tmpfs(tmp_path / "ro", "ro,size=64k"))
        reason = "Read-only file system"
    elif not AS_ROOT:
        (tmp_path / "ro").mkdir(mode=0o500)
        proc, reason = stream(model, env), "Permission denied"
    else:
        pytest.skip("root without mount namespaces: "
                    "test_store_falls_back_on_each_write_error covers EROFS")
    err = streamed(proc)
    [line] = cache_lines(err)
    assert f"cache {tmp_path / 'ro'} is not writable ({reason})" in line, err


def test_a_later_run_with_the_cache_fixed_exports_nothing_again(fallen_back, model, tmp_path):
    err = streamed(stream(model, {"T2V_RT_CACHE": str(tmp_path / "fixed"),
                                  "TMPDIR": str(fallen_back[2])}))
    assert cache_lines(err) == [] and "exported" not in err, err


# The export's computation stubbed (a second of work per graph, fake bytes): the subject here is
# the lock and the merge, through the real CLI, store and manifest code; real exports are the
# other tests'.
STUBBED_EXPORT = """
import os, sys, time
from pathlib import Path
from t2v_rt.compile import export as ex

def export_graphs(g, precisions, log=None, check_seed=None, skip=frozenset()):
    out = []
    every = {(n, p if n == "frames" else "fp32") for n in ex.graph_names(g.config.FORM)
             for p in precisions}
    for graph, p in sorted(every - set(skip)):
        time.sleep(1.0)
        data = f"{graph} {p} {os.getpid()}".encode() * 100
        name = ex.graph_path(Path(), graph, p).name
        log(f"exported {name} (stub)")
        out.append(ex.Export(p, graph, name, ex.sha256_bytes(data), 0.0, 0.0, 0, data))
    return out

ex.export_graphs = export_graphs
sys.argv = ["t2v-rt", *sys.argv[1:]]
from t2v_rt.cli import entry
entry()
"""


def test_concurrent_writers_keep_every_entry(model, tmp_path):
    """Three export-onnx started together on one cache folder (fp32, fp16, fp32): they take
    turns on its lock, each reads what the others wrote and exports only what is missing, and
    the manifest keeps every entry; a reader meanwhile never sees a half-written manifest."""
    env = {**os.environ, "T2V_RT_CACHE": str(tmp_path / "shared"), "TMPDIR": str(tmp_path / "tmp")}
    folder = tmp_path / "shared" / cache.model_digest(model)[:16]
    procs = [subprocess.Popen([sys.executable, "-c", STUBBED_EXPORT, "export-onnx", "--model",
                               str(model), "--precision", p], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for p in ("fp32", "fp16", "fp32")]
    reads = 0
    while any(p.poll() is None for p in procs):
        time.sleep(0.01)
        try:
            text = (folder / MANIFEST).read_text()
        except FileNotFoundError:
            continue
        json.loads(text)            # whole, whenever it is there
        reads += 1
    logs = ""
    for p in procs:
        _, err = p.communicate(timeout=60)
        logs += err.decode()
        assert p.returncode == 0, err.decode()
    assert "waiting for another t2v-rt process" in logs, logs      # they did run together
    for name in ("style.onnx", "frames-fp32.onnx", "frames-fp16.onnx"):
        assert logs.count(f"exported {name}") == 1, logs           # once, then read by the others
    keys = KEYS | {("frames", "fp16")}
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {(e["graph"], e["precision"]) for e in manifest["graphs"]} == keys and reads > 0
    assert set(load_exports(folder, cache.model_digest(model))) == keys
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [".lock"]


# --- in-process: write failures, memory, the user's own folder ------------------------------------

def test_nothing_writable_keeps_the_graphs_in_memory(model, tmp_path, monkeypatch):
    from t2v_rt.backends.onnxruntime_backend import OnnxRuntimeBackend
    from t2v_rt.pipeline import Video

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("T2V_RT_CACHE", str(tmp_path / "file" / "cache"))      # ENOTDIR
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "tmp" / f"t2v-rt-{UID}").symlink_to(tmp_path / "elsewhere")   # refused
    lines = []
    backend = OnnxRuntimeBackend(model, log=lines.append)
    frames = np.asarray(Video(backend, "a red ball", 0).frames_at(np.array([0.0, 0.5])))
    assert frames.shape == (2, 3, 16, 16) and np.isfinite(frames).all() and frames.std() > 0
    [line] = cache_lines("\n".join(lines))
    assert "is not writable (Not a directory), nor is the temporary cache" in line
    assert "is a symbolic link" in line and "keeping compiled artefacts in memory" in line
    assert list((tmp_path / "elsewhere").iterdir()) == []
    # a second backend of this process takes them from memory: not exported again
    lines.clear()
    again = OnnxRuntimeBackend(model, log=lines.append)
    assert not any("export" in line for line in lines), lines
    np.testing.assert_array_equal(Video(again, "a red ball", 0).frames_at(np.array([0.0, 0.5])),
                                  frames)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES],
                         ids=errno.errorcode.get)
def test_store_falls_back_on_each_write_error(own_cache, monkeypatch, err):
    """cache.store, the one mechanism behind every cached write: a write error under the
    configured cache sends the write to the temporary cache, with one line."""
    configured, temp = own_cache
    _failing_write(monkeypatch, configured, err)
    lines = []

    def write(folder: Path) -> None:
        from t2v_rt.files import atomic_write_bytes

        atomic_write_bytes(folder / "a.bin", b"x" * 10_000)

    folder = cache.store(lambda root: root / "m", write, lines.append)
    assert folder == temp / "m" and (folder / "a.bin").read_bytes() == b"x" * 10_000
    [line] = lines
    assert f"cache {configured} is not writable ({os.strerror(err)}): using {temp}" in line
    assert sorted(p.name for p in (configured / "m").iterdir()) == [".lock"]     # nothing else


def test_home_unset_counts_as_no_cache_folder(monkeypatch):
    monkeypatch.delenv("T2V_RT_CACHE")
    monkeypatch.delenv("HOME", raising=False)
    assert cache.configured_root() == (None, "HOME is not set, nor is T2V_RT_CACHE")


def test_the_temporary_cache_is_private_and_refused_when_not_ours(tmp_path, monkeypatch):
    base = tmp_path / "tmp"
    old = os.umask(0)
    try:
        path, why = cache.temp_root()
    finally:
        os.umask(old)
    assert why is None and path == base / f"t2v-rt-{UID}" and os.stat(path).st_mode & 0o777 == 0o700
    os.chmod(path, 0o755)
    assert cache.temp_root() == (path, None) and os.stat(path).st_mode & 0o777 == 0o700
    path.rmdir()
    path.write_text("")
    assert "is not a folder" in cache.temp_root()[1]
    path.unlink()
    path.symlink_to(tmp_path)
    assert "is a symbolic link" in cache.temp_root()[1]
    path.unlink()
    if AS_ROOT:
        path.mkdir()
        os.chown(path, 12345, 12345)
        assert "belongs to another user (uid 12345)" in cache.temp_root()[1]


def test_a_folder_the_user_named_fails_in_one_line_without_falling_back(model, tmp_path,
                                                                        monkeypatch):
    from t2v_rt.compile.export import export_to_folder

    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    with pytest.raises(NotWritable) as e:
        export_to_folder(model, out, ("fp32",))
    assert e.value.exit_code == 2
    assert str(e.value) == (f"cannot write the ONNX export to '{out}' (Not a directory); "
                            "choose a writable --out")
    # full in the middle: named, with its fix, and nothing left behind
    out = tmp_path / "out"
    _failing_write(monkeypatch, out, errno.ENOSPC)

    def write(folder: Path) -> None:
        from t2v_rt.files import atomic_write_bytes

        atomic_write_bytes(folder / "a.engine", b"x" * 10_000)

    with pytest.raises(NotWritable, match=r"cannot write the engines to '.*' \(No space left "
                                          r"on device\); free some space there or choose "
                                          r"another --out"):
        cache.store_in(out, write, "the engines", "--out")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert not (tmp_path / "tmp" / f"t2v-rt-{UID}").exists()        # no silent fallback


# --- manifests: confined to their folder, digests on the bytes loaded ----------------------

def _export_manifest(folder: Path, digest: str, entries: list[dict]) -> None:
    from t2v_rt.compile.graphs import FORMAT, OPSET

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "model_sha256": digest,
                                               "opset": OPSET, "graphs": entries}))


def test_export_manifest_entries_outside_the_folder_or_links_are_ignored(tmp_path):
    digest, folder, data = "d" * 64, tmp_path / "m", os.urandom(1000)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(data)
    folder.mkdir()
    (folder / "style.onnx").symlink_to(outside)
    (folder / "frames-fp32.onnx").write_bytes(data)
    os.mkfifo(folder / "init.onnx")
    entry = {"sha256": sha256_bytes(data), "precision": "fp32"}
    _export_manifest(folder, digest, [
        {**entry, "graph": "style", "path": "style.onnx"},                 # a link
        {**entry, "graph": "step", "path": "../outside.onnx"},             # outside
        {**entry, "graph": "step", "path": str(outside)},                  # absolute
        {**entry, "graph": "init", "path": "init.onnx"},                   # a FIFO: no hang
        {**entry, "graph": "frames", "path": "frames-fp32.onnx"},          # the one valid
    ])
    got = load_exports(folder, digest)
    assert set(got) == {("frames", "fp32")} and got[("frames", "fp32")].data == data


def _engine_manifest(folder: Path, blobs: dict[str, bytes]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return {"model_sha256": "d" * 64, "flavour": "tensorrt_rtx", "version": "1.7.1.116",
            "graphs": list(blobs), "engine_sha256": {k: sha256_bytes(v) for k, v in blobs.items()}}


def test_engine_files_must_be_plain_files_in_their_folder(tmp_path):
    blobs = {"style": os.urandom(500), "frames": os.urandom(700)}
    folder = tmp_path / "engines" / "e"
    manifest = _engine_manifest(folder, blobs)
    (tmp_path / "frames.engine").write_bytes(blobs["frames"])
    (folder / "style.engine").write_bytes(blobs["style"])
    (folder / "frames.engine").symlink_to(tmp_path / "frames.engine")     # right digest, a link
    ok = {"model_sha256": "d" * 64, "flavour": "tensorrt_rtx", "version": "1.7.1.116"}
    why = en.manifest_problem(manifest, folder, **ok)
    assert "frames.engine is missing or not a plain file" in why
    (folder / "frames.engine").unlink()
    (folder / "frames.engine").write_bytes(blobs["frames"])
    assert en.manifest_problem(manifest, folder, **ok) is None
    other = {**manifest, "model_sha256": "0" * 64}
    assert "another model" in en.manifest_problem(other, folder, **ok)


def test_engine_folders_that_are_links_are_passed_over(model, own_cache):
    configured, _ = own_cache
    base = cache.model_folder(model, configured) / "engines"
    real = _engine_manifest(base / "real", {"style": b"s", "frames": b"f"})
    (base / "real" / en.MANIFEST).write_text(json.dumps(real))
    (base / "linked").symlink_to(base / "real")
    assert [f.name for f, _ in en.cached_engines(model)] == ["real"]


def test_the_engine_loader_checks_the_digest_of_the_bytes_it_deserialises(tmp_path):
    from t2v_rt.backends.tensorrt_backend import deserialize_engine
    from t2v_rt.errors import RuntimeUnavailable

    blob = os.urandom(2000)
    (tmp_path / "frames.engine").write_bytes(blob)
    seen = []
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda b: seen.append(b) or "engine")
    trt = types.SimpleNamespace(__version__="10.0.0")
    args = (trt, "tensorrt", runtime, [])
    engine = deserialize_engine(*args, tmp_path / "frames.engine", print, sha256_bytes(blob))
    assert engine == "engine"
    assert seen == [blob]
    with pytest.raises(RuntimeUnavailable, match="differs from its manifest's digest"):
        deserialize_engine(*args, tmp_path / "frames.engine", print, "0" * 64)
    (tmp_path / "link.engine").symlink_to(tmp_path / "frames.engine")
    with pytest.raises(RuntimeUnavailable, match="not a plain file"):
        deserialize_engine(*args, tmp_path / "link.engine", print, sha256_bytes(blob))
    assert seen == [blob]       # nothing refused reached the runtime


# --- TensorRT-RTX's runtime cache ----------------------------------------------------------

RTX = en.runtime_cache_identity("NVIDIA GeForce RTX 4090", (8, 9), "1.7.1.116")
NAME = "runtime-cache-nvidia-geforce-rtx-4090-sm89.bin"


def test_runtime_cache_round_trip_and_missing(tmp_path):
    assert en.read_runtime_cache(tmp_path, NAME, RTX) == (None, None)      # none yet: no line
    blob = os.urandom(4096)
    en.write_runtime_cache(tmp_path, NAME, blob, RTX)
    assert en.read_runtime_cache(tmp_path, NAME, RTX) == (blob, None)
    record = json.loads((tmp_path / en.runtime_cache_record(NAME)).read_text())
    assert record == {**RTX, "sha256": sha256_bytes(blob), "size": 4096}


def _damage(folder: Path, how: str, tmp_path: Path) -> tuple[str, dict]:
    path, name, identity = folder / NAME, NAME, RTX
    if how == "tampered":
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "symlink":
        shutil.move(path, tmp_path / "moved.bin")
        path.symlink_to(tmp_path / "moved.bin")                            # right bytes, a link
    elif how == "outside":
        shutil.copy(path, tmp_path / NAME)
        name = f"../{NAME}"
    elif how == "no record":
        (folder / en.runtime_cache_record(NAME)).unlink()
    elif how == "bad record":
        (folder / en.runtime_cache_record(NAME)).write_text("{")
    elif how == "other version":
        identity = {**RTX, "tensorrt_rtx": "1.8.0.1"}
    elif how == "other gpu":
        identity = en.runtime_cache_identity("NVIDIA GeForce RTX 5090", (12, 0), "1.7.1.116")
    elif how == "a folder":
        path.unlink()
        path.mkdir()
    return name, identity


CASES = {"tampered": "digest differs", "truncated": "digest differs",
         "symlink": "not a plain file", "a folder": "not a plain file",
         "outside": "outside the engine folder",
         "no record": "no readable record", "bad record": "no readable record",
         "other version": "tensorrt_rtx 1.7.1.116, this is 1.8.0.1",
         "other gpu": "gpu NVIDIA GeForce RTX 4090, this is NVIDIA GeForce RTX 5090"}


@pytest.mark.parametrize("how", CASES)
def test_a_runtime_cache_that_does_not_check_out_is_ignored(tmp_path, how):
    folder = tmp_path / "engine"
    en.write_runtime_cache(folder, NAME, os.urandom(4096), RTX)
    name, identity = _damage(folder, how, tmp_path)
    data, why = en.read_runtime_cache(folder, name, identity)
    assert data is None and CASES[how] in why, why


class _FakeRuntimeCache:
    def __init__(self, serialized: bytes = b""):
        self.loaded, self.serialized = [], serialized

    def deserialize(self, blob) -> bool:
        self.loaded.append(bytes(blob))
        return True

    def serialize(self):
        return self.serialized


def _backend(folder: Path, rt_cache, lines: list):
    """The tensorrt backend's runtime-cache code on a CPU: the object without its engines."""
    from t2v_rt.backends.tensorrt_backend import TensorRTBackend, runtime_cache_name

    b = object.__new__(TensorRTBackend)
    b.folder, b._rt_cache, b.log, b._rt_cache_bytes = folder, rt_cache, lines.append, b""
    b._rt_cache_path = folder / runtime_cache_name("NVIDIA GeForce RTX 4090", (8, 9))
    b._rt_identity = RTX
    return b


def test_the_backend_loads_only_a_runtime_cache_that_checks_out(tmp_path):
    folder, blob, lines = tmp_path / "engine", os.urandom(4096), []
    folder.mkdir()
    _backend(folder, _FakeRuntimeCache(blob), lines)._save_runtime_cache()
    assert en.read_runtime_cache(folder, NAME, RTX) == (blob, None) and len(lines) == 1
    good = _FakeRuntimeCache()
    _backend(folder, good, lines)._load_runtime_cache()
    assert good.loaded == [blob]
    _damage(folder, "tampered", tmp_path)
    lines.clear()
    bad = _FakeRuntimeCache()
    _backend(folder, bad, lines)._load_runtime_cache()
    assert bad.loaded == [] and len(lines) == 1
    assert "ignoring the runtime cache" in lines[0] and "digest differs" in lines[0]
