"""The evaluation harness: the renderer itself scores 100 % (raw, and streamed as H.264 at
256 x 256), and each kind of wrong video is caught by the measure meant for it."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from t2v_rt.models.shapes.attributes import FEATURES, features, frechet_distance, measure
from t2v_rt.models.shapes.evaluate import (
    KINDS,
    contract_samples,
    evaluate,
    format_table,
    renderer_source,
    streamed_source,
    to_json,
    unseen_word_samples,
    UNSEEN_WORDS,
    GLUE_WORDS,
)
from t2v_rt.models.shapes.grammar import KNOWN_WORDS, parse_prompt
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.render import render


pytestmark = pytest.mark.usefixtures("one_thread")


def altered(change) -> callable:
    """A source rendering each sample's true scene after ``change(scene, times)``."""
    def generate(sample, times):
        return render(change(sample.scene(), times), times, 64)
    return generate


def test_samples_mix_kinds_and_held_out_pairs():
    samples = contract_samples(600, seed=1)
    kinds = Counter(s.kind for s in samples)
    assert set(kinds) == set(KINDS) and min(kinds.values()) == 200
    held = [s for s in samples if s.held_out]
    assert 100 < len(held) < 200
    for s in samples:
        assert s.target == parse_prompt(s.prompt).attributes
        assert s.held_out == bool(s.target["colour"] and s.target["shape"]
                                  and spec.is_held_out(s.target["colour"], s.target["shape"]))
        named = [k for k, v in s.target.items() if v is not None]
        if s.kind == "partial":
            assert 1 <= len(named) < len(spec.ATTRIBUTES) - (s.target["motion"] == "still")
        else:
            assert set(named) >= set(spec.ATTRIBUTES) - {"speed"}
    canonical = [s.prompt for s in samples if s.kind == "canonical"]
    assert all(" on a " in p for p in canonical)
    assert any(" over a " in s.prompt for s in samples if s.kind == "paraphrase")
    assert contract_samples(7, seed=1) == samples[:7]


def test_unseen_word_prompts_use_no_caption_word_and_mix_held_out_pairs():
    """`eval --prompts unseen-words`: no word of its prompts but "a", "an" and "and" is one the
    shapes caption generator can write (grammar.KNOWN_WORDS holds every such word), every
    attribute value has its own words, and the targets are the attributes drawn."""
    samples = unseen_word_samples(600, seed=1)
    used = {w for s in samples for w in s.prompt.split()}
    assert not (used & KNOWN_WORDS) - GLUE_WORDS
    assert GLUE_WORDS <= KNOWN_WORDS
    for name, values in spec.ATTRIBUTES.items():
        assert set(UNSEEN_WORDS[name]) == set(values), name
    held = [s for s in samples if s.held_out]
    assert 100 < len(held) < 200
    assert Counter(s.kind for s in samples) == {"paraphrase": 300, "partial": 300}
    for s in samples:
        assert set(s.target) == set(spec.ATTRIBUTES)
        named = [k for k, v in s.target.items() if v is not None]
        assert named
        if s.kind == "paraphrase":
            assert set(named) >= set(spec.ATTRIBUTES) - {"speed"}
        for name in named:
            if name in ("speed", "motion"):
                continue
            assert any(w in s.prompt for w in UNSEEN_WORDS[name][s.target[name]]), (s, name)
        with pytest.raises(Exception):
            parse_prompt(s.prompt)          # no grammar word reads them
    assert unseen_word_samples(9, seed=1) == samples[:9]
    assert any(s.prompt.startswith("an ") for s in samples)


def test_the_renderer_scores_100_percent_on_unseen_word_prompts():
    result = evaluate(renderer_source(), unseen_word_samples(24, seed=2), long_run=0,
                      progress=False)
    for name, group in result["groups"].items():
        assert group["all_attributes"] == 1.0, (name, group)


def test_the_renderer_scores_100_percent_on_every_kind_of_prompt():
    result = evaluate(renderer_source(), contract_samples(45, seed=2), progress=False)
    for table in (result["groups"], result["kinds"], result["long_run"]["groups"]):
        for name, group in table.items():
            assert group["all_attributes"] == 1.0, (name, group)
    assert result["long_run"]["same_attributes"] == 1.0
    fr = result["frechet"]
    assert fr["generated_vs_rendered"] < 1e-9 < fr["rendered_vs_rendered"]
    assert result["flicker"]["generated"] == result["flicker"]["rendered"]
    assert result["flicker"]["generated"]["colour"] == 0.0
    table = format_table(result)
    assert "held_out @600s" in table and "Frechet" in table
    assert '"all_attributes": 1.0' in to_json(result)


def test_the_renderer_streamed_as_h264_at_256_scores_at_least_99_5_percent():
    source = streamed_source(renderer_source(), size=256, fps=15)
    result = evaluate(source, contract_samples(36, seed=3), long_run=0, progress=False)
    counts = [c for g in result["groups"].values() for c in g["counts"].values()]
    right, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    assert right / total >= 0.995, format_table(result)
    # H.264 leaves the shape's colour steady from frame to frame (well under one 8-bit step).
    assert result["flicker"]["generated"]["colour"] < 1.0


@pytest.mark.parametrize("name,value", [
    ("shape", {"circle": "square", "square": "triangle", "triangle": "circle"}),
    ("colour", {c: "green" if c != "green" else "red" for c in spec.COLOURS}),
    ("size", {"small": "large", "large": "small"}),
    ("background", {"black": "white", "gray": "black", "white": "gray"}),
])
def test_a_wrong_attribute_is_caught(name, value):
    source = altered(lambda scene, t: dataclasses.replace(scene, **{name: value[getattr(scene, name)]}))
    result = evaluate(source, contract_samples(24, seed=4), long_run=0, progress=False)
    for group in result["groups"].values():
        for attr, acc in group["accuracy"].items():
            assert (acc <= 0.05) if attr == name else (acc == 1.0), (attr, group)


def test_frechet_distance_sees_a_generator_that_ignores_the_shape_word():
    # Swapping values (red for blue...) keeps the distribution: the Frechet distance measures
    # realism, the accuracies measure obedience. Drawing every shape as a circle changes it.
    def circles(sample, times):
        return render(dataclasses.replace(sample.scene(), shape="circle"), times, 64)
    result = evaluate(circles, contract_samples(48, seed=4), long_run=0, progress=False)
    fr = result["frechet"]
    assert fr["generated_vs_rendered"] > 0.05 and fr["generated_vs_rendered"] > fr["rendered_vs_rendered"]


def test_wrong_motion_and_speed_are_caught():
    def slow_circle(scene, t):
        return dataclasses.replace(scene, motion="circle" if scene.motion != "circle" else "up-down",
                                   speed="fast" if scene.speed == "slow" else "slow")
    result = evaluate(altered(slow_circle), contract_samples(24, seed=5), long_run=0,
                      progress=False)
    for group in result["groups"].values():
        assert group["accuracy"]["motion"] <= 0.05
        assert group["accuracy"]["speed"] <= 0.3   # still targets don't score speed


def test_flicker_is_measured():
    def flickering(sample, times):
        frames = renderer_source()(sample, times)
        frames[1::2] = frames[1::2] * 0.9   # every other frame 10 % darker
        return frames
    result = evaluate(flickering, contract_samples(12, seed=6), long_run=0, progress=False)
    assert result["flicker"]["generated"]["colour"] > 10
    assert result["flicker"]["rendered"]["colour"] == 0.0


def test_a_video_that_drifts_after_a_long_run_is_caught():
    def drifting(sample, times):
        scene = sample.scene()
        if float(times[0]) >= 600:
            scene = dataclasses.replace(scene, size="small" if scene.size == "large" else "large")
        return render(scene, times, 64)
    result = evaluate(drifting, contract_samples(24, seed=7), progress=False)
    assert result["long_run"]["same_attributes"] == 0.0
    assert all(g["accuracy"]["size"] == 1.0 for g in result["groups"].values())
    assert all(g["accuracy"]["size"] == 0.0 for g in result["long_run"]["groups"].values())


def test_frechet_distance_matches_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=gen, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4 I) in 3-D: |mu|^2 + tr(I + 4I - 2 * 2I) = 3 + 3 = 6.
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_features_of_a_video_without_a_shape():
    times = torch.arange(8, dtype=torch.float64) / 8
    m = measure(torch.full((8, 3, 64, 64), 0.5), times)
    f = features(m)
    assert f.shape == (len(FEATURES),) and torch.isfinite(f).all()
    assert m.colour is None
