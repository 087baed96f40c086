"""Generator and discriminator shapes; continuous time; batch and fps invariance."""

import pytest
import torch

from t2v_rt.models.shapes.generator import Generator
from t2v_rt.models.shapes.config import ModelConfig
from t2v_rt.models.shapes.discriminators import FrameDiscriminator, VideoDiscriminator
from t2v_rt.models.shapes.grammar import MAX_TOKENS, encode_tokens, parse_prompt
from t2v_rt.models.shapes.scene import LATENT_DIM, latent_from_seed


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    g = Generator(ModelConfig()).eval()
    # Non-zero modulation, so the per-sample scale/shift path is exercised too.
    torch.nn.init.normal_(g.modulation.weight, std=0.05)
    # A moving pose, word votes and distinct palette colours (they start at zero, as the
    # modulation does).
    torch.nn.init.normal_(g.pose_motion.weight, std=0.05)
    torch.nn.init.normal_(g.text.votes.weight, std=0.05)
    torch.nn.init.normal_(g.palette.weight)
    torch.nn.init.normal_(g.backdrop.weight)
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
        w = gen.style(tokens(prompt), latent_from_seed(seed)[None])
        return gen.synthesize_at(w.expand(len(t), -1), t)


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
    from t2v_rt.models.shapes.generator import (
        CODE_DIM,
        CODE_SLICES,
        NAMED_DIM,
        attribute_code,
        code_from_logits,
        grouped_cross_entropy,
    )

    attrs = [{"shape": "triangle", "colour": "orange", "size": "small", "motion": "circle",
              "speed": "fast", "background": "gray"},
             {"shape": "circle", "colour": "red", "size": "large", "motion": "still",
              "speed": "slow", "background": "black"}]
    code = attribute_code(attrs)
    assert code.shape == (2, CODE_DIM) and code.sum(1).tolist() == [6, 6]
    assert NAMED_DIM == CODE_DIM + 6
    torch.testing.assert_close(code_from_logits(code * 5 + torch.rand(2, CODE_DIM)), code)
    def ce(logits):
        return float(grouped_cross_entropy(logits, code, CODE_SLICES))

    assert ce(code * 50) < 1e-6 < ce(-code * 50)
    # Inference takes the chosen one-hot code; a forced code overrides it.
    tok, z = tokens("a red ball", "a red ball"), torch.randn(2, LATENT_DIM)
    with torch.no_grad():
        text = gen.encode_text(tok)
        chosen = gen.choose(text, z)
        assert chosen.shape == (2, CODE_DIM) and chosen.sum(1).tolist() == [6, 6]
        torch.testing.assert_close(gen.style_from_reading(text, z), gen.style_from_reading(text, z, chosen))
        assert not torch.allclose(gen.style_from_reading(text, z), gen.style_from_reading(text, z, code))


def test_a_named_value_stands_and_left_out_ones_come_from_the_prior():
    from t2v_rt.models.shapes.generator import (
        CODE_GROUPS,
        CODE_SLICES,
        NAMED_SLICES,
        attribute_code,
        grouped_cross_entropy,
        left_out_rows,
        merge_code,
        named_code,
    )

    prompts = [{"shape": "triangle", "colour": "orange", "size": None, "motion": None,
                "speed": None, "background": "white"},
               {"shape": None, "colour": None, "size": "large", "motion": "still",
                "speed": None, "background": None}]
    named = named_code(prompts)
    for row, p in zip(named, prompts):
        for name, values in CODE_GROUPS:
            g = row[NAMED_SLICES[name]]
            want = len(values) if p[name] is None else values.index(p[name])
            assert g.sum() == 1 and int(g.argmax()) == want
    # The prior picks a full code, a held-out pair and all; only left-out slots take from it.
    picked = {"shape": "square", "colour": "blue", "size": "small", "motion": "circle",
              "speed": "fast", "background": "black"}
    merged = merge_code(named, attribute_code([picked, picked]))
    want = [{k: p[k] or picked[k] for k in picked} for p in prompts]
    torch.testing.assert_close(merged, attribute_code(want))
    rows = left_out_rows(named)
    assert rows["size"].tolist() == [True, False] and rows["shape"].tolist() == [False, True]
    # The prior's loss counts only left-out attributes: a prior wrong on named ones costs 0.
    full = attribute_code(want)
    wrong_on_named = full * 50
    for name in ("shape", "colour", "background"):     # named in prompt 0: flip its logits
        wrong_on_named[0, CODE_SLICES[name]] *= -1
    for name in ("size", "motion"):                    # named in prompt 1
        wrong_on_named[1, CODE_SLICES[name]] *= -1
    assert float(grouped_cross_entropy(wrong_on_named, full, CODE_SLICES, rows)) < 1e-6
