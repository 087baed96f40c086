"""The generator interface, owned by the runtime. Every architecture implements it; the pipeline,
backends, compilers, encoders and CLI use nothing else.

A text-to-video generator here is four pieces of work:

1. **text front end** (:class:`~t2v_rt.generators.text.TextFrontEnd`, torch-free): prompt ->
   the style network's text input (``front_end().features``), with its own vocabulary and its
   own one-line errors for prompts it cannot read. Which input is ``config.text_input``:
   ``"tokens"``, token ids ``[B, L]`` int64; or ``"text_embedding"``, a frozen pretrained
   sentence embedding ``[B, E]`` float32 computed on the host (config ``text_encoder``), so
   the encoder stays out of the generator and its graphs;
2. **latent**: seed -> z ``[Z]`` (the config's :meth:`~GeneratorConfig.latent`);
3. **per video** (:meth:`VideoGenerator.style`): text, z -> style ``w`` ``[B, S]``, once;
4. **per frame**, in one of two forms (``config.FORM``):

   - ``continuous``: frame features are a function of time, computed on the host
     (:meth:`GeneratorConfig.time_features`: t -> ``[N, F]``), so any batch of any times can
     be generated in any order (today's shapes model, StyleGAN-V);
   - ``recurrent``: the video carries a state ``[B, D]`` (:meth:`VideoGenerator.initial_state`,
     from ``w``) and each frame is one step (:meth:`VideoGenerator.step`: w, state -> features
     ``[B, F]``, next state), as MoCoGAN's GRU motion and autoregressive video models do. The
     runtime keeps the state on the device between batches; the cost per frame is constant,
     so a stream can run for hours.

   Either way the frames themselves come from :meth:`VideoGenerator.synthesize`:
   w ``[N, S]``, features ``[N, F]`` -> frames ``[N, 3, R, R]`` in [-1, 1], batched over any
   frames of any videos: the expensive part, the one backends compile and fuse.

Plus the native resolution (``config.resolution``) and the frame-rate policy
(``config.native_fps``: None for any rate; a recurrent generator steps at its native rate and
the runtime maps output frames onto steps, :class:`t2v_rt.pipeline.Video`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from t2v_rt.generators.config import GeneratorConfig


class VideoGenerator(nn.Module, ABC):
    """The PyTorch half of the interface (see the module docstring). Subclasses set ``Config``
    (their :class:`GeneratorConfig` subclass) and take it as their only constructor argument.

    Shapes: ``text`` tokens ``[B, L]`` int64 or an embedding ``[B, E]`` float32
    (``config.text_input``), ``z [B, Z]``, ``w [B, S]``, ``features [N, F]``, ``state [B, D]``,
    frames ``[N, 3, R, R]`` float in [-1, 1].
    """

    Config: ClassVar[type[GeneratorConfig]]

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config

    @property
    def form(self) -> str:
        return self.config.FORM

    @abstractmethod
    def style(self, text, z):
        """text (tokens [B, L] int64 or an embedding [B, E] float32, as ``config.text_input``
        says), z [B, Z] -> w [B, S] (once per video)."""

    @abstractmethod
    def synthesize(self, w, features):
        """w [N, S], features [N, F] -> frames [N, 3, R, R] in [-1, 1]."""

    def initial_state(self, w):
        """Recurrent generators: w [B, S] -> state [B, D] before the first frame."""
        raise NotImplementedError(f"{type(self).__name__} is not a recurrent generator")

    def step(self, w, state):
        """Recurrent generators: w [B, S], state [B, D] -> (features [B, F], state [B, D])."""
        raise NotImplementedError(f"{type(self).__name__} is not a recurrent generator")

    # --- helpers every backend and test uses ------------------------------------------------

    @property
    def style_dim(self) -> int:
        """Width of ``w``, measured once on a tiny input (architectures may override)."""
        if not hasattr(self, "_style_dim"):
            text = torch.from_numpy(self.config.front_end().placeholder(1))
            with torch.no_grad():
                p = next(self.parameters())
                self._style_dim = int(self.style(text.to(p.device),
                                                 torch.zeros(1, self.config.latent_dim,
                                                             device=p.device)).shape[1])
        return self._style_dim

    def video_features(self, w, times=None, steps: int | None = None):
        """Per-frame features of one batch of videos: continuous from ``times`` [T] (float64
        seconds, the same for every video), recurrent by stepping ``steps`` frames from the
        initial state. -> [B, T, F]."""
        if self.form == "continuous":
            f = torch.as_tensor(self.config.time_features(times), dtype=w.dtype, device=w.device)
            return f.unsqueeze(0).expand(w.shape[0], -1, -1)
        state, out = self.initial_state(w), []
        for _ in range(steps):
            f, state = self.step(w, state)
            out.append(f)
        return torch.stack(out, dim=1)

    def forward(self, text, z, times):
        """text [B, L] or [B, E] (:meth:`style`), z [B, Z], times [T] (float64 seconds;
        recurrent: frame k is step k) -> frames [B, T, 3, R, R]."""
        w = self.style(text, z)
        feats = self.video_features(w, times, steps=len(times))
        b, t = feats.shape[:2]
        frames = self.synthesize(w.repeat_interleave(t, dim=0), feats.reshape(b * t, -1))
        return frames.view(b, t, *frames.shape[1:])


__all__ = ["VideoGenerator"]
