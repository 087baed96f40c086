"""The text-conditioned continuous-time video GAN: generator, discriminators, config, I/O."""

from t2v_rt.model.config import ModelConfig
from t2v_rt.model.generator import Generator

__all__ = ["Generator", "ModelConfig"]
