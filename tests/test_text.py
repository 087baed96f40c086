"""Prompt parsing: paraphrases mean the same thing; bad prompts get one clear error."""

import pytest

from t2v_rt.errors import UsageError
from t2v_rt.models.shapes.grammar import MAX_TOKENS, encode_tokens, parse_prompt

CANON = {"shape": "circle", "colour": "red", "size": "large", "motion": "left-right",
         "speed": "slow", "background": "black"}


@pytest.mark.parametrize("text", [
    "a large red circle moving left and right slowly on a black background",
    "A big red ball bouncing left and right slow over a black background.",
    "a large red disc moving horizontally slowly on a black background",
    "  a big red ball moving slowly left and right, on a black background!  ",
])
def test_paraphrases_map_to_the_same_attributes(text):
    assert parse_prompt(text).attributes == CANON


@pytest.mark.parametrize("text,expect", [
    ("a tiny box moving vertically quickly", {"size": "small", "shape": "square", "motion": "up-down", "speed": "fast"}),
    ("a little triangle circling fast", {"size": "small", "shape": "triangle", "motion": "circle", "speed": "fast"}),
    ("a square not moving", {"shape": "square", "motion": "still"}),
    ("a square staying still over a gray background", {"shape": "square", "motion": "still", "background": "gray"}),
    ("a green shape moving diagonally", {"colour": "green", "motion": "diagonal"}),
    ("a red ball", {"colour": "red", "shape": "circle"}),
    ("an orange triangle moving quickly", {"colour": "orange", "shape": "triangle", "speed": "fast"}),
])
def test_left_out_attributes_are_none(text, expect):
    attrs = parse_prompt(text).attributes
    assert {k: v for k, v in attrs.items() if v is not None} == expect


@pytest.mark.parametrize("text,needle", [
    ("", "empty prompt"),
    ("   ...  ", "empty prompt"),
    ("a blu circle", "unknown word 'blu' in prompt; did you mean 'blue'?"),
    ("a red circel", "did you mean 'circle'?"),
    ("a red zebra", "unknown word 'zebra'"),
    ("a red blue circle", "'blue' conflicts with 'red'"),
    ("a small big box", "'big' conflicts with 'small'"),
    ("a circle moving left and right moving up and down", "unexpected word 'moving'"),
    ("a red circle standing still quickly", "a still shape has no speed"),
    ("a circle moving", "expected a direction or a speed after 'moving'"),
    ("a red circle on a red background", "'red' is not a background colour"),
    ("a red circle on a grey background", "did you mean 'gray'?"),
    ("circle red", "unexpected word 'red'"),
    ("a red", "expected a size, a colour, or a shape"),
])
def test_bad_prompts_name_the_word(text, needle):
    with pytest.raises(UsageError) as e:
        parse_prompt(text)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_too_long():
    with pytest.raises(UsageError, match="too long"):
        parse_prompt(" ".join(["a red ball"] * 6))


def test_token_ids():
    ids = encode_tokens([parse_prompt("a red ball"), parse_prompt("A RED BALL!")])
    assert ids.shape == (2, MAX_TOKENS)
    assert ids[0].tolist() == ids[1].tolist()
    assert (ids[0, :3] > 0).all() and (ids[0, 3:] == 0).all()
