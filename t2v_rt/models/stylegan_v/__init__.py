"""Architecture ``stylegan-v``: a StyleGAN-V style continuous-time text-to-video generator
(:mod:`t2v_rt.models.stylegan_v.generator` says how it works, :mod:`.config` what it is
configured by). The registry imports this package when a config names ``"stylegan-v"``."""

from t2v_rt.models.stylegan_v.config import StyleganVConfig
from t2v_rt.models.stylegan_v.generator import (ARCHITECTURE, ModulatedConv, ModulatedUpConv,
                                                StyleganVGenerator, ToRGB)

__all__ = ["ARCHITECTURE", "ModulatedConv", "ModulatedUpConv", "StyleganVConfig",
           "StyleganVGenerator", "ToRGB"]
