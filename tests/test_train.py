"""A short training run lowers the losses; runs are numbered, saved and resumable; a failure
(bad settings, folders or checkpoints, a full disk, Ctrl-C) is one line and leaves nothing
half-written, and resuming never touches files outside the run folder."""

import errno
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from t2v_rt import cli
from t2v_rt.errors import UsageError
from t2v_rt.models.shapes import train as train_mod
from t2v_rt.models.shapes.config import ModelConfig
from t2v_rt.generators.io import load_generator
from t2v_rt.models.shapes.train import TrainConfig, train

TINY = dict(resolution=32, base_size=4, channels=[64, 32, 16, 8], style_dim=64,
            motion_channels=8, text_dim=32)


def cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path), steps=60, batch_size=8, log_every=10, sample_every=0,
                checkpoint_every=30, adv_start=20, adv_ramp=10, d_warmup=10, lr_g=2e-3, threads=1,
                lr_d=1e-3, model=ModelConfig(**TINY))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_short_run_lowers_losses_and_resumes(tmp_path):
    run = train(cfg(tmp_path))
    assert run.name == "00000-shapes"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    # 10-step windows of 8 clips are noisy: compare the last 20 steps with the first 10.
    assert (rows[-1]["rec"] + rows[-2]["rec"]) / 2 < 0.85 * rows[0]["rec"], rows
    assert rows[-1]["d"] > 0 and rows[-1]["adv"] > 0   # both adversarial terms were active
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 60 and saved["model"]["resolution"] == 32

    ckpt = run / "checkpoint-0000060.safetensors"
    assert int(load_file(str(ckpt))["step"]) == 60
    g = load_generator(run / "generator.safetensors")
    assert g.cfg.resolution == 32

    # Resume: continues from step 60 to 70 in the same folder.
    train(cfg(tmp_path, steps=70, checkpoint_every=10), resume=str(run))
    assert int(load_file(str(run / "checkpoint-0000070.safetensors"))["step"]) == 70
    assert (tmp_path / "00001-shapes").exists() is False
    assert train(cfg(tmp_path), dry_run=True).name == "00001-shapes"


def test_sample_video_is_written(tmp_path):
    import av

    from t2v_rt.models.shapes.generator import Generator
    from t2v_rt.models.shapes.samples import SAMPLE_PROMPTS, write_samples

    g = Generator(ModelConfig(**TINY)).eval()
    path = tmp_path / "s.mp4"
    write_samples(g, path, torch.device("cpu"), seconds=1.0, fps=8)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 8
    assert frames[0].width == 32 * len(SAMPLE_PROMPTS) // 2 and frames[0].height == 64


def test_box_weight_covers_each_shape_and_its_bounding_box():
    from t2v_rt.models.shapes.train import _box_mask
    from t2v_rt.models.shapes import spec
    from t2v_rt.models.shapes.dataset import ShapesClips

    b = ShapesClips(seed=3).batch(0, 12)
    box = _box_mask(b.scenes, b.centres, 64)
    assert box.shape == b.coverage.shape
    assert bool((box >= (b.coverage > 0).float()).all())          # every shape pixel is inside
    for i, scene in enumerate(b.scenes):
        side = spec.SIZES[scene.size] * 64 + 4                     # box + 2 pixels a side
        area = box[i].sum((1, 2, 3))                                # whole pixels in it
        assert bool((area <= math.ceil(side) ** 2).all()), (area, side)
        assert bool((area >= math.floor(side) ** 2).all()), (area, side)


def test_target_rendered_at_a_pose_is_the_clip_moved_there():
    from t2v_rt.models.shapes.dataset import ShapesClips, render_clips

    b = ShapesClips(seed=5).batch(0, 6)
    frames, cov = render_clips(b.scenes, b.centres, 64)
    torch.testing.assert_close(frames, b.frames)          # at the true centre: the clip itself
    torch.testing.assert_close(cov, b.coverage)
    moved, _ = render_clips(b.scenes, b.centres + torch.tensor([3 / 64, 0.0]), 64)
    # Three whole pixels to the right: the same picture, shifted (a sub-sample on a boundary
    # may round the other way).
    diff = (moved[..., 3:] - b.frames[..., :-3]).abs()
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.5
    assert float((moved - b.frames).abs().mean()) > 1e-2           # and it did move


# --- issue #16: nothing lost, nothing escapes -------------------------------------------------
# Runs are kept short on 2 shared CPU cores: a 16-pixel model, one thread, no extra caption
# batch, no sample videos; a step then takes a few milliseconds.


CMD = [sys.executable, "-m", "t2v_rt", "train"]
MICRO = dict(resolution=16, base_size=4, channels=[16, 8, 8], style_dim=16, motion_channels=2,
             text_dim=8)
FAST = {"model": MICRO, "threads": 1, "choice_batch": 0, "sample_every": 0, "log_every": 1}
PROGRESS = ("run ", "step ", "resumed ")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fast(tmp_path):
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(FAST))
    return str(path)


def micro(tmp_path, **kw):
    return TrainConfig(**{**FAST, "model": ModelConfig(**MICRO), "run_dir": str(tmp_path / "runs"),
                          "batch_size": 2, **kw})


def train_cli(*args, timeout=120, **kw):
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, timeout=timeout, **kw)


def error_line(err: str, code: int, rc: int, *needles: str) -> str:
    """The one line a failure prints (progress lines aside), checked: no traceback, its needles."""
    assert rc == code, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith(PROGRESS)]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def main_line(capsys, argv, code, *needles):
    """``t2v-rt train ...`` in this process (cli.main: the CLI's own error handling)."""
    rc = cli.main(["train", *map(str, argv)])
    err = capsys.readouterr().err
    return error_line(err, code, rc, *needles)


def files(folder):
    """name -> sha256 of every file below ``folder`` (hidden temporaries included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temporaries(folder):
    return [p.name for p in folder.rglob(".*")] == []


# 1. --resume FILE never treats the file's folder as a run folder -----------------------------

def test_resume_from_a_checkpoint_file_continues_in_a_new_run_folder(tmp_path, fast):
    runs = tmp_path / "runs"
    proc = train_cli("--config", fast, "--steps", 2, "--batch-size", 2, "--run-dir", runs)
    assert proc.returncode == 0, proc.stderr.decode()
    first = runs / "00000-shapes"
    elsewhere = tmp_path / "downloads"            # not a run folder: the user's own files
    elsewhere.mkdir()
    (elsewhere / "checkpoint-0000001.safetensors").write_bytes(b"somebody else's checkpoint")
    (elsewhere / "generator.safetensors").write_bytes(b"somebody else's generator")
    shutil.copy(first / "checkpoint-0000002.safetensors", elsewhere / "some-checkpoint.safetensors")
    before, before_first = files(elsewhere), files(first)

    proc = train_cli("--config", fast, "--steps", 4, "--batch-size", 2, "--run-dir", runs,
                     "--resume", elsewhere / "some-checkpoint.safetensors",
                     "--set", "checkpoint_every=1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert files(elsewhere) == before                 # nothing deleted, nothing overwritten
    assert files(first) == before_first
    second = runs / "00001-shapes"
    assert sorted(p.name for p in second.glob("checkpoint-*")) == [
        "checkpoint-0000003.safetensors", "checkpoint-0000004.safetensors"]
    assert int(load_file(str(second / "checkpoint-0000004.safetensors"))["step"]) == 4
    record = json.loads((second / "run.json").read_text())
    assert record["resumed_from"][0]["step"] == 2
    assert record["resumed_from"][0]["checkpoint"].endswith("some-checkpoint.safetensors")
    assert (second / "generator.safetensors").is_file()


def test_resume_continues_a_run_folder_and_prunes_only_its_own_checkpoints(tmp_path):
    first = train(micro(tmp_path, steps=2, checkpoint_every=1))
    stray = first / "checkpoint-0000000.safetensors"        # put there by someone else
    stray.write_bytes(b"not this run's")
    # the folder: goes on in it; only the run's own (listed) checkpoints are pruned
    assert train(micro(tmp_path, steps=4, checkpoint_every=1), resume=str(first)) == first
    assert sorted(p.name for p in first.glob("checkpoint-*")) == [
        "checkpoint-0000000.safetensors", "checkpoint-0000003.safetensors",
        "checkpoint-0000004.safetensors"]
    assert stray.read_bytes() == b"not this run's"
    assert (first / "config-from-0000002.json").is_file()
    # its latest checkpoint, by file: the same run goes on
    assert train(micro(tmp_path, steps=5), resume=str(first / "checkpoint-0000004.safetensors")) == first
    # an older one (a branch) or a copy: a new run folder; the run keeps its files
    keep = files(first)
    branch = train(micro(tmp_path, steps=6), resume=str(first / "checkpoint-0000004.safetensors"))
    assert branch.name == "00001-shapes" and files(first) == keep
    copy = tmp_path / "copy.safetensors"
    shutil.copy(first / "checkpoint-0000005.safetensors", copy)
    assert train(micro(tmp_path, steps=6), resume=str(copy)).name == "00002-shapes"
    assert files(first) == keep
    # a run folder from before run.json resumes in place; its checkpoints are not touched
    (first / "run.json").unlink()
    old = files(first)
    assert train(micro(tmp_path, steps=9, checkpoint_every=1), resume=str(first)) == first
    assert all(files(first).get(k) == v for k, v in old.items() if k.startswith("checkpoint-"))
    # a folder that is no run folder is refused, untouched
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(copy, plain / "checkpoint-0000005.safetensors")
    with pytest.raises(UsageError, match="not a run folder"):
        train(micro(tmp_path, steps=9), resume=str(plain))


# 2. environment failures and bad input: one line naming the problem and the fix ---------------

@pytest.mark.parametrize("case", ["below a file", "a file", "name too long"])
def test_a_run_dir_that_cannot_be_made_is_one_line(tmp_path, fast, case):
    # Unwritable without chmod (tests may run as root): a path below a regular file (ENOTDIR),
    # a regular file in the way, a name longer than the file system takes (ENAMETOOLONG).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    run_dir, reason = {"below a file": (blocker / "runs", "Not a directory"),
                       "a file": (blocker, "it is a file"),
                       "name too long": (tmp_path / ("x" * 300), "File name too long")}[case]
    proc = train_cli("--config", fast, "--steps", 2, "--batch-size", 2, "--run-dir", run_dir)
    error_line(proc.stderr.decode(), 2, proc.returncode, str(run_dir), reason, "--run-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "fast.json"]


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"stepz": 10}', "unknown setting 'stepz'"),
    ('{"steps": "ten"}', "'steps' must be an integer"),
    ('{"lr_g": NaN}', "NaN"),
    ('{"batch_size": 100000}', "'batch_size' must be in [1, 4096]"),
    ('{"weight_box": 1}', "'weight_box' must be true or false"),
    ('{"model": {"channels": [1000000]}}', "model: 'channels"),
    ('{"model": {"architecture": "mocogan"}}', "trains the 'shapes' architecture only"),
    ('{"name": "../../elsewhere"}', "'name' names the run folders"),
    ("\xff", "not UTF-8"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, text, needle):
    path = tmp_path / "config.json"
    path.write_text(text, encoding="latin-1")
    main_line(capsys, ["--config", path, "--run-dir", tmp_path / "runs"], 2, needle, str(path))
    main_line(capsys, ["--config", tmp_path / "missing.json"], 2, "No such file or directory")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, needle", [
    (["--steps", "0"], "--steps: 'steps' must be in [1, 1e+08], got 0"),
    (["--batch-size", "-1"], "--batch-size: 'batch_size' must be in [1, 4096], got -1"),
    (["--set", "lr_g=NaN"], "'lr_g' must be a finite number, got NaN"),
    (["--set", "lr_d=Infinity"], "'lr_d' must be a finite number, got Infinity"),
    (["--set", "adv_weight=-Infinity"], "'adv_weight' must be a finite number, got -Infinity"),
    (["--set", "lr_g=1e999"], "'lr_g' must be finite"),
    (["--set", "steps=1e12"], "'steps' must be in [1, 1e+08]"),
    (["--set", "batch_size=1000000"], "'batch_size' must be in [1, 4096]"),
    (["--set", "lr_g=-0.1"], "'lr_g' must be in [0, 1]"),
    (["--set", "log_every=0"], "'log_every' must be in [1, 1e+08]"),
    (["--set", "checkpoint_every=0"], "'checkpoint_every' must be in [1, 1e+08]"),
    (["--set", "ema_halflife_steps=0"], "'ema_halflife_steps' must be in"),
    (["--set", "threads=-3"], "'threads' must be in [0, 1024]"),
    (["--set", "steps=ten"], "'steps' must be an integer"),
    (["--set", "frames_per_clip=32", "--set", "batch_size=4096",
      "--set", 'model={"resolution":1024,"base_size":4,"channels":[8,8,8,8,8,8,8,8,8]}'],
     "pixels a step"),
    (["--set", "device=tpu"], "'device' must be one of auto, cpu, cuda"),
    (["--set", "nope=1"], "expected KEY=VALUE"),
])
def test_bad_settings_are_one_line_naming_the_setting(tmp_path, capsys, args, needle):
    main_line(capsys, [*args, "--run-dir", tmp_path / "runs"], 2, needle)
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_on_the_real_command_line(tmp_path):
    for args, needle in ((["--steps", "0"], "'steps' must be in [1, 1e+08]"),
                         (["--set", "lr_g=NaN"], "'lr_g' must be a finite number, got NaN")):
        proc = train_cli(*args, "--run-dir", tmp_path / "runs")
        error_line(proc.stderr.decode(), 2, proc.returncode, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def checkpoint(tmp_path):
    """A real checkpoint of the micro model (step 1) and its run folder."""
    run = train(micro(tmp_path / "made", steps=1))
    return run / "checkpoint-0000001.safetensors"


def test_a_bad_resume_checkpoint_is_one_line(tmp_path, capsys, fast, checkpoint):
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    data = checkpoint.read_bytes()
    (bad / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "random.safetensors").write_bytes(os.urandom(4096))
    (bad / "empty.safetensors").write_bytes(b"")
    save_file({"step": torch.tensor(1), "G.nonsense": torch.zeros(3)}, str(bad / "wrong.safetensors"))
    # another model: same architecture, other widths (its own run's checkpoint)
    other = train(micro(tmp_path / "other", steps=1,
                        model=ModelConfig(**{**MICRO, "channels": [32, 8, 8]})))
    cases = [(bad / "truncated.safetensors", "not a readable safetensors checkpoint"),
             (bad / "random.safetensors", "not a readable safetensors checkpoint"),
             (bad / "empty.safetensors", "not a readable safetensors checkpoint"),
             (bad / "wrong.safetensors", "'G.nonsense' [3], which this model does not have"),
             (checkpoint.parent / "generator.safetensors", "holds the generator alone"),
             (other / "checkpoint-0000001.safetensors", f"--config {other / 'config.json'}")]
    runs = tmp_path / "runs"
    for path, needle in cases:
        main_line(capsys, ["--config", fast, "--steps", 3, "--run-dir", runs, "--resume", path],
                  2, str(path), needle)
    main_line(capsys, ["--config", fast, "--steps", 1, "--run-dir", runs, "--resume", checkpoint],
              2, "is at step 1, and this run is 1 steps long; pass --steps above 1")
    assert not runs.exists()


_REAL_WRITE = train_mod._write_file


def _fail_writes(monkeypatch, name: str, exc: BaseException):
    """Make the write of the file called ``name`` stop half-way with ``exc`` (in-process
    injection: the disk fills, or Ctrl-C lands, in the middle of that write)."""
    real = _REAL_WRITE

    def write(tmp, data):
        if tmp.name.startswith(f".{name}."):
            tmp.write_bytes(data[: len(data) // 2])
            raise exc
        real(tmp, data)

    monkeypatch.setattr(train_mod, "_write_file", write)


def test_a_full_disk_leaves_no_half_checkpoint(tmp_path, capsys, fast, monkeypatch):
    runs = tmp_path / "runs"
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    # at the first checkpoint: the new run folder goes again, nothing is left
    _fail_writes(monkeypatch, "checkpoint-0000002.safetensors", enospc)
    main_line(capsys, ["--config", fast, "--steps", 2, "--batch-size", 2, "--run-dir", runs], 1,
              "No space left on device", str(runs / "00000-shapes" / "checkpoint-0000002"),
              "free space", "run folder is removed")
    assert list(runs.iterdir()) == []
    # at a later one: the earlier checkpoint stays whole, and the line says how to go on
    _fail_writes(monkeypatch, "checkpoint-0000003.safetensors", enospc)
    main_line(capsys, ["--config", fast, "--steps", 3, "--batch-size", 2, "--run-dir", runs,
                       "--set", "checkpoint_every=2"], 1, "No space left on device",
              "the last checkpoint is", "continue with: t2v-rt train --resume")
    run = runs / "00000-shapes"
    assert no_temporaries(runs)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000002.safetensors"]
    assert int(load_file(str(run / "checkpoint-0000002.safetensors"))["step"]) == 2


def test_a_file_size_limit_mid_run_is_one_line(tmp_path, fast):
    # A real failing write in a real process: RLIMIT_FSIZE makes writes past 1 MB fail with
    # EFBIG (SIGXFSZ ignored), like a disk that fills up; the micro checkpoint is ~8 MB.
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    runs = tmp_path / "runs"
    proc = train_cli("--config", fast, "--steps", 2, "--batch-size", 2, "--run-dir", runs,
                     preexec_fn=limit)
    error_line(proc.stderr.decode(), 1, proc.returncode, "File too large",
               str(runs / "00000-shapes" / "checkpoint-0000002.safetensors"), "ulimit")
    assert list(runs.iterdir()) == []


# 3. Ctrl-C: the step is saved whole, exit 130, one line ----------------------------------------

def test_ctrl_c_saves_the_last_step_and_exits_130(tmp_path, fast):
    runs = tmp_path / "runs"
    log_path = tmp_path / "stderr.txt"
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([*CMD, "--config", fast, "--steps", "1000000", "--batch-size", "2",
                                 "--set", "checkpoint_every=1000000", "--run-dir", str(runs)],
                                stderr=err, stdout=subprocess.DEVNULL)
        try:
            deadline = time.time() + 90
            while b"step 3/" not in log_path.read_bytes():
                assert proc.poll() is None and time.time() < deadline, log_path.read_text()
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    line = error_line(log_path.read_text(), 130, rc, "interrupted at step", "saved",
                      "continue with: t2v-rt train --resume")
    step = int(line.split("interrupted at step ")[1].split()[0])
    run = runs / "00000-shapes"
    ckpt = run / f"checkpoint-{step:07d}.safetensors"
    assert int(load_file(str(ckpt))["step"]) == step >= 3
    assert no_temporaries(runs)
    assert json.loads((run / "run.json").read_text())["checkpoints"] == [ckpt.name]


def test_a_second_ctrl_c_mid_write_leaves_nothing_half_written(tmp_path, capsys, fast, monkeypatch):
    runs = tmp_path / "runs"
    # before any checkpoint: the new run folder goes again
    _fail_writes(monkeypatch, "checkpoint-0000002.safetensors", KeyboardInterrupt())
    main_line(capsys, ["--config", fast, "--steps", 2, "--batch-size", 2, "--run-dir", runs], 130,
              "interrupted at step 2 of 2", "run folder is removed")
    assert list(runs.iterdir()) == []
    # after one: it stays, whole
    _fail_writes(monkeypatch, "checkpoint-0000003.safetensors", KeyboardInterrupt())
    main_line(capsys, ["--config", fast, "--steps", 3, "--batch-size", 2, "--run-dir", runs,
                       "--set", "checkpoint_every=2"], 130, "interrupted at step 3 of 3",
              "checkpoint-0000002.safetensors", "continue with")
    assert no_temporaries(runs)
    assert int(load_file(str(runs / "00000-shapes" / "checkpoint-0000002.safetensors"))["step"]) == 2
