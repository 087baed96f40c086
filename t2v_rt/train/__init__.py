"""Adversarial training of the generator: ``t2v-rt train``."""

from t2v_rt.train.loop import TrainConfig, train

__all__ = ["TrainConfig", "train"]
