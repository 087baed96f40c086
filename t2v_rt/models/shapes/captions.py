"""Captions for (partial) attribute sets: the canonical form and every paraphrase."""

from __future__ import annotations

import random

from t2v_rt.models.shapes import spec

SIZE_PHRASES = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_PHRASES = {"circle": ("circle", "ball", "disc"), "square": ("square", "box"),
                 "triangle": ("triangle",)}
MOTION_PHRASES = {
    "left-right": ("moving left and right", "bouncing left and right", "moving horizontally"),
    "up-down": ("moving up and down", "bouncing up and down", "moving vertically"),
    "diagonal": ("moving diagonally",),
    "circle": ("moving in a circle", "circling"),
    "still": ("standing still", "not moving", "staying still"),
}
SPEED_PHRASES = {"slow": ("slowly", "slow"), "fast": ("quickly", "fast")}
BACKGROUND_PREPOSITIONS = ("on", "over")
CANONICAL_MOTION = {"left-right": "moving left and right", "up-down": "moving up and down",
                    "diagonal": "moving diagonally", "circle": "moving in a circle",
                    "still": "standing still"}


def caption(attrs: dict[str, str | None], rng: random.Random | None = None) -> str:
    """A prompt naming exactly the given attributes (None: left out).

    With ``rng`` None the canonical wording is used; otherwise paraphrases are drawn from it.
    """
    def pick(options: tuple[str, ...]) -> str:
        return options[0] if rng is None else rng.choice(options)

    words = ["a"]
    if attrs.get("size"):
        words.append(pick(SIZE_PHRASES[attrs["size"]]))
    if attrs.get("colour"):
        words.append(attrs["colour"])
    words.append(pick(SHAPE_PHRASES[attrs["shape"]]) if attrs.get("shape") else "shape")
    motion, speed = attrs.get("motion"), attrs.get("speed")
    if motion == "still":
        words.append(pick(MOTION_PHRASES["still"]))
    elif motion:
        words.append(CANONICAL_MOTION[motion] if rng is None else pick(MOTION_PHRASES[motion]))
        if speed:
            words.append(pick(SPEED_PHRASES[speed]))
    elif speed:
        words += ["moving", pick(SPEED_PHRASES[speed])]
    if attrs.get("background"):
        words += [pick(BACKGROUND_PREPOSITIONS), "a", attrs["background"], "background"]
    return " ".join(words)


def sample_attributes(rng: random.Random, p_omit: float = 0.0) -> dict[str, str | None]:
    """Random attributes of the training distribution: never a held-out colour-shape pair.

    Each attribute is left out with probability ``p_omit``; speed is always left out of a
    still motion (it has none).
    """
    while True:
        attrs: dict[str, str | None] = {k: rng.choice(v) for k, v in spec.ATTRIBUTES.items()}
        if not spec.is_held_out(attrs["colour"], attrs["shape"]):
            break
    for name in attrs:
        if rng.random() < p_omit:
            attrs[name] = None
    if attrs["motion"] == "still":
        attrs["speed"] = None
    return attrs
