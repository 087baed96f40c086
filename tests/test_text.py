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


@pytest.mark.parametrize("text,needles", [
    ("", ["empty prompt"]),
    ("   ...  ", ["empty prompt"]),
    ("a blu circle", ["unknown word 'blu' in prompt;", "; did you mean 'blue'?"]),
    ("a red circel", ["did you mean 'circle'?"]),
    ("a red zebra", ["unknown word 'zebra'", "after 'red' comes a size (small, large, ...) or a shape"]),
    ("a red blue circle", ["'blue' conflicts with 'red'"]),
    ("a small big box", ["'big' conflicts with 'small'"]),
    ("a circle moving left and right moving up and down", ["unexpected word 'moving'"]),
    ("a red circle standing still quickly", ["a still shape has no speed"]),
    ("a circle moving", ["incomplete prompt; after 'moving' comes a direction (left and right, "
                         "up and down, diagonally, in a circle, ...) or a speed (slowly, quickly, ...)"]),
    ("a red circle on a red background", ["'red' is not a background colour",
                                          "a background colour (black, gray, white)"]),
    ("a red circle on a grey background", ["did you mean 'gray'?"]),
    ("circle red", ["unexpected word 'red'", "after 'circle' comes a motion"]),
    ("a red", ["incomplete prompt; after 'red' comes a size (small, large, ...) or a shape"]),
    ("a red ball on a black", ["incomplete prompt; after 'black' comes 'background'"]),
    ("a ball on a black background moving", ["unexpected word 'moving'",
                                             "the prompt ends after 'background'"]),
])
def test_bad_prompts_name_the_word(text, needles):
    with pytest.raises(UsageError) as e:
        parse_prompt(text)
    for needle in needles:
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


# -- Suggestions (issue #16): only close words, the words allowed at the place, whole phrases ---

import hashlib  # noqa: E402
import itertools  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import string  # noqa: E402
from difflib import SequenceMatcher  # noqa: E402

from t2v_rt.generators.text import (  # noqa: E402
    DEFAULT_VOCABULARY, VocabularyFrontEnd, max_typos, suggest, typo_distance,
)
from t2v_rt.models.shapes.grammar import KNOWN_WORDS, VOCAB, encode_ids  # noqa: E402

MEAN = re.compile(r"; did you mean '([^']*)'\?$")


def refusal(text: str) -> str:
    with pytest.raises(UsageError) as e:
        parse_prompt(text)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) <= 200, msg
    return msg


def meant(msg: str) -> str | None:
    m = MEAN.search(msg)
    return m.group(1) if m else None


def typos(word: str, letters: str = string.ascii_lowercase) -> set[str]:
    """Every word one edit away: a letter dropped, replaced or added, two neighbours swapped."""
    out = {word[:i] + word[i + 1:] for i in range(len(word))}
    out |= {word[:i] + c + word[i + 1:] for i in range(len(word)) for c in letters}
    out |= {word[:i] + c + word[i:] for i in range(len(word) + 1) for c in letters}
    out |= {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}
    return {v for v in out if v and v != word}


@pytest.mark.parametrize("text,message", [
    ("a red ball moving around",
     "unknown word 'around' in prompt; after 'moving' comes a direction (left and right, up and "
     "down, diagonally, in a circle, ...) or a speed (slowly, quickly, ...)"),
    ("a red ball spinning",
     "unknown word 'spinning' in prompt; after 'ball' comes a motion (moving ..., circling, "
     "standing still, ...), a speed (slowly, quickly, ...), a background (on a ... background, ...) "
     "or the end"),
    ("a red ball moving left",
     "'moving left' is not a motion; after 'moving' comes a direction (left and right, up and "
     "down, diagonally, in a circle, ...) or a speed (slowly, quickly, ...); "
     "did you mean 'moving left and right'?"),
])
def test_probe_cases(text, message):
    assert refusal(text) == message


@pytest.mark.parametrize("text,phrase", [
    ("a red ball moving left", "moving left and right"),
    ("a red ball moving left slowly", "moving left and right"),
    ("a red ball moving right", "moving left and right"),
    ("a red ball bouncing up", "bouncing up and down"),
    ("a red ball moving down quickly", "moving up and down"),
    ("a red ball moving in circle", "moving in a circle"),
    ("a red ball moving circle", "moving in a circle"),
    ("a red ball moving left adn right", "moving left and right"),
    ("a red ball moving slowly left", "left and right"),
    ("a red ball standing", "standing still"),
    ("a red ball still", "standing still"),
    ("a red ball not still", "not moving"),
    ("a red ball moving diagonal", "moving diagonally"),
])
def test_a_phrase_begun_or_misspelt_is_completed(text, phrase):
    assert meant(refusal(text)) == phrase


UNRELATED = ["around", "spinning", "xylophone", "quickly-ish", "rotating", "zebra", "the",
             "to", "ish", "x", "q", "purple", "spin", "jumping", "everywhere", "backgroundcolour"]


@pytest.mark.parametrize("word", UNRELATED)
def test_unrelated_words_get_no_suggestion(word):
    # Not the word itself, nor in a prompt at any place of the grammar, nor by the vocabulary
    # front end of the other architectures.
    assert suggest(word, sorted(KNOWN_WORDS)) is None
    for text in (f"a {word} ball", f"a red ball {word}", f"a red ball moving {word}",
                 f"a ball moving left and right {word}", f"a ball on a {word} background"):
        assert meant(refusal(text)) is None, text
    if word not in DEFAULT_VOCABULARY:
        assert suggest(word, DEFAULT_VOCABULARY) is None
        with pytest.raises(UsageError) as e:
            VocabularyFrontEnd(DEFAULT_VOCABULARY, 16).check(f"a red ball {word}")
        assert "did you mean" not in str(e.value)


def test_a_suggestion_is_always_a_small_typo():
    rng = random.Random(0)
    vocab = sorted(KNOWN_WORDS | set(DEFAULT_VOCABULARY))
    for _ in range(3000):
        word = "".join(rng.choice("abcdeilnorstuy") for _ in range(rng.randint(1, 10)))
        close = suggest(word, vocab)
        if close is not None and close != word:
            assert typo_distance(word, close) <= max_typos(close) <= 2
            assert SequenceMatcher(None, word, close).ratio() >= 0.5, (word, close)


def test_every_single_typo_suggests_the_word():
    """Every known word misspelt by one edit (every letter dropped, every two neighbours swapped,
    a sample of letters replaced or added): the suggestion is that word, unless the typo is one
    edit from another known word too (then it may be either, or none: a tie). Not "a" (another
    one letter shares nothing with it), and a two-letter word only for two letters typed."""
    for vocab in (sorted(KNOWN_WORDS), list(DEFAULT_VOCABULARY)):
        for w in vocab:
            if len(w) < 2:
                continue
            for v in typos(w, "aesz"):
                if v in vocab or (len(w) == 2 and len(v) != 2):
                    continue
                got = suggest(v, vocab)
                if got != w:
                    rivals = {k for k in vocab if k != w and typo_distance(v, k) <= 1}
                    assert rivals and got in rivals | {None}, (w, v, got)


PROMPTS = ["a large red circle moving left and right slowly on a black background",
           "an orange triangle bouncing up and down quickly over a white background",
           "a small green ball moving diagonally fast on a gray background",
           "a tiny blue disc moving in a circle slow", "a little yellow box circling",
           "a big cyan square moving horizontally", "a magenta shape moving vertically",
           "a square standing still", "a square staying still", "a square not moving"]


def test_every_single_typo_in_a_prompt_suggests_the_word_there():
    """In context the choice is narrower: every word of the grammar, misspelt in a prompt where
    it belongs (deletions, swaps, and a replaced or added 'e' or 'x'), is suggested back, as
    part of the phrase it belongs to, unless the typo is one edit from another word allowed there."""
    assert {w for p in PROMPTS for w in p.split()} == KNOWN_WORDS
    checked = 0
    for p in PROMPTS:
        words = p.split()
        for j, w in enumerate(words):
            if len(w) < 2:
                continue
            for v in sorted(typos(w, "ex")):
                if v in KNOWN_WORDS or (len(w) == 2 and len(v) != 2):
                    continue
                got = meant(refusal(" ".join(words[:j] + [v] + words[j + 1:])))
                checked += 1
                if got is None or w not in got.split():
                    rivals = {k for k in KNOWN_WORDS if k != w and typo_distance(v, k) <= 1}
                    assert rivals and (got is None or rivals & set(got.split())), (p, v, got)
    assert checked > 1000


@pytest.mark.parametrize("text,allowed", [
    ("a xylophone", ["a size (small, large", "a colour (red, green, blue", "a shape (circle, square"]),
    ("a red ball moving around", ["left and right", "up and down", "diagonally", "in a circle",
                                  "slowly", "quickly"]),
    ("a red ball spinning", ["moving ...", "circling", "slowly", "on a ... background", "the end"]),
    ("a ball circling around", ["after 'circling' comes a speed (slowly, quickly, ...), a background"]),
    ("a ball on a purple background", ["a background colour (black, gray, white)"]),
    ("a ball on a black screen", ["after 'black' comes 'background'"]),
    ("a red red ball moving left and right left and right quickly spinning",
     ["after 'quickly' comes a background (on a ... background, ...) or the end"]),
])
def test_the_message_names_what_may_come_there(text, allowed):
    msg = refusal(text)
    for phrase in allowed:
        assert phrase in msg, msg


def test_messages_stay_one_short_line():
    rng = random.Random(1)
    words = sorted(KNOWN_WORDS) + ["blu", "spinning", "x" * 300, "quickly-ish"]
    for _ in range(1500):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 16)))
        try:
            parse_prompt(text)
        except UsageError as e:
            assert "\n" not in str(e) and len(str(e)) <= 200, str(e)


def test_the_vocabulary_front_end_suggests_by_the_same_rule():
    fe = VocabularyFrontEnd(DEFAULT_VOCABULARY, 16)
    for word, close in (("blu", "blue"), ("bal", "ball"), ("spinning", None), ("aroud", "around")):
        assert suggest(word, fe.words) == close
        with pytest.raises(UsageError) as e:
            fe.check(f"a red {word}")
        assert (meant(str(e.value)) == close) if close else ("did you mean" not in str(e.value))


# What valid prompts mean is unchanged: the token ids of the grammar's whole product of
# phrasings (and the refusals among them) hash to what the parser at commit b1eb2f0 gave.
VOCAB_AT_B1EB2F0 = (
    "<pad> a an and background ball big black blue bouncing box circle circling cyan diagonally "
    "disc down fast gray green horizontally in large left little magenta moving not on orange over "
    "quickly red right shape slow slowly small square standing staying still tiny triangle up "
    "vertically white yellow").split()
IDS_AT_B1EB2F0 = "14ada15c1c20470226834972c69dcde47901e79beb21247ad9a5045c0f18b70c"

SIZES = ["", "small", "little", "tiny", "large", "big"]
COLOURS = ["", "red", "green", "blue", "yellow", "cyan", "magenta", "orange"]
SHAPES = ["shape", "circle", "ball", "disc", "square", "box", "triangle"]
MOTIONS = ["", "moving left and right", "bouncing left and right", "moving horizontally",
           "moving up and down", "bouncing up and down", "moving vertically", "moving diagonally",
           "moving in a circle", "circling", "standing still", "not moving", "staying still",
           "moving", "bouncing"]
SPEEDS = ["", "slowly", "slow", "quickly", "fast"]
BACKGROUNDS = [""] + [f"{p} {a}{b} background" for p in ("on", "over") for a in ("a ", "an ", "")
                      for b in ("black", "gray", "white")]
ODD = ["an orange triangle", "A Big RED Ball!", "a red red ball", "a small little box",
       "a ball moving slowly left and right", "a ball moving left and right slowly quickly",
       "a ball moving left and right left and right", "a ball moving slowly slowly fast",
       "a ball circling slowly slowly", "a ball circling slowly quickly", "a ball slowly",
       "a ball not still", "a ball standing", "a ball moving left", "ball", "shape", "a",
       "a ball on a black background on a black background", "a ball moving up and down horizontally",
       "a ball moving vertically up and down fast", "circle red", "a ball background",
       "a ball on black", "a ball over a gray background slowly", "a shape moving in a circle quickly"]


def every_phrasing():
    for s, c, sh in itertools.product(SIZES, COLOURS, SHAPES):        # every noun phrase, 3 tails
        for tail in ("", "moving left and right slowly on a black background", "standing still"):
            yield " ".join(w for w in ("a", s, c, sh, tail) if w)
    for m, sp, bg in itertools.product(MOTIONS, SPEEDS, BACKGROUNDS):  # every tail, 2 heads
        for head in ("a large red circle", "a shape"):
            yield " ".join(w for w in (head, m, sp, bg) if w)
    yield from ODD


def test_token_ids_of_accepted_prompts_are_unchanged():
    assert list(VOCAB) == VOCAB_AT_B1EB2F0
    h, accepted = hashlib.sha256(), 0
    for text in every_phrasing():
        try:
            row = encode_ids(parse_prompt(text))[0].tolist()
            accepted += 1
        except UsageError:
            row = "refused"
        h.update(f"{text}|{row}\n".encode())
    assert (h.hexdigest(), accepted) == (IDS_AT_B1EB2F0, 3338)
    canonical = "a large red circle moving left and right slowly on a black background"
    assert encode_ids(parse_prompt(canonical))[0].tolist() == \
        [1, 22, 32, 11, 26, 23, 3, 33, 36, 28, 1, 7, 4, 0, 0, 0]
