"""Adversarial training of the generator: ``t2v-rt train``."""

from t2v_rt.train.loop import TrainConfig, Trainer, train

__all__ = ["TrainConfig", "Trainer", "train"]
