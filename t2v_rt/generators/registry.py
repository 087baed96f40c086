"""Architectures by name: the built-in ones and plugins from the entry-point group
``t2v_rt.generators``.

The weights' JSON config names its architecture (``"architecture": "stylegan-v"``); this
registry maps the name to an :class:`Architecture` (its config class and generator class).
A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."t2v_rt.generators"]
    my-gan = "my_gan_plugin:ARCHITECTURE"

and after ``pip install my-gan-plugin``, ``t2v-rt stream --model theirs.safetensors`` runs it
with no change to t2v-rt. Nothing is imported until a name is looked up, so listing the
architectures and reading a config stay cheap and a broken plugin breaks only itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from t2v_rt.errors import ConfigError, RuntimeUnavailable

GROUP = "t2v_rt.generators"

# The architectures shipped in this tree, as "module:attribute" (imported on first use only;
# the runtime core imports none of their modules).
BUILTIN = {
    "shapes": "t2v_rt.models.shapes:ARCHITECTURE",
    "mocogan": "t2v_rt.models.mocogan:ARCHITECTURE",
    "stylegan-v": "t2v_rt.models.stylegan_v:ARCHITECTURE",
}


@dataclass(frozen=True)
class Architecture:
    """What a registered architecture provides.

    ``generator``: its :class:`~t2v_rt.generators.interface.VideoGenerator` subclass, or that
    class as ``"module:attribute"``, imported only when a generator is built (so that reading
    a config and checking a prompt need no PyTorch); then ``config`` must name the config
    class (else it is ``generator.Config``).
    """

    name: str
    generator: type | str
    summary: str = ""
    # Named starting configs for init-model: {"tiny": {...}, "default": {...}} (overrides of
    # the config class's defaults); "tiny" must be small enough for Triton's CPU interpreter.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: type | None = None

    @property
    def generator_class(self) -> type:
        if isinstance(self.generator, str):
            module, _, attr = self.generator.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.generator

    @property
    def config_class(self):
        return self.config if self.config is not None else self.generator_class.Config


@dataclass(frozen=True)
class Entry:
    name: str
    target: str         # "module:attribute"
    origin: str         # "built-in", or the distribution that declares the entry point


def _entry_points() -> list[Entry]:
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "entry point"
        out.append(Entry(ep.name, ep.value, origin))
    return out


def entries() -> dict[str, Entry]:
    """Every registered name -> where it comes from (built-ins first; a plugin cannot shadow
    a built-in name)."""
    out = {name: Entry(name, target, "built-in") for name, target in BUILTIN.items()}
    for e in _entry_points():
        if e.name in out and out[e.name].target == e.target:
            continue            # t2v-rt's own entry points name its built-ins
        out.setdefault(e.name, e)
    return out


_loaded: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Register an architecture in this process (tests, notebooks); plugins use entry points."""
    _loaded[arch.name] = arch
    return arch


def get(name: str) -> Architecture:
    """The architecture ``name``, imported now; one clear line if unknown or broken."""
    if name in _loaded:
        return _loaded[name]
    # a built-in name needs no scan of the installed distributions (tens of ms at start-up)
    known = {name: Entry(name, BUILTIN[name], "built-in")} if name in BUILTIN else entries()
    if name not in known:
        names = ", ".join(sorted(set(known) | set(_loaded)))
        raise ConfigError(f"unknown architecture '{str(name)[:40]}' (registered: {names}); install "
                          f"the plugin that provides it (entry-point group '{GROUP}')")
    e = known[name]
    module_name, _, attr = e.target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr or "ARCHITECTURE")
        arch = obj() if callable(obj) and not isinstance(obj, Architecture) else obj
    except Exception as err:  # noqa: BLE001 - a broken plugin is a "no" with its reason
        raise RuntimeUnavailable(f"architecture '{name}' ({e.origin}, {e.target}) cannot be "
                                 f"loaded: {type(err).__name__}: {str(err)[:160]}") from None
    if not isinstance(arch, Architecture) or arch.name != name:
        raise RuntimeUnavailable(f"architecture '{name}' ({e.origin}): {e.target} is not an "
                                 f"Architecture named '{name}'")
    _loaded[name] = arch
    return arch



__all__ = ["BUILTIN", "GROUP", "Architecture", "Entry", "entries", "get",
           "register"]
