"""Training settings: a dataclass per trainer whose fields carry their type and bounds.

The fields are declared with :func:`t2v_rt.generators.config.bounded` (numbers), :func:`flag`
(true/false) and :func:`text` (paths, names, choices); :class:`Settings` gives every such
dataclass the same checked ways in: :meth:`Settings.from_dict` (a JSON object, e.g. a run's
``config.json``), :meth:`Settings.set` (one setting, e.g. from a command-line option),
:func:`apply_settings` (``--set KEY=VALUE`` items) and :func:`read_settings` (a JSON file).
Each refuses, in one line naming the setting, a wrong type, a non-finite number or a value out
of its range (stylegan3 ``train.py``: a dataclass config saved as JSON beside each run).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Any

from t2v_rt.errors import ConfigError, UsageError
from t2v_rt.generators.config import _check_field

MAX_CONFIG_BYTES = 1 << 20
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def flag(default: bool, doc: str = ""):
    """A true/false setting."""
    return field(default=default, metadata={"flag": True, "doc": doc})


def text(default: str, kind: str, doc: str = "", choices: tuple | None = None):
    """A text setting: ``kind`` "path" (a folder or file), "name" (run folder names), or
    "choice" (one of ``choices``)."""
    return field(default=default, metadata={"text": kind, "doc": doc, "choices": choices})


def json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                     type(value).__name__)


def show(value: Any) -> str:
    """A value as a one-line message may print it (JSON, at most 40 characters)."""
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def check_setting(f, value: Any, source: str) -> Any:
    """One flag, text or bounded-number setting, checked; one ConfigError line if bad."""
    meta = f.metadata
    if meta.get("flag"):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{f.name}' must be true or false, got {show(value)}")
        return value
    kind = meta.get("text")
    if kind:
        if kind == "path" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{f.name}' must be a string, got {show(value)}")
        if kind == "path" and (not value or "\0" in value or len(value) > 4096):
            raise ConfigError(f"{source}: '{f.name}' must be a folder path, got {show(value)}")
        if kind == "name" and not NAME_RE.fullmatch(value):
            raise ConfigError(f"{source}: '{f.name}' names the run folders: 1 to 64 letters, "
                              f"digits, '.', '_' or '-', starting with a letter or digit; got "
                              f"{show(value)}")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{source}: '{f.name}' must be one of "
                              f"{', '.join(meta['choices'])}, got {show(value)}")
        return value
    try:
        return _check_field(f, value)
    except ConfigError as e:
        raise ConfigError(f"{source}: {str(e).removeprefix('model config: ')}") from None


class Settings:
    """Mixin of a trainer's settings dataclass (see the module docstring)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def check_value(cls, f, value: Any, source: str) -> Any:
        """One setting, checked (a subclass adds its structured settings, e.g. a model)."""
        return check_setting(f, value, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "training config"):
        """A parsed JSON object -> a validated config; every failure is one ConfigError line."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a JSON object, got {json_type(data)}; write "
                              "settings as {\"steps\": 1000, ...} (a run's config.json is one)")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting '{unknown[0][:40]}'; the settings are "
                              f"{', '.join(known)}")
        cfg = cls(**{k: cls.check_value(known[k], v, source) for k, v in data.items()})
        cfg.check(source)
        return cfg

    def set(self, key: str, value: Any, source: str) -> None:
        """Set one setting, checked (``source`` names where the value came from)."""
        f = {f.name: f for f in fields(self)}.get(key)
        if f is None:
            raise ConfigError(f"{source}: unknown setting '{key[:40]}'")
        setattr(self, key, self.check_value(f, value, source))

    def check(self, source: str = "training config") -> None:
        """The rules across settings (each setting alone is checked where it is parsed)."""

    def validate(self, source: str = "training config"):
        """This config, every setting checked (for configs built in code); a checked copy."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self).from_dict(data, source)


class _NotFinite(Exception):
    pass


def _no_constant(name: str):
    raise _NotFinite(name)


def parse_value(f, key: str, text: str, source: str) -> Any:
    """The value of ``--set KEY=TEXT`` for the setting ``f``: JSON (a text setting takes the
    text as it is); NaN and Infinity refused in one line."""
    if f.metadata.get("text"):
        return text
    try:
        return json.loads(text, parse_constant=_no_constant)
    except _NotFinite as e:
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        rng = f"; give a number in [{lo:g}, {hi:g}]" if lo is not None else ""
        raise ConfigError(f"{source}: '{key}' must be a finite number, got {e}{rng}") from None
    except (ValueError, RecursionError):
        return text


def apply_settings(cfg: Settings, items: list[str]) -> None:
    """``--set KEY=VALUE`` items onto ``cfg``, each checked. VALUE is JSON (a string setting
    takes the text as it is); NaN, Infinity and numbers out of range are refused."""
    known = {f.name: f for f in fields(cfg)}
    for item in items:
        key, eq, value_text = item.partition("=")
        if not eq or key not in known:
            raise ConfigError(f"--set {item[:60]}: expected KEY=VALUE with KEY one of "
                              f"{', '.join(known)}")
        source = f"--set {key}"
        cfg.set(key, parse_value(known[key], key, value_text, source), source)


def read_json_file(path: str | Path, source: str) -> Any:
    """A small JSON file (a training config) -> its parsed value; one line if unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read {source} ({e.strerror or e}); pass a training config "
                         "JSON file, such as a run folder's config.json") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is over {MAX_CONFIG_BYTES} bytes; a training config is a "
                          "small JSON object, such as a run folder's config.json")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except _NotFinite as e:
        raise ConfigError(f"{source} holds {e}, which is not a finite number; give numbers "
                          "within each setting's range") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text; pass a training config JSON file, "
                          "such as a run folder's config.json") from None
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{source} is not valid JSON ({str(e)[:80]}); fix it or start from "
                          "a run folder's config.json") from None


def read_settings(cls: type, path: str | Path):
    """A training config JSON file (e.g. a run's config.json) -> the validated ``cls``."""
    source = f"--config {Path(path)}"
    return cls.from_dict(read_json_file(path, source), source)


__all__ = ["MAX_CONFIG_BYTES", "NAME_RE", "Settings", "apply_settings", "check_setting", "flag",
           "json_type", "parse_value", "read_json_file", "read_settings", "show", "text"]
