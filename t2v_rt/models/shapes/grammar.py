"""The caption grammar of the shapes world, as a small hand-written parser.

    prompt     := ["a" | "an"] adjective* noun [motion] [background]
    adjective  := size word | colour word
    noun       := shape word | "shape"            ("shape": the model picks the shape)
    motion     := ("moving" | "bouncing") (direction | speed)+ | "circling" [speed]
                | ("standing" | "staying") "still" | "not" "moving"
    direction  := "left and right" | "horizontally" | "up and down" | "vertically"
                | "diagonally" | "in a circle"
    background := ("on" | "over") "a" background-colour "background"

Capitals and punctuation are ignored. An unknown word, a misplaced word or a contradiction
raises :class:`UsageError` naming the word and, where one is close, the word meant.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from t2v_rt.errors import UsageError
from t2v_rt.models.shapes import spec

SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
COLOUR_WORDS = {c: c for c in spec.COLOURS}
SHAPE_WORDS = {
    "circle": "circle", "ball": "circle", "disc": "circle",
    "square": "square", "box": "square", "triangle": "triangle",
}
SPEED_WORDS = {"slowly": "slow", "slow": "slow", "quickly": "fast", "fast": "fast"}
BACKGROUND_WORDS = {b: b for b in spec.BACKGROUNDS}
# Multi-word directions, longest first.
DIRECTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("left", "and", "right"), "left-right"),
    (("up", "and", "down"), "up-down"),
    (("in", "a", "circle"), "circle"),
    (("horizontally",), "left-right"),
    (("vertically",), "up-down"),
    (("diagonally",), "diagonal"),
)
FUNCTION_WORDS = ("a", "an", "shape", "moving", "bouncing", "circling", "standing", "staying",
                  "still", "not", "on", "over", "background")

KNOWN_WORDS: frozenset[str] = frozenset(
    list(SIZE_WORDS) + list(COLOUR_WORDS) + list(SHAPE_WORDS) + list(SPEED_WORDS)
    + list(BACKGROUND_WORDS) + [w for words, _ in DIRECTIONS for w in words] + list(FUNCTION_WORDS)
)

PAD = "<pad>"
VOCAB: tuple[str, ...] = (PAD, *sorted(KNOWN_WORDS))
_WORD_ID = {w: i for i, w in enumerate(VOCAB)}
MAX_TOKENS = 16


@dataclass(frozen=True)
class Prompt:
    """A validated prompt: its normalised words and the attributes it names (None: left out)."""

    text: str
    words: tuple[str, ...]
    attributes: dict[str, str | None] = field(hash=False)


def _shown(text: str) -> str:
    from t2v_rt.generators.text import shown

    return shown(text, 120)


def tokenize(text: str) -> list[str]:
    """Lower-case words; punctuation and surrounding spaces are dropped."""
    return re.findall(r"[a-z]+", text.lower())


def _closest(word: str, candidates) -> str | None:
    match = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def _hint(word: str, candidates=KNOWN_WORDS) -> str:
    close = _closest(word, candidates)
    return f"; did you mean '{close}'?" if close else ""


class _Parser:
    def __init__(self, text: str, words: list[str]):
        self.text, self.words, self.i = text, words, 0
        self.attrs: dict[str, str | None] = {name: None for name in spec.ATTRIBUTES}
        self.source: dict[str, str] = {}

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.words[j] if j < len(self.words) else None

    def set(self, name: str, value: str, word: str) -> None:
        old = self.attrs[name]
        if old is not None and old != value:
            raise UsageError(
                f"contradictory prompt: '{word}' conflicts with '{self.source[name]}' "
                f"(both give the {name}); keep one of them"
            )
        self.attrs[name], self.source[name] = value, word

    def fail(self, expected: str) -> None:
        word = self.peek()
        if word is None:
            raise UsageError(f"incomplete prompt '{_shown(self.text)}': expected {expected} at the end")
        raise UsageError(
            f"unexpected word '{word}' in prompt '{_shown(self.text)}': expected {expected} here"
        )

    def direction(self) -> bool:
        for seq, value in DIRECTIONS:
            if tuple(self.words[self.i : self.i + len(seq)]) == seq:
                self.set("motion", value, " ".join(seq))
                self.i += len(seq)
                return True
        return False

    def speed(self) -> bool:
        word = self.peek()
        if word in SPEED_WORDS:
            self.set("speed", SPEED_WORDS[word], word)
            self.i += 1
            return True
        return False

    def parse(self) -> dict[str, str | None]:
        if self.peek() in ("a", "an"):
            self.i += 1
        while self.peek() in SIZE_WORDS or self.peek() in COLOUR_WORDS:
            word = self.peek()
            if word in SIZE_WORDS:
                self.set("size", SIZE_WORDS[word], word)
            else:
                self.set("colour", COLOUR_WORDS[word], word)
            self.i += 1
        word = self.peek()
        if word in SHAPE_WORDS:
            self.set("shape", SHAPE_WORDS[word], word)
        elif word != "shape":
            self.fail("a size, a colour, or a shape (circle, square, triangle, ...)")
        self.i += 1
        self.motion()
        self.background()
        if self.peek() is not None:
            self.fail("the end of the prompt, a motion ('moving ...') or a background "
                      "('on a ... background')")
        return self.attrs

    def motion(self) -> None:
        word, nxt = self.peek(), self.peek(1)
        if word in ("moving", "bouncing"):
            self.i += 1
            found = 0
            while self.direction() or self.speed():
                found += 1
            if not found:
                self.fail(f"a direction or a speed after '{word}'")
        elif word == "circling":
            self.i += 1
            self.set("motion", "circle", word)
            self.speed()
        elif word in ("standing", "staying") or (word == "not" and nxt == "moving"):
            expected = "moving" if word == "not" else "still"
            if nxt != expected:
                self.i += 1
                self.fail(f"'{expected}' after '{word}'")
            self.set("motion", "still", f"{word} {nxt}")
            self.i += 2
        if self.peek() in SPEED_WORDS:  # a speed after "standing still" contradicts it
            self.speed()
        if self.attrs["motion"] == "still" and self.attrs["speed"] is not None:
            raise UsageError(
                f"contradictory prompt: '{self.source['speed']}' conflicts with "
                f"'{self.source['motion']}' (a still shape has no speed); drop one of them"
            )

    def background(self) -> None:
        if self.peek() not in ("on", "over"):
            return
        self.i += 1
        if self.peek() in ("a", "an"):
            self.i += 1
        word = self.peek()
        if word not in BACKGROUND_WORDS:
            hint = _hint(word, BACKGROUND_WORDS) if word else ""
            if word in COLOUR_WORDS:
                raise UsageError(
                    f"'{word}' is not a background colour; backgrounds are "
                    f"{', '.join(spec.BACKGROUNDS)}"
                )
            if word is None:
                self.fail("a background colour (black, gray, white)")
            raise UsageError(f"'{word}' is not a background colour{hint}")
        self.set("background", BACKGROUND_WORDS[word], word)
        self.i += 1
        if self.peek() != "background":
            self.fail("'background'")
        self.i += 1


def parse_prompt(text: str) -> Prompt:
    """Validate a prompt and recover the attributes it names."""
    from t2v_rt.generators.text import clean_prompt, shown

    if not text.strip():
        raise UsageError(
            "empty prompt; describe a shape, e.g. \"a large red circle moving left and right slowly\""
        )
    text = clean_prompt(text)       # length, and only printable ASCII (nothing silently dropped)
    words = tokenize(text)
    if not words:
        raise UsageError(
            "empty prompt; describe a shape, e.g. \"a large red circle moving left and right slowly\""
        )
    for word in words:
        if word not in KNOWN_WORDS:
            raise UsageError(f"unknown word '{shown(word)}' in prompt{_hint(word)}")
    if len(words) > MAX_TOKENS:
        raise UsageError(f"prompt too long ({len(words)} words, at most {MAX_TOKENS})")
    attrs = _Parser(text.strip(), words).parse()
    return Prompt(text=text.strip(), words=tuple(words), attributes=attrs)


def encode_ids(prompts: list[Prompt] | Prompt):
    """Token ids ``[B, MAX_TOKENS]`` int64 (0 = padding) of validated prompts (numpy)."""
    import numpy as np

    if isinstance(prompts, Prompt):
        prompts = [prompts]
    ids = np.zeros((len(prompts), MAX_TOKENS), dtype=np.int64)
    for b, p in enumerate(prompts):
        ids[b, : len(p.words)] = [_WORD_ID[w] for w in p.words]
    return ids


def encode_tokens(prompts: list[Prompt] | Prompt):
    """Token ids ``[B, MAX_TOKENS]`` (0 = padding) of validated prompts, as a torch tensor."""
    import torch

    return torch.from_numpy(encode_ids(prompts))
