"""Architecture ``stylegan-v``: a StyleGAN-V style continuous-time text-to-video generator
(:mod:`t2v_rt.models.stylegan_v.generator` says how it works, :mod:`.config` what it is
configured by). The registry imports this package when a config names ``"stylegan-v"``."""

from t2v_rt.generators.registry import Architecture
from t2v_rt.models.stylegan_v.config import StyleganVConfig

# The generator module (PyTorch) is imported only when a generator is built: reading a config
# and checking a prompt stay torch-free.
ARCHITECTURE = Architecture(
    name="stylegan-v",
    generator="t2v_rt.models.stylegan_v.generator:StyleganVGenerator",
    config=StyleganVConfig,
    summary="StyleGAN-V: mapping network, continuous-time motion codes from sinusoids of t, "
            "StyleGAN2 modulated-conv synthesis (ModulatedUpConv blocks)",
    presets={
        "tiny": {"resolution": 16, "channels": [16, 16, 8], "latent_dim": 16, "text_dim": 16,
                 "w_dim": 32, "mapping_layers": 2, "motion_dim": 16},
        "default": {},
    },
)

_GENERATOR_NAMES = ('StyleganVGenerator', 'ModulatedConv', 'ModulatedUpConv', 'ToRGB')


def __getattr__(name: str):
    if name in _GENERATOR_NAMES:
        from t2v_rt.models.stylegan_v import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHITECTURE", "StyleganVConfig", *_GENERATOR_NAMES]
