"""Text front ends: prompt -> the style network's text input, torch-free
(``t2v_rt.generators.interface``).

A front end is part of a generator's interface: its own vocabulary, its own one-line errors.
:class:`VocabularyFrontEnd` is the generic one (a word list from the model's config);
a model family may bring its own (the shapes world's grammar parser); a config may instead
name a pretrained sentence encoder (:data:`PRETRAINED_ENCODERS`, :func:`pretrained_front_end`:
all-MiniLM-L6-v2, ``t2v_rt.text_encoders``), which reads any ASCII prompt.

What the style network takes is the front end's :attr:`~TextFrontEnd.text_input`: ``"tokens"``
(token ids ``[B, max_tokens]`` int64, :meth:`~TextFrontEnd.encode`) or ``"text_embedding"``
(a frozen sentence embedding ``[B, dim]`` float32, computed on the host);
:meth:`~TextFrontEnd.features` gives it either way.
"""

from __future__ import annotations

import difflib
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from t2v_rt.errors import ConfigError, UsageError

MAX_PROMPT_CHARS = 1000


def clean_prompt(text: str) -> str:
    """The prompt as the front ends see it: stripped; refused when empty or too long. Words
    are shown back in errors only as printable ASCII (control characters never reach a
    terminal)."""
    if not isinstance(text, str):
        raise UsageError("the prompt must be text")
    text = text.strip()
    if not text:
        raise UsageError('empty prompt; describe what to show, e.g. "a red ball moving left and right"')
    if len(text) > MAX_PROMPT_CHARS:
        raise UsageError(f"prompt too long ({len(text)} characters, at most {MAX_PROMPT_CHARS})")
    odd = re.search(r"[^\x20-\x7e\t\n\r]", text)
    if odd:
        raise UsageError(f"prompt has the character '{shown(odd.group())}' "
                         f"(U+{ord(odd.group()):04X}); write the prompt in plain ASCII letters")
    return text


def shown(word: str, limit: int = 40) -> str:
    """A word as an error message may print it: printable ASCII, at most ``limit`` characters."""
    safe = "".join(c if 32 <= ord(c) < 127 else "?" for c in word)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


# -- "did you mean": one rule for every front end -----------------------------------------------
# A word is suggested only when the word typed is a small typo of it: at most max_typos(known)
# single-letter edits (insert, delete, replace, swap two neighbours). A word that shares little
# with every known word gets no suggestion, and neither does a tie between two known words.


def max_typos(known: str) -> int:
    """Edits allowed between a typed word and ``known`` for it to be suggested: none for a
    one-letter word, one up to six letters, two from seven letters on. (A two-letter word is
    suggested only for two letters typed: "om" gives 'on', "ish" never gives 'is'.)"""
    n = len(known)
    return 0 if n <= 1 else 1 if n <= 6 else 2


def typo_distance(a: str, b: str, limit: int | None = None) -> int:
    """Single-letter edits (insert, delete, replace, swap neighbours) from ``a`` to ``b``
    (optimal string alignment). With ``limit``, any distance over it is returned as limit + 1."""
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if limit is not None and min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def closeness(word: str, known: str) -> tuple[int, float] | None:
    """How close ``word`` is to ``known`` as a sort key (smaller: closer; equal words first), or
    None when ``word`` is not a small typo of it (see :func:`max_typos`)."""
    limit = max_typos(known)
    if len(known) <= 2 and len(word) != len(known):
        return None
    d = typo_distance(word, known, limit)
    if d > limit:
        return None
    return d, -difflib.SequenceMatcher(None, word, known).ratio()


def is_close(word: str, known: str) -> bool:
    """Whether ``word`` is ``known`` or a small typo of it (see :func:`max_typos`)."""
    return closeness(word, known) is not None


def suggest(word: str, known: Sequence[str]) -> str | None:
    """The known word ``word`` is a typo of, or None: none close, or two equally close."""
    ranked = sorted((key, k) for k in dict.fromkeys(known) if (key := closeness(word, k)) is not None)
    if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]):
        return None
    return ranked[0][1]


def listing(items: Sequence[str], limit: int = 6) -> str:
    """``items`` for a one-line message: the first ``limit`` of them, then "..." if more."""
    items = list(items)
    return ", ".join(items[:limit] + (["..."] if len(items) > limit else []))


TEXT_INPUTS = ("tokens", "text_embedding")


class TextFrontEnd(ABC):
    """Prompt -> the style network's text input, torch-free: token ids (``max_tokens`` is the
    graphs' token axis; 0 pads), or a sentence embedding of width ``dim`` (:attr:`text_input`
    says which)."""

    max_tokens: int
    # What the style network (and the style graph's first input, of this name) takes:
    # "tokens": int64 [B, max_tokens] (encode); "text_embedding": float32 [B, dim].
    text_input: str = "tokens"
    dim: int = 0                # the embedding's width (text_input "text_embedding")

    def features(self, prompts: Sequence[str]):
        """The style network's text input for ``prompts`` (numpy): the token ids of
        :meth:`encode` by default; a front end whose :attr:`text_input` is
        ``"text_embedding"`` returns its embeddings ``[B, dim]`` float32."""
        return self.encode(prompts)

    def placeholder(self, batch: int = 1):
        """A valid text input of ``batch`` rows without reading a prompt (shape probes): one
        token of id 1, or the unit vector along the first axis."""
        import numpy as np

        if self.text_input == "tokens":
            x = np.zeros((batch, self.max_tokens), dtype=np.int64)
        else:
            x = np.zeros((batch, self.dim), dtype=np.float32)
        x[:, 0] = 1
        return x

    @abstractmethod
    def encode(self, prompts: Sequence[str]):
        """Token ids ``[B, max_tokens]`` int64 (0 = padding); raises :class:`UsageError` with one
        line naming the word it cannot read and, where one is close, the word meant
        (:func:`suggest`)."""

    def check(self, prompt: str) -> None:
        """Raise :class:`UsageError` if ``prompt`` cannot be read (cheap: before any model work)."""
        self.encode([prompt])

    @abstractmethod
    def example_prompts(self, rng: random.Random, n: int) -> list[str]:
        """``n`` random prompts this front end reads (fresh inputs for export checks)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids, padding included."""


class VocabularyFrontEnd(TextFrontEnd):
    """A word vocabulary (from the config): lower-cased words, punctuation dropped; an unknown
    word is refused, with the known word meant where one is close (:func:`suggest`). Token id of
    word k is k + 1 (0 pads)."""

    def __init__(self, words: Sequence[str], max_tokens: int):
        self.words = tuple(words)
        self.max_tokens = int(max_tokens)
        self._ids = {w: i + 1 for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(self.words) + 1

    def tokenize(self, prompt: str) -> list[str]:
        return re.findall(r"[a-z]+", clean_prompt(prompt).lower())

    def ids(self, prompt: str) -> list[int]:
        """The token ids of one prompt, checked (one line naming an unknown word)."""
        text = clean_prompt(prompt)
        words = self.tokenize(text)
        if not words:
            raise UsageError("the prompt has no words; describe what to show")
        for w in words:
            if w not in self._ids:
                close = suggest(w, self.words)
                hint = f"; did you mean '{close}'?" if close else ""
                raise UsageError(f"unknown word '{shown(w)}' in prompt: this model knows "
                                 f"{len(self.words)} words{hint}")
        if len(words) > self.max_tokens:
            raise UsageError(f"prompt too long ({len(words)} words, this model reads at most "
                             f"{self.max_tokens})")
        return [self._ids[w] for w in words]

    def check(self, prompt: str) -> None:
        self.ids(prompt)

    def encode(self, prompts: Sequence[str]):
        import numpy as np

        ids = np.zeros((len(prompts), self.max_tokens), dtype=np.int64)
        for b, prompt in enumerate(prompts):
            row = self.ids(prompt)
            ids[b, : len(row)] = row
        return ids

    def example_prompts(self, rng: random.Random, n: int) -> list[str]:
        return [" ".join(rng.choice(self.words) for _ in range(rng.randint(1, self.max_tokens)))
                for _ in range(n)]


# A default vocabulary for architectures initialised without one (init-model): common words of
# short video captions (colours, shapes, sizes, motions, speeds, backgrounds). A trained model
# keeps the vocabulary of its captions in its config.
DEFAULT_VOCABULARY = (
    "a an the and on over in of with to is moving bouncing circling standing staying still not "
    "left right up down horizontally vertically diagonally circle ball disc square box triangle "
    "shape small little tiny large big red green blue yellow magenta cyan orange white black "
    "gray grey purple pink brown slowly slow quickly fast background side around"
).split()


# Pretrained sentence encoders a generator's config may name (``text_encoder``): name -> the
# width of its embedding. Frozen; run on the host through ONNX Runtime (t2v_rt.text_encoders).
PRETRAINED_ENCODERS = {"all-MiniLM-L6-v2": 384}


def pretrained_front_end(name: str) -> TextFrontEnd:
    """The front end of the pretrained encoder ``name`` (one per process, shared: the
    tokenizer and the ONNX Runtime session are made once); one line if ``name`` is unknown,
    or if its package is not installed."""
    if name not in PRETRAINED_ENCODERS:
        raise ConfigError(f"unknown text encoder '{shown(str(name))}'; known: "
                          f"{', '.join(PRETRAINED_ENCODERS)}")
    from t2v_rt.text_encoders.minilm import shared_front_end

    return shared_front_end()


__all__ = ["DEFAULT_VOCABULARY", "MAX_PROMPT_CHARS", "PRETRAINED_ENCODERS", "TEXT_INPUTS",
           "TextFrontEnd", "VocabularyFrontEnd", "clean_prompt", "pretrained_front_end",
           "closeness", "is_close", "listing", "max_typos", "shown", "suggest", "typo_distance"]
