"""The bundled weights: they load with no network, and a small eval reproduces the model
card's table (docs/eval-bundled.json, from `t2v-rt eval --samples 600`).

The CI eval scores the first ``N`` samples of the card's own draw (same seed, fps, length), so
it is a subset of the card's samples. Margin per number: 3 standard errors of the share in a
random subset of n out of the card's N samples, sqrt(p (1 - p) (1/n - 1/N)), with p (1 - p)
at least 0.05 x 0.95 so that a 100 % on the card still allows a miss or two.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from t2v_rt.backends import create_backend
from t2v_rt.models.shapes.evaluate import contract_samples, evaluate, model_source
from t2v_rt.generators.io import bundled_path

CARD = Path(__file__).parents[1] / "docs" / "eval-bundled.json"
N = 90


def test_bundled_weights_are_in_the_package():
    path = bundled_path()
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert path.stat().st_size < 20 * 2**20


def margin(p: float, n: int, total: int) -> float:
    return 3 * math.sqrt(max(p * (1 - p), 0.05 * 0.95) * max(1 / n - 1 / total, 0.0))


@pytest.mark.slow
def test_a_small_eval_reproduces_the_model_card():
    card = json.loads(CARD.read_text())
    assert card["model"] == "bundled" and card["samples"] >= 500
    torch.set_num_threads(min(2, torch.get_num_threads()))
    samples = contract_samples(N, seed=card["seed"])
    result = evaluate(model_source(create_backend("torch")), samples, card["fps"],
                      card["seconds"], long_run=card["long_run"]["t0"], progress=False)
    misses = []
    for group, ours in result["groups"].items():
        theirs = card["groups"][group]
        for name, (right, n) in ours["counts"].items():
            p_card = theirs["accuracy"][name]
            total = theirs["counts"][name][1]
            if abs(right / n - p_card) > margin(p_card, n, total):
                misses.append(f"{group} {name}: {right}/{n} here, {p_card:.3f} on the card")
        p_card, n = theirs["all_attributes"], ours["videos"]
        if abs(ours["all_attributes"] - p_card) > margin(p_card, n, theirs["videos"]):
            misses.append(f"{group} all: {ours['all_attributes']:.3f} here, {p_card:.3f} on the card")
    assert not misses, misses
    # Frames at t = 600 s are computed as exactly as at t = 0: the same attributes come back.
    assert result["long_run"]["same_attributes"] >= card["long_run"]["same_attributes"] - 0.05


def test_the_bundled_model_reads_what_every_eval_prompt_names():
    """The text encoder names exactly what the parser reads, held-out pairs included: the
    card's 600 prompts (canonical, paraphrased, partial)."""
    from t2v_rt.models.shapes.generator import NAMED_SLICES, named_code, one_hot_groups
    from t2v_rt.generators.io import load_generator
    from t2v_rt.models.shapes.grammar import encode_tokens, parse_prompt

    card = json.loads(CARD.read_text())
    samples = contract_samples(card["samples"], seed=card["seed"])
    assert sum(s.held_out for s in samples) > 100
    g = load_generator()
    with torch.no_grad():
        read = one_hot_groups(g.encode_text(encode_tokens([parse_prompt(s.prompt) for s in samples])),
                              NAMED_SLICES)
    wrong = [s.prompt for s, r, t in zip(samples, read, named_code([s.target for s in samples]))
             if not torch.equal(r, t)]
    assert not wrong, wrong[:5]
