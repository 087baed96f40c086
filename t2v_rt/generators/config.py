"""Typed, bounded model configs: the JSON beside the weights is validated before anything is built.

A generator's config is a dataclass whose fields carry their bounds (:func:`bounded`,
:func:`bounded_list`). :func:`from_dict` checks, in this order and without allocating anything:
the JSON is an object; every key is known; every value has its type (an int is not a bool, a
float is finite); every number and list length is within its bounds; then the class's own
cross-field rules (:meth:`GeneratorConfig.check`). Bounds are per architecture and generous for
real models, so that no config can make t2v-rt build something huge: ``channels: [1000000]``
or ``text_layers: 1000000`` is one line naming the field and its range, in microseconds.
Whether a config that passes fits its weights is checked next, against the weights file's
header, still before any allocation (``t2v_rt.generators.io``).

The config also carries the torch-free half of the generator interface (the text front end,
the latent, the per-frame time features, the frame-rate policy): what a compiled backend
needs without building the PyTorch module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any, ClassVar

from t2v_rt.errors import ConfigError

FORMS = ("continuous", "recurrent")


def bounded(default: Any, lo: float, hi: float, doc: str = "", *, choices: tuple | None = None):
    """A number field in [lo, hi] (or a string among ``choices``)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc, "choices": choices})


def bounded_list(default: list, lo: float, hi: float, min_len: int, max_len: int, doc: str = ""):
    """A list of numbers, each in [lo, hi], of length in [min_len, max_len]."""
    return field(default_factory=lambda: list(default),
                 metadata={"lo": lo, "hi": hi, "min_len": min_len, "max_len": max_len, "doc": doc})


def word_list(default: list[str], max_len: int, doc: str = "", max_word: int = 32):
    """A list of distinct lower-case words (a vocabulary)."""
    return field(default_factory=lambda: list(default),
                 metadata={"words": True, "min_len": 1, "max_len": max_len, "max_word": max_word,
                           "doc": doc})


def text_encoder_field(doc: str = "a pretrained sentence encoder read instead of vocab "
                                   "(null: the vocabulary)"):
    """``text_encoder``: null (the config's own word vocabulary) or the name of a pretrained
    sentence encoder (:data:`t2v_rt.generators.text.PRETRAINED_ENCODERS`)."""
    from t2v_rt.generators.text import PRETRAINED_ENCODERS

    return field(default=None, metadata={"choices": tuple(PRETRAINED_ENCODERS), "doc": doc,
                                         "optional": True})


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", list: "a list"}.get(t, str(t))


def _check_scalar(name: str, value: Any, kind: type, meta: dict) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"model config: '{name}' must be a number, got {json.dumps(value)[:40]}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"model config: '{name}' must be finite, got {value}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                value = int(value)
            else:
                raise ConfigError(f"model config: '{name}' must be an integer, got "
                                  f"{json.dumps(value)[:40]}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"model config: '{name}' must be a string, got {json.dumps(value)[:40]}")
        choices = meta.get("choices")
        if choices and value not in choices:
            null = " (or null)" if meta.get("optional") else ""
            raise ConfigError(f"model config: '{name}' must be one of {', '.join(choices)}"
                              f"{null}, got '{value[:40]}'")
        return value
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and not lo <= value <= hi:
        raise ConfigError(f"model config: '{name}' must be in [{lo:g}, {hi:g}], got {value:g}")
    return value


def _element_type(f) -> type:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return float if "float" in str(t) else int


@dataclass
class GeneratorConfig:
    """Base of every architecture's config. Subclasses set ``ARCH`` and ``FORM`` and declare
    their fields with :func:`bounded` / :func:`bounded_list` / :func:`word_list`."""

    ARCH: ClassVar[str] = ""
    FORM: ClassVar[str] = "continuous"      # or "recurrent" (see t2v_rt.generators.interface)

    resolution: int = bounded(64, 8, 1024, "frame side in pixels (square frames)")
    latent_dim: int = bounded(16, 1, 1024, "size of the per-video latent z")

    # --- validation ---------------------------------------------------------------------

    def check(self) -> None:
        """Cross-field rules of the architecture (raise :class:`ConfigError`); none by default."""

    @classmethod
    def from_dict(cls, data: Any) -> GeneratorConfig:
        """Validate ``data`` (a parsed JSON object, with or without its ``architecture`` key)
        and build the config; every failure is one :class:`ConfigError` line."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "architecture"}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"model config: unknown key '{str(unknown[0])[:40]}' for architecture "
                              f"'{cls.ARCH}'; known keys: {', '.join(known)}")
        values = {}
        for name, f in known.items():
            if name not in data:
                continue
            values[name] = _check_field(f, data[name])
        try:
            cfg = cls(**values)
        except TypeError as e:      # a field without a default left out
            raise ConfigError(f"model config: {e}") from None
        cfg.check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.ARCH, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # --- the torch-free half of the generator interface ---------------------------------

    def front_end(self):
        """The text front end (:class:`t2v_rt.generators.text.TextFrontEnd`): the pretrained
        encoder's when the config has a ``text_encoder`` field naming one (shared; ``vocab`` and
        ``max_tokens`` are then unused), else the vocabulary's (``vocab``, ``max_tokens``). A
        family may bring its own (the shapes world's grammar)."""
        from t2v_rt.generators.text import VocabularyFrontEnd, pretrained_front_end

        name = getattr(self, "text_encoder", None)
        if name:
            return pretrained_front_end(name)
        return VocabularyFrontEnd(self.vocab, self.max_tokens)

    @property
    def text_input(self) -> str:
        """What the style network takes, and the name of the style graph's first input:
        ``"tokens"`` (int64 ``[B, max_tokens]``) or ``"text_embedding"`` (float32 ``[B, dim]``,
        a pretrained front end's); the same as ``front_end().text_input``, known without
        making the front end."""
        return "text_embedding" if getattr(self, "text_encoder", None) else "tokens"

    @property
    def text_embedding_dim(self) -> int:
        """Width of the pretrained encoder's embedding (0 without one)."""
        from t2v_rt.generators.text import PRETRAINED_ENCODERS

        name = getattr(self, "text_encoder", None)
        return PRETRAINED_ENCODERS[name] if name else 0

    def latent(self, seed: int):
        """The per-video latent of a seed: ``[latent_dim]`` float32 numpy array, standard normal,
        the same on every platform: bit for bit what PyTorch's CPU generator gives on Linux
        x86-64 (``torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed))``),
        computed without torch (:func:`t2v_rt.generators.latent.standard_normal`)."""
        from t2v_rt.generators.latent import standard_normal

        return standard_normal(int(seed), self.latent_dim)

    @property
    def feature_dim(self) -> int:
        """Width of the per-frame features the frames graph takes (time features of a
        continuous generator, motion codes of a recurrent one)."""
        raise NotImplementedError

    @property
    def state_dim(self) -> int:
        """Width of a recurrent generator's state (0 for a continuous one)."""
        return 0

    def time_features(self, t):
        """Continuous generators: [N] float64 seconds -> [N, feature_dim] float32, computed on
        the host in float64 so that t = 600 s is as exact as t = 0."""
        raise NotImplementedError

    @property
    def native_fps(self) -> Fraction | None:
        """The frame rate a recurrent generator steps at (one step per frame at this rate);
        None: any rate (continuous time)."""
        return None

    @property
    def default_fps(self) -> Fraction:
        return self.native_fps or Fraction(30)


def _check_field(f, value: Any) -> Any:
    meta = dict(f.metadata)
    if meta.get("words"):
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
            raise ConfigError(f"model config: '{f.name}' must be a list of words")
        if not meta["min_len"] <= len(value) <= meta["max_len"]:
            raise ConfigError(f"model config: '{f.name}' must have {meta['min_len']} to "
                              f"{meta['max_len']} words, got {len(value)}")
        bad = [w for w in value if not (0 < len(w) <= meta["max_word"] and w.isalpha()
                                        and w == w.lower() and w.isascii())]
        if bad:
            raise ConfigError(f"model config: '{f.name}' holds '{bad[0][:40]}', not a lower-case "
                              f"ASCII word of at most {meta['max_word']} letters")
        if len(set(value)) != len(value):
            raise ConfigError(f"model config: '{f.name}' repeats a word")
        return list(value)
    if "min_len" in meta:
        if not isinstance(value, list):
            raise ConfigError(f"model config: '{f.name}' must be a list, got "
                              f"{json.dumps(value)[:40]}")
        if not meta["min_len"] <= len(value) <= meta["max_len"]:
            raise ConfigError(f"model config: '{f.name}' must have {meta['min_len']} to "
                              f"{meta['max_len']} entries, got {len(value)}")
        kind = _element_type(f)
        return [_check_scalar(f"{f.name}[{i}]", v, kind, meta) for i, v in enumerate(value)]
    t = str(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", f.type))
    if t.replace(" ", "").endswith("|None"):        # optional: null is a value
        if value is None:
            return None
        t = t.split("|")[0].strip()
    kind = {"int": int, "float": float, "str": str}.get(t)
    if kind is None:
        raise ConfigError(f"model config: field '{f.name}' has unsupported type {t}")
    return _check_scalar(f.name, value, kind, meta)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> {key: value}; VALUE is JSON (numbers, lists), else a string.
    NaN and Infinity are refused (JSON does not have them)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item[:60]}: expected KEY=VALUE")
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            value = text
        out[key] = value
    return out


def _no_constant(name: str):
    raise ConfigError(f"--set: {name} is not a value a config can hold")


__all__ = ["FORMS", "GeneratorConfig", "bounded", "bounded_list", "parse_set",
           "text_encoder_field", "word_list"]
