"""The numbers of the shapes-world contract, in one place. Nothing else hard-codes them."""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 30),
    "cyan": (30, 200, 210),
    "magenta": (210, 40, 200),
    "orange": (245, 130, 20),
}

# Bounding-box side as a fraction of the frame side.
SIZES: dict[str, float] = {"small": 0.16, "large": 0.32}

MOTIONS: tuple[str, ...] = ("left-right", "up-down", "diagonal", "circle", "still")

# Period of one full motion cycle, in seconds.
SPEEDS: dict[str, float] = {"slow": 2.0, "fast": 1.0}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}

# Colour-shape pairs that never appear in training data.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("orange", "triangle"), ("cyan", "square"), ("magenta", "circle")}
)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "motion": MOTIONS,
    "speed": tuple(SPEEDS),
    "background": tuple(BACKGROUNDS),
}

# Motion amplitudes and ranges of the random start position (contract, "Motion of the centre").
AMP_AXIS = 0.30          # left-right, up-down
AMP_DIAG = 0.25          # diagonal, circle
AXIS_OFFSET_RANGE = (0.3, 0.7)
STILL_RANGE = (0.25, 0.75)

# All periods divide this one, so time can be reduced modulo it without changing any frame.
BASE_PERIOD = 2.0


def is_held_out(colour: str | None, shape: str | None) -> bool:
    return (colour, shape) in HELD_OUT
