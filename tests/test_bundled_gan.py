"""The bundled models trained by ``t2v-rt train --data`` (issue #18): ``stylegan-v`` generators
trained adversarially on 5,000 clips that ``t2v-rt dataset render-shapes`` wrote, one reading
prompts with the vocabulary learnt from the captions (``stylegan-v-shapes``), one through the
frozen pretrained sentence encoder (``stylegan-v-shapes-minilm``); model card:
docs/models/stylegan-v-shapes.md.

Each ships in the package beside its ONNX graphs, is named with ``--model NAME``, streams on
every CPU backend (torch, onnxruntime from the shipped graphs with nothing exported, triton
under the interpreter) with the same frames, and a small eval reproduces its card's table
(same method as tests/test_bundled_model.py). The vocabulary model refuses a word its captions
never had, with the closest known one; the encoder model streams such a prompt.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from t2v_rt.errors import UsageError
from t2v_rt.generators.io import bundled_models, load_generator, read_config
from test_bundled_model import margin
from test_cli import assert_one_clean_line, run

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY, ENCODER = "stylegan-v-shapes", "stylegan-v-shapes-minilm"
NAMES = (VOCABULARY, ENCODER)
PROMPT = "a large red circle moving left and right slowly on a black background"
UNSEEN = "a crimson sphere drifting side to side"
N = 60


def _ready(name: str, request) -> None:
    if name == ENCODER:
        request.getfixturevalue("encoder_exported")


@pytest.mark.parametrize("name", NAMES)
def test_it_ships_in_the_package_with_its_graphs_and_is_listed(name):
    weights = bundled_models()[name]
    folder = weights.parent / f"{name}-onnx"
    for path in (weights, weights.with_suffix(".json"), folder / "style.onnx",
                 folder / "frames-fp32.onnx", folder / "export.json"):
        assert path.is_file(), path
        assert path.stat().st_size < 20 * 2**20, path
    config = read_config(weights)
    assert config.ARCH == "stylegan-v" and config.resolution == 64
    assert bool(config.text_encoder) == (name == ENCODER)
    listing = run("models").stdout.decode()
    line = next(x for x in listing.splitlines() if x.startswith(name + " "))
    assert "stylegan-v, 64x64" in line


def _stream(name: str, prompt: str, backend: str) -> tuple[list[np.ndarray], str]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "t2v_rt", "stream", prompt, "--model", name,
                           "--backend", backend, "--frames", "4", "--no-realtime",
                           "--size", "64", "--encoder", "raw", "--format", "y4m"],
                          capture_output=True, timeout=300, env=env)
    assert proc.returncode == 0, (backend, proc.stderr.decode()[-2000:])
    with av.open(io.BytesIO(proc.stdout)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, proc.stderr.decode()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_it_streams_on_every_cpu_backend_with_the_same_frames(name, request):
    """torch, onnxruntime (the shipped graphs: nothing is exported) and triton (its fused
    kernels under TRITON_INTERPRET=1): four uncompressed Y4M frames each, equal within the
    rounding of fp32 arithmetic in another order (through 4:2:0 chroma and back to RGB)."""
    _ready(name, request)
    prompt = UNSEEN if name == ENCODER else PROMPT
    got = {b: _stream(name, prompt, b) for b in ("torch", "onnxruntime", "triton")}
    assert "exporting" not in got["onnxruntime"][1], got["onnxruntime"][1]
    ref = np.stack(got["torch"][0]).astype(int)
    assert ref.shape[0] == 4 and ref.std() > 10          # a picture, not a flat frame
    for backend, (frames, _) in got.items():
        diff = np.abs(np.stack(frames).astype(int) - ref)
        assert diff.mean() < 0.5 and diff.max() <= 6, (backend, diff.mean(), diff.max())


def test_the_vocabulary_model_reads_every_eval_prompt_and_refuses_unknown_words():
    from t2v_rt.models.shapes.evaluate import contract_samples

    front = read_config(bundled_models()[VOCABULARY]).front_end()
    for s in contract_samples(600, seed=0):
        front.check(s.prompt)
    with pytest.raises(UsageError, match="unknown word 'bal'.*did you mean 'ball'"):
        front.check("a red bal")
    proc = run("stream", UNSEEN, "--model", VOCABULARY, "--frames", "1")
    assert_one_clean_line(proc, "unknown word 'crimson'")


CARDS = [(VOCABULARY, f"eval-{VOCABULARY}.json"), (ENCODER, f"eval-{ENCODER}.json"),
         (ENCODER, f"eval-{ENCODER}-unseen-words.json")]


@pytest.mark.slow
@pytest.mark.parametrize("name,card_file", CARDS)
def test_a_small_eval_reproduces_its_model_card(name, card_file, request):
    from t2v_rt.backends import create_backend
    from t2v_rt.models.shapes.evaluate import PROMPT_SETS, evaluate, model_source

    _ready(name, request)
    card = json.loads((ROOT / "docs" / "models" / card_file).read_text())
    assert card["model"] == name and card["samples"] >= 300
    torch.set_num_threads(min(2, torch.get_num_threads()))
    samples = PROMPT_SETS[card["prompts"]](N, seed=card["seed"])
    result = evaluate(model_source(create_backend("onnxruntime", bundled_models()[name])),
                      samples, card["fps"], card["seconds"], long_run=0, progress=False)
    misses = []
    for group, ours in result["groups"].items():
        theirs = card["groups"][group]
        for attr, (right, n) in ours["counts"].items():
            p_card, total = theirs["accuracy"][attr], theirs["counts"][attr][1]
            if abs(right / n - p_card) > margin(p_card, n, total):
                misses.append(f"{group} {attr}: {right}/{n} here, {p_card:.3f} on the card")
    assert not misses, misses


@pytest.mark.parametrize("name", NAMES)
def test_the_card_describes_the_shipped_generator(name):
    g = load_generator(bundled_models()[name])
    n = sum(p.numel() for p in g.parameters())
    card = (ROOT / "docs" / "models" / "stylegan-v-shapes.md").read_text()
    assert f"`{name}`" in card and f"{n:,} parameters" in card
