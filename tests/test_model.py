"""Generator and discriminator shapes; continuous time; batch and fps invariance."""

import pytest
import torch

from t2v_rt.model import Generator, ModelConfig
from t2v_rt.model.discriminators import FrameDiscriminator, VideoDiscriminator
from t2v_rt.text.grammar import MAX_TOKENS, encode_tokens, parse_prompt
from t2v_rt.world.scene import LATENT_DIM, latent_from_seed


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    g = Generator(ModelConfig()).eval()
    # Non-zero modulation, so the per-sample scale/shift path is exercised too.
    torch.nn.init.normal_(g.modulation.weight, std=0.05)
    return g


def tokens(*prompts):
    return encode_tokens([parse_prompt(p) for p in prompts])


def test_shapes(gen):
    tok = tokens("a red ball", "a small blue square moving up and down quickly")
    z = torch.randn(2, LATENT_DIM)
    t = torch.rand(2, 5, dtype=torch.float64) * 10
    with torch.no_grad():
        out = gen(tok, z, t)
    assert out.shape == (2, 5, 3, 64, 64)
    assert out.abs().max() <= 1 and out.std() > 0
    fd, vd = FrameDiscriminator(), VideoDiscriminator(frames=5)
    assert fd(out[:, 0], tok).shape == (2,)
    assert vd(out, t, tok).shape == (2,)


def test_blocks_are_upsample_conv_act_modules(gen):
    assert len(gen.blocks) == 4
    x = torch.randn(2, 128, 4, 4)
    pose = torch.rand(2, 2) * 2 - 1
    assert gen.blocks[0](x, torch.ones(2, 128), torch.zeros(2, 128), pose).shape == (2, 128, 8, 8)


def video(gen, prompt, seed, t):
    with torch.no_grad():
        w = gen.style(gen.encode_text(tokens(prompt)), latent_from_seed(seed)[None])
        return gen.synthesize(w.expand(len(t), -1), t)


def test_same_seed_different_fps_gives_the_same_frames_at_equal_times(gen):
    p = "a large red circle moving left and right slowly"
    at30 = video(gen, p, 3, torch.arange(30, dtype=torch.float64) / 30)
    at10 = video(gen, p, 3, torch.arange(10, dtype=torch.float64) / 10)
    torch.testing.assert_close(at30[::3], at10, atol=1e-5, rtol=0)
    assert not torch.allclose(at30[0], at30[15], atol=1e-3)  # and time does change the frame


def test_frames_do_not_depend_on_batching(gen):
    p = "a cyan triangle circling fast"
    t = torch.rand(9, dtype=torch.float64) * 5
    together = video(gen, p, 1, t)
    alone = torch.cat([video(gen, p, 1, t[i : i + 1]) for i in range(len(t))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_long_run_time_is_exact(gen):
    p = "a square moving diagonally"
    t = torch.tensor([0.37, 1.12], dtype=torch.float64)
    torch.testing.assert_close(video(gen, p, 0, t), video(gen, p, 0, t + 600.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(video(gen, p, 0, t), video(gen, p, 0, t + 86400.0), atol=1e-6, rtol=0)


def test_seed_and_prompt_change_the_video(gen):
    t = torch.tensor([0.5], dtype=torch.float64)
    a = video(gen, "a red ball", 0, t)
    assert not torch.allclose(a, video(gen, "a red ball", 1, t))
    assert not torch.allclose(a, video(gen, "a blue ball", 0, t))


def test_padding_does_not_change_the_text_embedding(gen):
    tok = tokens("a red ball")
    assert tok.shape[1] == MAX_TOKENS
    with torch.no_grad():
        full = gen.encode_text(tok)
        short = gen.encode_text(tok[:, :3])
    torch.testing.assert_close(full, short, atol=1e-5, rtol=0)


def test_attribute_code_round_trips_and_is_a_hard_choice(gen):
    from t2v_rt.model.generator import (
        CODE_DIM,
        attribute_code,
        code_from_logits,
        code_loss,
    )

    attrs = [{"shape": "triangle", "colour": "orange", "size": "small", "motion": "circle",
              "speed": "fast", "background": "gray"},
             {"shape": "circle", "colour": "red", "size": "large", "motion": "still",
              "speed": "slow", "background": "black"}]
    code = attribute_code(attrs)
    assert code.shape == (2, CODE_DIM) and code.sum(1).tolist() == [6, 6]
    torch.testing.assert_close(code_from_logits(code * 5 + torch.rand(2, CODE_DIM)), code)
    assert float(code_loss(code * 50, code)) < 1e-6 < float(code_loss(-code * 50, code))
    # Inference takes the choice head's one-hot code; a forced code overrides it.
    tok, z = tokens("a red ball", "a red ball"), torch.randn(2, LATENT_DIM)
    with torch.no_grad():
        text = gen.encode_text(tok)
        chosen = code_from_logits(gen.choice_logits(text, z))
        torch.testing.assert_close(gen.style(text, z), gen.style(text, z, chosen))
        assert not torch.allclose(gen.style(text, z), gen.style(text, z, code))
