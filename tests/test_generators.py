"""Generators t2v-rt did not ship (issue #14): the registry and plugins, bounded configs, every
registered architecture end to end (init-model, stream on torch and onnxruntime, decoded),
the recurrent form's batching invariance, and the import boundary between the runtime core
and the model families."""

import ast
import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from t2v_rt.errors import ConfigError
from t2v_rt.generators.io import check_fits, init_generator, load_generator, read_config, save_generator
from t2v_rt.generators.registry import BUILTIN, entries, get
from test_cli import assert_one_clean_line, decode, run

ROOT = Path(__file__).resolve().parent.parent
ARCHS = sorted(BUILTIN)
# Each built-in's tiny preset, and variants "ARCH/VARIANT": init-model --set overrides.
VARIANTS = {"stylegan-v/deep-xy": ("stylegan-v", ["block_convs=2", "coordinates=absolute"])}
MODELS = ARCHS + list(VARIANTS)
PROMPTS = {"shapes": "a red circle moving left and right", "mocogan": "a red ball moving left",
           "stylegan-v": "a blue square on a white background"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each built-in architecture's tiny preset and each variant, written by init-model (the
    CLI)."""
    folder = tmp_path_factory.mktemp("tiny")
    out = {}
    for name in MODELS:
        arch, sets = VARIANTS.get(name, (name, []))
        path = folder / f"{name.replace('/', '-')}.safetensors"
        proc = run("init-model", arch, "--preset", "tiny", "-o", str(path), "--seed", "3",
                   *[a for kv in sets for a in ("--set", kv)])
        assert proc.returncode == 0, proc.stderr.decode()
        assert "randomly initialised" in proc.stderr.decode()
        out[name] = path
    cfg = read_config(out["stylegan-v/deep-xy"])
    assert cfg.block_convs == 2 and cfg.coordinates == "absolute"
    return out


def test_models_lists_every_builtin_with_its_origin():
    proc = run("models")
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    for arch in ARCHS:
        line = next(x for x in text.splitlines() if x.startswith(arch + " "))
        assert "built-in" in line and ("continuous" in line or "recurrent" in line)
    assert get("mocogan").config_class.FORM == "recurrent"
    assert get("stylegan-v").config_class.FORM == "continuous"


@pytest.mark.parametrize("arch", MODELS)
def test_every_architecture_streams_on_torch_and_onnxruntime(tiny, arch):
    """init-model -> stream on both CPU backends: decodes to the frame count at the model's
    default rate, the two backends agree, and the picture moves."""
    cfg = read_config(tiny[arch])
    decoded = {}
    for backend in ("torch", "onnxruntime"):
        proc = run("stream", PROMPTS[arch.split("/")[0]], "--model", str(tiny[arch]),
                   "--backend", backend,
                   "--frames", "8", "--size", "32", "--no-realtime", "--format", "nut",
                   "--quality", "1", timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        frames, rate = decode(proc.stdout, "nut")
        assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
        assert Fraction(rate) == cfg.default_fps
        decoded[backend] = torch.from_numpy(__import__("numpy").stack(frames)).float()
    assert (decoded["torch"] - decoded["onnxruntime"]).abs().mean() < 1.0   # near-lossless x264
    if arch != "shapes":    # (shapes starts from zero palettes and pose: a gray frame untrained)
        assert (decoded["torch"][0] - decoded["torch"][-1]).abs().mean() > 0   # frames move


def _video_frames(backend, prompt, times_chunks):
    from t2v_rt.pipeline import Video

    video = Video(backend, prompt, seed=5)
    return torch.cat([torch.as_tensor(video.frames_at(t)) for t in times_chunks])


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
def test_recurrent_stream_is_the_same_in_one_batch_or_many(tiny, backend_name):
    """A recurrent generator keeps its state between batches: 12 frames at once equal the same
    12 in batches of 1, 4 and 7, on each backend; and the two backends agree."""
    from t2v_rt.backends import create_backend
    from t2v_rt.pipeline import frame_times

    backend = create_backend(backend_name, tiny["mocogan"])
    fps = read_config(tiny["mocogan"]).native_fps
    t = frame_times(0, 12, fps)
    one = _video_frames(backend, PROMPTS["mocogan"], [t])
    many = _video_frames(backend, PROMPTS["mocogan"], [t[:1], t[1:5], t[5:12]])
    torch.testing.assert_close(one, many, atol=1e-6, rtol=0)
    assert not torch.allclose(one[0], one[-1])
    ref = _video_frames(create_backend("torch", tiny["mocogan"]), PROMPTS["mocogan"], [t])
    torch.testing.assert_close(one, ref, atol=1e-4, rtol=1e-4)


def test_recurrent_output_rate_maps_onto_native_steps(tiny):
    """At twice the native rate each step is shown twice; at the native rate, once."""
    from t2v_rt.backends import create_backend
    from t2v_rt.pipeline import Video, frame_times

    backend = create_backend("torch", tiny["mocogan"])
    fps = read_config(tiny["mocogan"]).native_fps
    native = torch.as_tensor(Video(backend, PROMPTS["mocogan"], 1).frames_at(frame_times(0, 4, fps)))
    double = torch.as_tensor(Video(backend, PROMPTS["mocogan"], 1).frames_at(frame_times(0, 8, fps * 2)))
    torch.testing.assert_close(double[0::2], native)
    torch.testing.assert_close(double[1::2], native)


def test_a_config_with_another_latent_size_streams(tmp_path):
    """The config is the single source of truth: latent_dim 32 sizes the latent the pipeline draws."""
    path = tmp_path / "z32.safetensors"
    proc = run("init-model", "shapes", "--preset", "tiny", "--set", "latent_dim=32", "-o", str(path))
    assert proc.returncode == 0, proc.stderr.decode()
    assert read_config(path).latent_dim == 32
    proc = run("stream", "a blue square", "--model", str(path), "--backend", "torch",
               "--frames", "3", "--no-realtime", "--size", "32", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(decode(proc.stdout, "matroska")[0]) == 3


HOSTILE = [
    ("shapes", {"channels": [10**6] * 5}, "'channels[0]' must be in"),
    ("shapes", {"text_layers": 10**6}, "'text_layers' must be in"),
    ("shapes", {"resolution": 10**9}, "'resolution' must be in"),
    ("shapes", {"latent_dim": 10**12}, "'latent_dim' must be in"),
    ("shapes", {"channels": [8] * 1000}, "'channels' must have"),
    ("shapes", {"channels": [8] * 10**6}, "a config is a small JSON object"),
    ("shapes", {"channels": "many"}, "'channels' must be a list"),
    ("shapes", {"harmonics": True}, "'harmonics' must be an integer"),
    ("shapes", {"surprise": 1}, "unknown key 'surprise'"),
    ("mocogan", {"channels": [10**6, 10**6]}, "must be in"),
    ("stylegan-v", {"mapping_layers": 10**6}, "'mapping_layers' must be in"),
    ("nonexistent", {}, "unknown architecture 'nonexistent'"),
]


@pytest.mark.parametrize("arch,fields,needle", HOSTILE, ids=lambda v: str(v)[:30])
def test_hostile_configs_are_refused_fast_with_one_line(tmp_path, tiny, arch, fields, needle):
    """Bounds are checked before anything is built: in well under a second, one line, exit 2."""
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(tiny["shapes"].read_bytes())
    weights.with_suffix(".json").write_text(json.dumps({"architecture": arch, **fields}))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        check_fits(read_config(weights), weights)
    assert time.perf_counter() - start < 1.0
    proc = run("stream", "a red ball", "--model", str(weights), "--frames", "1")
    assert_one_clean_line(proc, needle.split("'")[1] if "'" in needle else needle)


@pytest.mark.parametrize("text,needle", [
    ("[]", "must be a JSON object"), ("null", "must be a JSON object"),
    ('{"architecture": 7}', "'architecture' must be a name"),
    ('{"resolution": NaN}', "NaN"), ("{not json", "not valid JSON"),
])
def test_malformed_configs_are_one_line(tmp_path, tiny, text, needle):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(tiny["shapes"].read_bytes())
    weights.with_suffix(".json").write_text(text)
    assert_one_clean_line(run("stream", "a red ball", "--model", str(weights), "--frames", "1"),
                          needle)


def test_a_config_within_bounds_that_does_not_fit_its_weights_is_refused_before_allocation(tmp_path, tiny):
    """Default-size widths on tiny weights: found from the header and a meta-device plan, with
    no tensor allocated (fast), one line naming the first tensor that differs."""
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(tiny["stylegan-v"].read_bytes())
    weights.with_suffix(".json").write_text(json.dumps({"architecture": "stylegan-v"}))  # defaults
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="do not fit their config"):
        check_fits(read_config(weights), weights)
    assert time.perf_counter() - start < 2.0
    assert_one_clean_line(run("stream", "a red ball", "--model", str(weights), "--frames", "1"),
                          "do not fit their config")


def test_save_load_round_trip_keeps_the_architecture(tmp_path):
    for arch in ARCHS:
        g = init_generator(arch, "tiny", seed=1)
        save_generator(g, tmp_path / f"{arch}.safetensors")
        assert json.loads((tmp_path / f"{arch}.json").read_text())["architecture"] == arch
        h = load_generator(tmp_path / f"{arch}.safetensors")
        assert type(h) is type(g) and h.config == g.config
        for k, v in g.state_dict().items():
            torch.testing.assert_close(h.state_dict()[k], v, rtol=0, atol=0)


def test_init_model_refuses_bad_requests_in_one_line(tmp_path):
    assert_one_clean_line(run("init-model", "nope", "-o", str(tmp_path / "a.safetensors")),
                          "unknown architecture 'nope'")
    assert_one_clean_line(run("init-model", "shapes", "-o", str(tmp_path / "a.bin")),
                          "must end in .safetensors")
    assert_one_clean_line(run("init-model", "shapes", "--preset", "huge", "-o",
                              str(tmp_path / "a.safetensors")), "no preset 'huge'")
    assert_one_clean_line(run("init-model", "shapes", "--set", "text_layers=1000000", "-o",
                              str(tmp_path / "a.safetensors")), "'text_layers' must be in")
    assert_one_clean_line(run("init-model", "shapes", "--set", "style_dim=NaN", "-o",
                              str(tmp_path / "a.safetensors")), "NaN")
    assert not list(tmp_path.iterdir())     # nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("arch", MODELS)
def test_every_architecture_builds_tensorrt_rtx_engines(tiny, arch, tmp_path):
    """TensorRT-RTX builds an engine of every graph (recurrent: init and step too) on the CPU."""
    pytest.importorskip("tensorrt_rtx")
    from t2v_rt.compile.engine import Profile, build_engines, read_manifest
    from t2v_rt.compile.export import graph_names

    folder = build_engines(tiny[arch], "fp32", Profile(1, 2, 4), out=tmp_path / "engines")
    manifest = read_manifest(folder)
    want = graph_names(read_config(tiny[arch]).FORM)
    assert tuple(manifest["graphs"]) == want
    for name in want:
        assert (folder / f"{name}.engine").stat().st_size > 1000


def test_the_example_plugin_installs_through_its_entry_point_and_streams(tmp_path):
    """examples/t2v-rt-example-plugin, pip-installed (no t2v-rt change), is listed, initialised
    and streamed by the CLI."""
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(site),
                          str(ROOT / "examples" / "t2v-rt-example-plugin")],
                         capture_output=True, timeout=300)
    assert pip.returncode == 0, pip.stderr.decode()
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    models = run("models", env=env)
    line = next(x for x in models.stdout.decode().splitlines() if x.startswith("example-gan"))
    assert "t2v-rt-example-plugin 0.1.0" in line
    weights = tmp_path / "ex.safetensors"
    proc = run("init-model", "example-gan", "--preset", "tiny", "-o", str(weights), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    for backend in ("torch", "onnxruntime"):
        proc = run("stream", "a red ball", "--model", str(weights), "--backend", backend,
                   "--frames", "4", "--no-realtime", "--size", "32", env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        assert len(decode(proc.stdout, "matroska")[0]) == 4
    # without the plugin on the path: one line naming the group to install from
    assert_one_clean_line(run("stream", "a red ball", "--model", str(weights), "--frames", "1"),
                          "unknown architecture 'example-gan'")


# --- the boundary: nothing in the runtime core imports a model family ----------------------

def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts[0:1] = ["t2v_rt", "kernels"]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names, at any depth (function-level too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_the_runtime_core_imports_no_model_family():
    """Walk every import of the core (generators, pipeline, backends, compile, encode, doctor,
    errors, files, kernels, data, serve, training, text encoders): none reaches t2v_rt.models.
    The CLI is the front door: only its shapes-world commands (eval, train, dataset
    render-shapes) import that family, inside the command."""
    files = [p for p in (ROOT / "t2v_rt").rglob("*.py") if "models" not in p.parts]
    files += list((ROOT / "kernels").glob("*.py"))
    offenders = []
    for path in files:
        bad = sorted(m for m in _imports(path) if m.startswith("t2v_rt.models"))
        if not bad:
            continue
        if path.name == "cli.py":
            tree = ast.parse(path.read_text())
            top = {m for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                   for m in _imports_of(node)}
            allowed = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                       and f.name in ("cmd_eval", "cmd_train", "cmd_dataset")}
            users = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                     and any(m.startswith("t2v_rt.models") for n in ast.walk(f)
                             if isinstance(n, (ast.Import, ast.ImportFrom)) for m in _imports_of(n))}
            if not any(m.startswith("t2v_rt.models") for m in top) and users <= allowed:
                continue
        offenders.append(f"{_module_name(path)}: {', '.join(bad)}")
    assert not offenders, offenders
    # and importing the core for real loads no model family
    code = ("import sys, t2v_rt.pipeline, t2v_rt.backends, t2v_rt.compile.export, "
            "t2v_rt.compile.engine, t2v_rt.encode, t2v_rt.generators.io, t2v_rt.doctor, t2v_rt.cli; "
            "print([m for m in sys.modules if m.startswith('t2v_rt.models')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def _imports_of(node) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if node.module and node.level == 0:
        return {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return set()
