"""The GPU kit (bench/gpu/, issue #13) without a GPU: its plan (the steps' time boxes within
8 minutes, the carried wheels within 60 MiB, what comes back within the device's rules), the
time box itself, the checks of $OUT and the collection into bench/results/. The dry run
(``bash bench/gpu/run.sh --dry-run``, minutes) is the rehearsal; this is its plan."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "gpu"))
import kit  # noqa: E402


@pytest.mark.parametrize("mode", [[], ["--dry-run"]], ids=["device", "dry-run"])
def test_the_plan_passes(mode):
    p = subprocess.run(["bash", "bench/gpu/run.sh", "--plan", *mode], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().endswith("plan: ok")
    for step in kit.STEPS:
        assert f"\n{step.name} " in p.stdout
    assert "carry ['.whl'], timeout_s 540" in p.stdout


def test_time_boxes_add_up_to_eight_minutes():
    assert kit.budget() <= kit.TOTAL_S == 480
    assert kit.DEVICE_TIMEOUT_S - kit.TOTAL_S >= 30 and kit.DEVICE_TIMEOUT_S <= 600
    assert [s.name for s in kit.STEPS] == ["wheels", "build", "facts", "tests", "fused_blocks",
                                           "backends", "encoders", "train_speed", "probes"]
    assert all(s.box >= 10 for s in kit.STEPS)


def test_the_train_suite_plan_fits_the_lease():
    """--suite train (issue #18): the training paths alone; its boxes, the call's timeout and
    what comes back within the device's rules, and its plan passes as the default's does."""
    su = kit.SUITES["train"]
    assert [s.name for s in su.steps] == ["wheels", "source", "facts", "train_speed_generic",
                                          "train_shapes"]
    assert kit.budget(su.steps) <= su.total_s and su.total_s + 30 <= su.timeout_s <= 600
    outs = kit.expected_outputs("gpu", su.steps)
    assert set(outs) == {"record.json", "logs.txt", "train_speed_generic-gpu.json",
                         "train_shapes-gpu.json", "train_shapes-gpu.tar.gz"}
    assert all(kit.OUT_NAME.match(o) for o in outs) and len(outs) <= 8
    p = subprocess.run(["bash", "bench/gpu/run.sh", "--plan", "--suite", "train"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip().endswith("plan: ok"), p.stdout + p.stderr
    assert "bash bench/gpu/run.sh --suite train, carry ['.whl'], timeout_s 590" in p.stdout


def test_wheels_are_exact_and_within_budget():
    wheels = kit.read_wheels()
    assert sum(w.size for w in wheels) <= 60 * 2**20
    assert [w.requirement for w in wheels if w.requirement.startswith("av==")] == ["av==18.1.0"]
    for w in wheels:
        assert w.file.startswith(w.requirement.replace("==", "-")) and w.file.endswith(".whl")
        assert "x86_64" in w.file and ("cp312" in w.file or "abi3" in w.file or "py3-none" in w.file)


def test_a_malformed_wheel_line_is_named(tmp_path):
    bad = tmp_path / "wheels.txt"
    bad.write_text("av==18.1.0 av.whl 12\n")
    with pytest.raises(ValueError, match="wheels.txt:1: expected 'name==version file bytes sha256'"):
        kit.read_wheels(bad)


def test_what_comes_back_fits_the_device_rules():
    outs = kit.expected_outputs("gpu")
    assert len(outs) <= 8 and len(set(outs)) == len(outs)
    assert all(kit.OUT_NAME.match(o) for o in outs)
    assert {"record.json", "logs.txt", "tests.xml", "fused_blocks-gpu.json", "backends-gpu.json",
            "encoders-gpu.json", "train_speed-gpu.json"} == set(outs)


def test_a_step_past_its_box_is_stopped_and_recorded(tmp_path):
    log = tmp_path / "step.log"
    t0 = time.monotonic()
    # ignores the first signal: SIGKILL follows after the grace period
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    status, rc, seconds = kit.run_boxed([sys.executable, "-c", code], 1.5, log, None, signal.SIGINT)
    assert status == "timeout" and rc == -signal.SIGKILL
    assert 1.5 <= seconds < 1.5 + kit.KILL_GRACE_S + 2 and time.monotonic() - t0 < 8
    assert "up" in log.read_text() and "time box of 2 s reached" in log.read_text()
    # early: the leader alone is asked first (pytest then writes its report), before the box
    done = tmp_path / "done"
    code = ("import signal, sys, time\n"
            "def stop(*_):\n    open(sys.argv[1], 'w').write('partial')\n    sys.exit(130)\n"
            "signal.signal(signal.SIGINT, stop)\ntime.sleep(60)\n")
    status, rc, seconds = kit.run_boxed([sys.executable, "-c", code, str(done)], 3, log, None,
                                        signal.SIGINT, early=2)
    assert (status, rc) == ("timeout", 130) and done.read_text() == "partial" and seconds < 2.9
    assert kit.run_boxed([sys.executable, "-c", "raise SystemExit(3)"], 10, log, None, signal.SIGTERM)[:2] \
        == ("failed", 3)


def test_out_checks_name_every_breach(tmp_path):
    (tmp_path / "record.json").write_text(json.dumps({"environment": {
        "device": "NVIDIA H200", "commit": "abc1234", "python": "3.12.3", "torch": "2.11.0"}}))
    assert kit.check_out(tmp_path) == [] and kit.check_records(tmp_path) == []
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(17 * 2**20)
    (tmp_path / "plain.json").write_text(json.dumps({"environment": {"device": "x"}}))
    problems = " | ".join(kit.check_out(tmp_path) + kit.check_records(tmp_path))
    assert "more than 2 folders down" in problems
    assert "bad name.txt: name outside letters" in problems
    assert "big.bin: 17.0 MiB, over 16 MiB" in problems
    assert "13 files, over 8" in problems
    assert "plain.json: environment lacks commit, python, torch" in problems


def test_collect_puts_the_gpu_in_file_names(tmp_path):
    src, dest = tmp_path / "files", tmp_path / "results"
    src.mkdir()
    (src / "record.json").write_text(json.dumps({"environment": {"gpu": "NVIDIA H200"}}))
    for name in ("backends-gpu.json", "tests.xml", "logs.txt"):
        (src / name).write_text("{}")
    assert kit.collect(src, dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == [
        "backends-h200.json", "gpu_kit-h200.json", "gpu_kit-h200.log", "gpu_kit_tests-h200.xml"]
    assert kit.gpu_slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"


def test_the_source_digest_ignores_caches_and_results():
    assert kit.source_digest() == kit.source_digest()
    assert len(kit.source_digest()) == 16


def test_a_failed_build_goes_on_from_source(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    k = kit.Kit(out, True, work)
    log = tmp_path / "build.log"
    log.write_text("-- t2v-rt: nvEncodeAPI.h not found (apt install libffmpeg-nvenc-dev, or set ...)\n")
    r = kit.Result("build", status="ok")
    k.after_build(r, log)               # pip succeeded but without the module: a failed build
    assert r.status == "failed" and "built without the NVENC module" in r.error
    assert k.install["build"]["mode"] == "from source (the build failed): no NVENC module"
    assert (work / "t2v" / "t2v_rt" / "__init__.py").exists()
    assert (work / "t2v" / "t2v_rt" / "kernels" / "upsample_conv_act.py").exists()
    assert "T2V_RT_REQUIRE_NATIVE" not in k.env      # the encoder tests skip, saying why


def test_the_summary_line_of_an_error_is_the_one_that_says_most():
    pip = ("  error: subprocess-exited-with-error\n  ╰─> ModuleNotFoundError: No module named "
           "'scikit_build_core'\nerror: metadata-generation-failed\nhint: See above for details.\n")
    assert kit.headline(pip) == "╰─> ModuleNotFoundError: No module named 'scikit_build_core'"
    assert kit.headline("a\n[kit] time box of 30 s reached: stopped\n") == "[kit] time box of 30 s reached: stopped"
    assert kit.headline("one\ntwo\n") == "two"


def test_train_shapes_refuses_a_machine_without_cuda_in_one_line(tmp_path):
    """bench/gpu/train_shapes.py (the train suite's last step) is the GPU run: without CUDA
    and without --dry-run it says so in one line and exits 2, before it renders anything."""
    p = subprocess.run([sys.executable, "bench/gpu/train_shapes.py", "--budget-s", "30",
                        "--work", str(tmp_path / "w")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "[train_shapes] no CUDA device visible to torch: this is the GPU run (--dry-run "
        "rehearses it on a CPU)"]
    assert not (tmp_path / "w").exists()
