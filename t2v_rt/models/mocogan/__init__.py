"""Architecture ``mocogan``: a MoCoGAN / TGANs-C style recurrent text-to-video generator
(:mod:`t2v_rt.models.mocogan.generator` says how it works, :mod:`.config` what it is
configured by). The registry imports this package when a config names ``"mocogan"``."""

from t2v_rt.models.mocogan.config import MocoganConfig
from t2v_rt.models.mocogan.generator import ARCHITECTURE, MocoganGenerator, Stem, UpBlock

__all__ = ["ARCHITECTURE", "MocoganConfig", "MocoganGenerator", "Stem", "UpBlock"]
