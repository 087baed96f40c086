"""A scene: the full attributes of one video plus its randomness (phase, start position).

All randomness of a video comes from one per-video latent vector ``z`` (standard normal),
drawn from the seed. The same ``z`` drives the generator and the contract renderer, so for
a prompt and seed there is one "true" video the model is trained and evaluated against:

- phase ``p = atan2(z[1], z[0])`` (uniform on the circle),
- start offsets ``u2 = Phi(z[2])``, ``u3 = Phi(z[3])`` (uniform on [0, 1]),
- for an attribute the prompt leaves out, the value is picked by ``Phi(z[4 + k])`` among the
  values allowed with the given ones (held-out colour-shape pairs are never picked on their
  own; they appear only when the prompt names them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from t2v_rt.models.shapes import spec

LATENT_DIM = 16
_CHOICE_ORDER = ("shape", "colour", "size", "motion", "speed", "background")


def latent_from_seed(seed: int, dim: int = LATENT_DIM) -> torch.Tensor:
    """The per-video latent of a seed: ``[dim]`` float32, standard normal: PyTorch's CPU generator
    (the runtime computes the same bits without PyTorch: ``t2v_rt.generators.latent``)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(dim, generator=g, dtype=torch.float32)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _pick(values: tuple[str, ...], u: float) -> str:
    return values[min(int(u * len(values)), len(values) - 1)]


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    motion: str
    speed: str
    background: str
    phase: float   # radians
    x0: float      # fixed coordinate (up-down: x, still: x)
    y0: float      # fixed coordinate (left-right: y, still: y)

    @staticmethod
    def complete(given: dict[str, str | None], z: torch.Tensor) -> Scene:
        """Fill the attributes the prompt left out and the randomness, from the latent ``z``."""
        zz = [float(v) for v in z[: 4 + len(_CHOICE_ORDER)]]
        attrs: dict[str, str] = {}
        for k, name in enumerate(_CHOICE_ORDER):
            value = given.get(name)
            if value is None:
                allowed = spec.ATTRIBUTES[name]
                if name == "shape" and given.get("colour") is not None:
                    allowed = tuple(x for x in allowed if not spec.is_held_out(given["colour"], x))
                if name == "colour":
                    allowed = tuple(c for c in allowed if not spec.is_held_out(c, attrs["shape"]))
                if name == "motion" and given.get("speed") is not None:
                    allowed = tuple(m for m in allowed if m != "still")  # "moving quickly"
                value = _pick(allowed, _phi(zz[4 + k]))
            attrs[name] = value
        u2, u3 = _phi(zz[2]), _phi(zz[3])
        if attrs["motion"] == "still":
            lo, hi = spec.STILL_RANGE
            x0, y0 = lo + (hi - lo) * u2, lo + (hi - lo) * u3
        else:
            lo, hi = spec.AXIS_OFFSET_RANGE
            x0, y0 = lo + (hi - lo) * u2, lo + (hi - lo) * u3
        phase = math.atan2(zz[1], zz[0])
        return Scene(phase=phase, x0=x0, y0=y0, **attrs)

    @property
    def period(self) -> float:
        return spec.SPEEDS[self.speed]

    def centre(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre ``(x, y)`` at times ``t`` (seconds, any shape), float64 for exactness at large t."""
        t = torch.as_tensor(t, dtype=torch.float64)
        w = 2.0 * math.pi * torch.remainder(t, self.period) / self.period + self.phase
        s, c = torch.sin(w), torch.cos(w)
        one = torch.ones_like(t)
        if self.motion == "left-right":
            return 0.5 + spec.AMP_AXIS * s, self.y0 * one
        if self.motion == "up-down":
            return self.x0 * one, 0.5 + spec.AMP_AXIS * s
        if self.motion == "diagonal":
            return 0.5 + spec.AMP_DIAG * s, 0.5 + spec.AMP_DIAG * s
        if self.motion == "circle":
            return 0.5 + spec.AMP_DIAG * c, 0.5 + spec.AMP_DIAG * s
        return self.x0 * one, self.y0 * one

    def attributes(self) -> dict[str, str]:
        d = asdict(self)
        return {k: d[k] for k in spec.ATTRIBUTES}
