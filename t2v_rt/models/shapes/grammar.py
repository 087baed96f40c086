"""The caption grammar of the shapes world, as a small hand-written parser.

    prompt     := ["a" | "an"] adjective* noun [motion] [speed] [background]
    adjective  := size word | colour word
    noun       := shape word | "shape"            ("shape": the model picks the shape)
    motion     := ("moving" | "bouncing") (direction | speed)+ | "circling" [speed]
                | ("standing" | "staying") "still" | "not" "moving"
    direction  := "left and right" | "horizontally" | "up and down" | "vertically"
                | "diagonally" | "in a circle"
    background := ("on" | "over") ["a" | "an"] background-colour "background"

Capitals and punctuation are ignored. A contradiction raises :class:`UsageError` naming both
words. An unknown or misplaced word raises one line naming it, what may come at its place
(e.g. "after 'moving' comes a direction (left and right, up and down, ...) or a speed (...)"),
and the phrase meant where the words there are a small typo of an allowed phrase
(``t2v_rt.generators.text.suggest``'s rule), start one ("moving left": 'moving left and right')
or are one of its words ("moving right"). Nothing is suggested for a word that shares little.
"""

from __future__ import annotations

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
STILL_PHRASES: tuple[tuple[str, ...], ...] = (("standing", "still"), ("staying", "still"), ("not", "moving"))
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


def tokenize(text: str) -> list[str]:
    """Lower-case words; punctuation and surrounding spaces are dropped."""
    return re.findall(r"[a-z]+", text.lower())


class _Stuck(Exception):
    """The parser cannot read the word at ``at`` (``at == len(words)``: the prompt ended early)."""

    def __init__(self, at: int):
        super().__init__(at)
        self.at = at


class _Repeat(Exception):
    """A probe (see ``_Parser.strict_from``) named an attribute that was already given."""


class _Parser:
    """Reads a word list (all known words or not); raises :class:`_Stuck` where it cannot go on,
    :class:`UsageError` for a contradiction. With ``strict_from``, an attribute given again from
    that word on raises :class:`_Repeat` (probes for what is worth listing at a place)."""

    def __init__(self, words: list[str], strict_from: int | None = None):
        self.words, self.i, self.strict_from = words, 0, strict_from
        self.attrs: dict[str, str | None] = {name: None for name in spec.ATTRIBUTES}
        self.source: dict[str, str] = {}

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.words[j] if j < len(self.words) else None

    def at(self, seq: tuple[str, ...]) -> bool:
        return tuple(self.words[self.i : self.i + len(seq)]) == seq

    def stuck(self) -> None:
        raise _Stuck(self.i)

    def set(self, name: str, value: str, word: str) -> None:
        old = self.attrs[name]
        if old is not None and self.strict_from is not None and self.i >= self.strict_from:
            raise _Repeat(name)
        if old is not None and old != value:
            raise UsageError(
                f"contradictory prompt: '{word}' conflicts with '{self.source[name]}' "
                f"(both give the {name}); keep one of them"
            )
        self.attrs[name], self.source[name] = value, word

    def direction(self) -> bool:
        for seq, value in DIRECTIONS:
            if self.at(seq):
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
            self.stuck()
        self.i += 1
        self.motion()
        self.background()
        if self.peek() is not None:
            self.stuck()
        return self.attrs

    def motion(self) -> None:
        word = self.peek()
        if word in ("moving", "bouncing"):
            self.i += 1
            found = 0
            while self.direction() or self.speed():
                found += 1
            if not found:
                self.stuck()
        elif word == "circling":
            self.set("motion", "circle", word)
            self.i += 1
            self.speed()
        else:
            for seq in STILL_PHRASES:
                if self.at(seq):
                    self.set("motion", "still", " ".join(seq))
                    self.i += len(seq)
                    break
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
            self.stuck()
        self.set("background", BACKGROUND_WORDS[word], word)
        self.i += 1
        if self.peek() != "background":
            self.stuck()
        self.i += 1


# -- Errors: what may come where, and the phrase meant ---------------------------------------------
# Every phrase of the grammar, as (kind, words, as shown), in the order a message lists them.
_PHRASES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("article", ("a",), "a"), ("article", ("an",), "an"),
    *(("size", (w,), w) for w in ("small", "large", "little", "tiny", "big")),
    *(("colour", (w,), w) for w in COLOUR_WORDS),
    *(("shape", (w,), w) for w in ("circle", "square", "triangle", "ball", "disc", "box", "shape")),
    ("motion", ("moving",), "moving ..."), ("motion", ("circling",), "circling"),
    ("motion", ("standing", "still"), "standing still"), ("motion", ("bouncing",), "bouncing ..."),
    ("motion", ("not", "moving"), "not moving"), ("motion", ("staying", "still"), "staying still"),
    *(("direction", seq, " ".join(seq)) for seq in (
        ("left", "and", "right"), ("up", "and", "down"), ("diagonally",), ("in", "a", "circle"),
        ("horizontally",), ("vertically",))),
    *(("speed", (w,), w) for w in ("slowly", "quickly", "slow", "fast")),
    ("background", ("on",), "on a ... background"), ("background", ("over",), "over a ... background"),
    *(("background colour", (w,), w) for w in BACKGROUND_WORDS),
    ("word", ("background",), "'background'"),
)
# How a message names each kind, and how many of its phrases it shows (None: not named).
_KINDS: dict[str, tuple[str | None, int]] = {
    "article": (None, 0), "size": ("a size", 2), "colour": ("a colour", 3),
    "shape": ("a shape", 3), "motion": ("a motion", 3), "direction": ("a direction", 4),
    "speed": ("a speed", 2), "background": ("a background", 1),
    "background colour": ("a background colour", 3), "word": ("", 1),
}
MAX_MESSAGE = 200       # characters of an error line, as far as shortening the lists of examples goes
# Words of a phrase that do not, alone, say which phrase was meant.
_GLUE = frozenset({"a", "an", "and", "in", "on"})
assert {w for _, seq, _ in _PHRASES for w in seq} == KNOWN_WORDS


def _parses(words: list[str]) -> bool:
    try:
        _Parser(words).parse()
    except (_Stuck, UsageError):
        return False
    return True


def _may_follow(done: list[str], seq: tuple[str, ...]) -> bool:
    """Whether ``done`` + ``seq`` starts a valid prompt that does not repeat an attribute."""
    words = done + list(seq)
    try:
        _Parser(words, strict_from=len(done)).parse()
    except _Stuck as e:
        return e.at == len(words)
    except (_Repeat, UsageError):
        return False
    return True


def _describe(allowed: list[tuple[str, tuple[str, ...], str]], end: bool, shrink: int = 0) -> str:
    """"a size (small, large, ...), a colour (red, green, blue, ...) or the end"; ``shrink``
    shows that many fewer phrases of each kind (at least one; 9: names only)."""
    from t2v_rt.generators.text import listing

    groups: dict[str, list[str]] = {}
    for kind, _, text in allowed:
        groups.setdefault(kind, []).append(text)
    parts = []
    for kind, texts in groups.items():
        name, limit = _KINDS[kind]
        if name is None:
            continue
        if not name or shrink < 9:
            items = listing(texts, max(1, limit - shrink))
            parts.append(f"{name} ({items})" if name else items)
        else:
            parts.append(name)
    if end or not parts:
        parts.append("the end")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _refusal(words: list[str], at: int) -> str:
    """The one-line error for a prompt the parser is stuck in at word ``at``: the word refused,
    what may come there instead, and the phrase meant where the words there are a small typo of
    an allowed phrase, start one, or are part of one ("moving left": 'moving left and right')."""
    from t2v_rt.generators.text import closeness, shown

    done, rest = words[:at], words[at:]
    allowed = [p for p in _PHRASES if _may_follow(done, p[1])]
    end = _parses(done)
    prev = words[at - 1] if at else None

    def message(problem: str, hint: str = "") -> str:
        """problem; what may come here; hint -- with fewer examples until it fits one short line."""
        if not allowed:      # (the parser got here, so the prompt could at least end here)
            return f"{problem}; the prompt ends after '{prev}'{hint}"
        where = f"after '{prev}' comes" if prev else "a prompt starts with"
        for shrink in (0, 1, 2, 9):
            line = f"{problem}; {where} {_describe(allowed, end, shrink)}{hint}"
            if len(line) <= MAX_MESSAGE:
                break
        return line

    if not rest:
        return message("incomplete prompt")

    # The allowed phrase the words here come closest to: all of it, typos (of unknown words) allowed,
    # before a start of it, before the first word here being one of its words.
    best = None
    for n, (kind, seq, _) in enumerate(allowed):
        k, key = 0, (0, 0.0)
        while k < len(seq) and k < len(rest):
            u, q = rest[k], seq[k]
            close = (0, -1.0) if u == q else None if u in KNOWN_WORDS else closeness(u, q)
            if close is None:
                break
            key, k = (key[0] + close[0], key[1] + close[1]), k + 1
        if k:
            rank = (-(k == len(seq)), -k, key)
        elif rest[0] in seq and rest[0] not in _GLUE:
            rank = (1, 0, (0, 0.0))
        else:
            continue
        if best is None or rank < best[0]:
            best = (rank, n, kind, seq, k, False)
        elif rank == best[0] and key[0] > 0:
            best = (*best[:5], True)   # two typo corrections equally close: suggest neither
    word = rest[0]
    problem = f"{'unexpected' if word in KNOWN_WORDS else 'unknown'} word '{shown(word)}' in prompt"
    if word in COLOUR_WORDS and any(kind == "background colour" for kind, _, _ in allowed):
        problem = f"'{word}' is not a background colour"
    if best is None or best[5]:
        return message(problem)
    _, _, kind, seq, k, _ = best
    typo = next((u for u in rest[:k] if u not in KNOWN_WORDS), None)
    ctx = f"{prev} " if kind == "direction" and prev in ("moving", "bouncing") else ""
    if typo is not None:
        problem = f"unknown word '{shown(typo)}' in prompt"
    elif kind in ("motion", "direction"):
        problem = f"'{ctx}{' '.join(rest[:max(k, 1)])}' is not a motion"
    return message(problem, f"; did you mean '{ctx}{' '.join(seq)}'?")


def parse_prompt(text: str) -> Prompt:
    """Validate a prompt and recover the attributes it names."""
    from t2v_rt.generators.text import clean_prompt

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
    if len(words) > MAX_TOKENS and all(w in KNOWN_WORDS for w in words):
        raise UsageError(f"prompt too long ({len(words)} words, at most {MAX_TOKENS})")
    try:       # (an unknown word always stops the parser: it is refused where it stands)
        attrs = _Parser(words).parse()
    except _Stuck as e:
        raise UsageError(_refusal(words, e.at)) from None
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
