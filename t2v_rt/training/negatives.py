"""Minimal-pair caption negatives: for a clip's caption, the captions of *other* clips that
differ from it in exactly one word, found in the data alone.

A random other caption differs from a clip's own in many words at once, so a discriminator
can reject it on whichever is easiest to see (a colour) and never learn the rest (a shape):
the batch's captions rarely differ in one attribute only. A minimal pair ("a red circle ..."
against "a red square ..." of another clip, the rest word for word the same) can only be
rejected on that one word, so every word of the captions must be judged. This is hard-negative
mining (VSE++, Faghri et al. 2018; ALBEF's hard negatives, Li et al. 2021) by exact word
substitution instead of by embedding similarity: a sentence encoder's nearest captions of other
clips are often paraphrases of the same scene, and seldom differ in the one word that matters
(docs/training.md gives the numbers on the shapes data).

**Paraphrases are no negatives.** Data often has several captions per clip; where two captions
of the *same* clip differ in one word ("small" / "little", "circle" / "ball"), that
substitution describes the same video, so no minimal pair that differs by it (in either
order) is used. Nothing here knows what the words mean: captions are compared as lower-case
word sequences (:func:`caption_words`).

Drawn per step from the trainer's numpy generator (so a resume stays exact); a clip whose
caption has no minimal pair gets none (``has`` false) and is left out of the loss.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

WORD_RE = re.compile(r"[a-z]+")
MAX_PARTNERS = 64                       # kept per caption (evenly over its differing words)


def caption_words(caption: str) -> tuple[str, ...]:
    """A caption as the lower-case ASCII words it is compared by."""
    return tuple(WORD_RE.findall(caption.lower()))


def _differing(a: tuple[str, ...], b: tuple[str, ...]) -> int | None:
    """The one position where word sequences of equal length differ, else None."""
    if len(a) != len(b):
        return None
    pos = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return pos[0] if len(pos) == 1 else None


class MinimalPairs:
    """The minimal-pair negatives of a caption table ``captions[clip]`` (each clip's captions,
    as :class:`~t2v_rt.data.cache.TrainingSet` holds them). ``partners[text]``: (clip, caption
    text) of other clips whose caption differs from ``text`` in one word, not by a paraphrase;
    at most :data:`MAX_PARTNERS` each."""

    def __init__(self, captions: Sequence[Sequence[str]]):
        self.paraphrases: set[frozenset[str]] = set()
        for caps in captions:
            words = [caption_words(c) for c in dict.fromkeys(caps)]
            for i, a in enumerate(words):
                for b in words[i + 1:]:
                    j = _differing(a, b)
                    if j is not None:
                        self.paraphrases.add(frozenset((a[j], b[j])))
        # Captions sharing every word but one: one bucket per (caption, blanked position).
        owners: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
        for clip, caps in enumerate(captions):
            for c in dict.fromkeys(caps):
                owners[caption_words(c)].append((clip, c))
        buckets: dict[tuple, list[tuple[str, ...]]] = defaultdict(list)
        for words in owners:
            for j in range(len(words)):
                buckets[(j, words[:j], words[j + 1:])].append(words)
        self.partners: dict[str, list[tuple[int, str]]] = {}
        for words, mine in owners.items():
            clips = {clip for clip, _ in mine}
            per_word: list[list[tuple[int, str]]] = []
            for j in range(len(words)):
                found = [(clip, text) for other in buckets[(j, words[:j], words[j + 1:])]
                         if other != words
                         and frozenset((words[j], other[j])) not in self.paraphrases
                         for clip, text in owners[other] if clip not in clips]
                if found:
                    per_word.append(found)
            kept = _interleave(per_word, MAX_PARTNERS)
            if kept:
                for _, text in mine:
                    self.partners[text] = kept

    def __len__(self) -> int:
        """How many caption texts have at least one minimal pair."""
        return len(self.partners)

    def draw(self, rng: np.random.Generator, captions: Sequence[str]
             ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """One minimal-pair negative per caption, uniformly among its partners: (the partner's
        clip, int64 [B], -1 where none; its text, the caption itself where none; ``has`` bool
        [B]). :meth:`draw_many` with k = 1 (the same draws from ``rng``)."""
        clips, texts, has = self.draw_many(rng, captions, 1)
        return clips[:, 0], texts, has

    def draw_many(self, rng: np.random.Generator, captions: Sequence[str], k: int
                  ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``k`` minimal-pair candidates per caption, each uniform among its partners (with
        replacement): (their clips, int64 [B, k], -1 where none; their texts, row-major
        [B * k], the caption itself where none; ``has`` bool [B]). Draws ``k`` numbers per
        caption that has partners. The discriminators keep the hardest (VSE++'s max of hinges,
        Faghri et al. 2018): the one each finds most plausible for the real clip."""
        if k < 1:
            raise ValueError(f"k must be 1 or more, got {k}")
        clips = np.full((len(captions), k), -1, dtype=np.int64)
        texts = [c for c in captions for _ in range(k)]
        has = np.zeros(len(captions), dtype=bool)
        for i, c in enumerate(captions):
            options = self.partners.get(c)
            if options:
                for j, pick in enumerate(rng.integers(len(options), size=k)):
                    clips[i, j], texts[i * k + j] = options[int(pick)]
                has[i] = True
        return clips, texts, has


def _interleave(groups: list[list[tuple[int, str]]], limit: int) -> list[tuple[int, str]]:
    """Up to ``limit`` items taken round-robin from ``groups`` (so every differing word keeps
    some partners, however many the commonest word has)."""
    out: list[tuple[int, str]] = []
    depth = 0
    while len(out) < limit and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(out) < limit:
                out.append(g[depth])
        depth += 1
    return out


__all__ = ["MAX_PARTNERS", "MinimalPairs", "caption_words"]
