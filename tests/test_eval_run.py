"""The evaluation harness: the renderer itself scores 100 %, a wrong model does not."""

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.eval.run import canonical_samples, evaluate, format_table
from t2v_rt.text.grammar import VOCAB, parse_prompt
from t2v_rt.world.render import render
from t2v_rt.world.scene import Scene


class RendererBackend(Backend):
    """Frames from the contract renderer, for the same prompt and latent: the ideal model."""

    name, device, resolution = "renderer", torch.device("cpu"), 64

    def __init__(self, recolour: str | None = None):
        self.scenes: list[Scene] = []
        self.recolour = recolour

    def style(self, tokens, z):
        words = " ".join(VOCAB[i] for i in tokens[0].tolist() if i)
        scene = Scene.complete(parse_prompt(words).attributes, z[0])
        if self.recolour:
            scene = Scene(**{**scene.__dict__, "colour": self.recolour})
        self.scenes.append(scene)
        return torch.tensor([[len(self.scenes) - 1]], dtype=torch.float32)

    def frames(self, w, t):
        return render(self.scenes[int(w[0, 0])], t, self.resolution) * 2 - 1


def test_canonical_samples_mix_seen_and_held_out():
    samples = canonical_samples(200, seed=1)
    held = [s for s in samples if s.held_out]
    assert 30 < len(held) < 120
    assert all(v is not None for s in samples for k, v in s.target.items() if k != "speed")
    assert {s.prompt for s in canonical_samples(5, 1)} == {s.prompt for s in samples[:5]}


def test_the_renderer_scores_100_percent():
    result = evaluate(RendererBackend(), canonical_samples(40, seed=2), progress=False)
    for group in result["groups"].values():
        assert group["all_attributes"] == 1.0, result
        assert all(acc == 1.0 for acc in group["accuracy"].values())
    assert "background" in format_table(result)


def test_a_wrong_colour_is_caught():
    result = evaluate(RendererBackend(recolour="green"), canonical_samples(20, seed=3),
                      progress=False)
    colour = [g["accuracy"]["colour"] for g in result["groups"].values()]
    assert max(colour) < 0.5
    assert all(g["accuracy"]["background"] == 1.0 for g in result["groups"].values())
