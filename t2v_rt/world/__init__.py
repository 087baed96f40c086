"""The shapes world (../shared/shapes-world.md): attributes, scenes, renderer, captions, data."""

from t2v_rt.world.spec import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    MOTIONS,
    SHAPES,
    SIZES,
    SPEEDS,
)
from t2v_rt.world.scene import LATENT_DIM, Scene, latent_from_seed

__all__ = [
    "ATTRIBUTES", "BACKGROUNDS", "COLOURS", "HELD_OUT", "MOTIONS", "SHAPES", "SIZES", "SPEEDS",
    "LATENT_DIM", "Scene", "latent_from_seed",
]
