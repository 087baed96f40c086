"""Datasets of captioned videos (docs/datasets.md), torch-free (numpy + PyAV):

- :mod:`~t2v_rt.data.format`: the folder format (videos + ``captions.csv`` or
  ``captions.jsonl``), read robustly;
- :mod:`~t2v_rt.data.check`: ``t2v-rt dataset check``: what a folder holds, what is wrong;
- :mod:`~t2v_rt.data.cache`: the training cache (:func:`open_training_set`): every clip decoded
  once into one memory-mapped uint8 array;

The shapes world written as such a folder (``t2v-rt dataset render-shapes``) belongs to its
family: :mod:`t2v_rt.models.shapes.dataset_folder` (the runtime core imports no model family).
"""

from t2v_rt.data.cache import TrainingSet, open_training_set
from t2v_rt.data.format import DatasetError

__all__ = ["TrainingSet", "open_training_set", "DatasetError"]
