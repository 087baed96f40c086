"""Architecture ``mocogan``: a MoCoGAN / TGANs-C style recurrent text-to-video generator
(:mod:`t2v_rt.models.mocogan.generator` says how it works, :mod:`.config` what it is
configured by). The registry imports this package when a config names ``"mocogan"``."""

from t2v_rt.generators.registry import Architecture
from t2v_rt.models.mocogan.config import MocoganConfig

# The generator module (PyTorch) is imported only when a generator is built: reading a config
# and checking a prompt stay torch-free.
ARCHITECTURE = Architecture(
    name="mocogan",
    generator="t2v_rt.models.mocogan.generator:MocoganGenerator",
    config=MocoganConfig,
    summary="MoCoGAN / TGANs-C: content code + GRU motion driven by deterministic phasor "
            "pseudo-noise, DCGAN image generator (ConvTranspose2d-BatchNorm-ReLU blocks), "
            "native 15 fps",
    presets={
        "tiny": {"resolution": 32, "channels": [16, 8, 8], "latent_dim": 12,
                 "content_latent": 8, "text_dim": 16, "content_dim": 16, "motion_dim": 8,
                 "noise_dim": 4, "oscillators": 4},
        "default": {},
    },
)

_GENERATOR_NAMES = ('MocoganGenerator', 'Stem', 'UpBlock')


def __getattr__(name: str):
    if name in _GENERATOR_NAMES:
        from t2v_rt.models.mocogan import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHITECTURE", "MocoganConfig", *_GENERATOR_NAMES]
