"""Generator weights: ``x.safetensors`` + ``x.json`` (the config, naming its architecture).

Loading checks, before anything is allocated: the config parses and validates within its
architecture's bounds (:mod:`t2v_rt.generators.config`); the generator the config describes
is built on PyTorch's ``meta`` device (shapes only, no memory) and compared, tensor by tensor,
with the shapes in the weights file's header (read alone, not the tensors). Only a config
that fits its weights exactly is built for real and loaded. So a small JSON can never make
t2v-rt allocate more than the weights imply.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from t2v_rt.errors import ConfigError, UsageError
from t2v_rt.files import atomic_write
from t2v_rt.generators.config import GeneratorConfig
from t2v_rt.generators.registry import get

BUNDLED_NAME = "default"
# Configs written before architectures had names are the shapes model's.
LEGACY_ARCH = "shapes"
MAX_CONFIG_BYTES = 1 << 20


def bundled_path() -> Path:
    """Weights shipped inside the package: t2v_rt/weights/default.safetensors (+ .json)."""
    return Path(str(resources.files("t2v_rt") / "weights" / f"{BUNDLED_NAME}.safetensors"))


def bundled_models() -> dict[str, Path]:
    """The models shipped inside the package, by name (``--model NAME``): every
    ``t2v_rt/weights/NAME.safetensors`` with its ``NAME.json`` beside it. ``default`` is the one
    used when no ``--model`` is given."""
    folder = bundled_path().parent
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"), key=lambda p: p.stem)
            if p.with_suffix(".json").is_file()}


def model_path(text: str) -> Path:
    """``--model`` as typed: a bundled model's name (``t2v-rt models`` lists them) unless a
    file or folder of that name exists here; otherwise a path to a ``.safetensors`` file."""
    path = Path(text)
    if not path.exists() and "/" not in text and path.suffix == "":
        named = bundled_models().get(text)
        if named is not None:
            return named
    return path


def require_weights(path: str | Path | None = None) -> Path:
    """``path`` (None: the bundled model) if it and its JSON config exist; else a clear error."""
    path = Path(path) if path is not None else bundled_path()
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise UsageError(
            f"model weights not found at {path} (+ {cfg_path.name}); pass --model PATH to a "
            "'.safetensors' file with its '.json' config beside it (t2v-rt train or "
            "t2v-rt init-model write both), a bundled model's name ("
            f"{', '.join(bundled_models())}), or leave out --model for the bundled default")
    return path


def parse_config(data: Any, source: str = "model config") -> GeneratorConfig:
    """A parsed JSON config -> the validated config of the architecture it names."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object, got {type(data).__name__}")
    arch = data.get("architecture", LEGACY_ARCH)
    if not isinstance(arch, str):
        raise ConfigError(f"{source}: 'architecture' must be a name, got {json.dumps(arch)[:40]}")
    try:
        return get(arch).config_class.from_dict(data)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def read_config(weights: str | Path) -> GeneratorConfig:
    """The validated config beside ``weights`` (``x.json`` for ``x.safetensors``)."""
    path = Path(weights).with_suffix(".json")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"model config {path} is {size} bytes; a config is a small JSON "
                              f"object (at most {MAX_CONFIG_BYTES} bytes)")
        data = json.loads(path.read_text(encoding="utf-8"),
                          parse_constant=lambda c: _bad_constant(path, c))
    except OSError as e:
        raise UsageError(f"cannot read model config {path} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"model config {path} is not UTF-8 text") from None
    except ValueError as e:
        raise ConfigError(f"model config {path} is not valid JSON ({e})") from None
    return parse_config(data, f"model config {path}")


def _bad_constant(path: Path, name: str):
    raise ConfigError(f"model config {path} holds {name}, which is not a value a config can hold")


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header only (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any unreadable header is the same user problem
        raise UsageError(f"model weights {weights} cannot be read as safetensors "
                         f"({type(e).__name__}: {str(e)[:120]}); re-save or re-download them") from None


def shape_plan(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """The generator of ``config`` built on the meta device: tensor name -> shape, no memory.
    Initialisers draw nothing there (a random draw on a meta tensor costs PyTorch seconds of
    lazy imports the first time; the shapes are all that is wanted)."""
    import torch

    cls = get(config.ARCH).generator_class
    with torch.device("meta"), _no_init():
        g = cls(config)
    return {k: tuple(v.shape) for k, v in g.state_dict().items()}


class _no_init:
    """Within: torch.nn.init's initialisers, in-place random fills and random factories
    allocate shapes only (``torch.empty``) and fill nothing."""

    NAMES = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
             "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_",
             "orthogonal_", "eye_", "dirac_", "sparse_")
    FACTORIES = ("randn", "rand", "randint", "randn_like", "rand_like", "normal")

    def __enter__(self):
        import torch

        def keep(tensor, *args, **kwargs):
            return tensor

        def empty(*args, **kwargs):
            return torch.empty(*[a for a in args if not isinstance(a, torch.Tensor)] or [0],
                               **{k: v for k, v in kwargs.items() if k in ("dtype", "device")})

        self.saved = [(torch.nn.init, n, getattr(torch.nn.init, n)) for n in self.NAMES
                      if hasattr(torch.nn.init, n)]
        self.saved += [(torch.Tensor, n, getattr(torch.Tensor, n))
                       for n in ("uniform_", "normal_", "random_", "exponential_")]
        for owner, name, _ in self.saved:
            setattr(owner, name, keep)
        for name in ("randn", "rand"):
            self.saved.append((torch, name, getattr(torch, name)))
            setattr(torch, name, empty)
        return self

    def __exit__(self, *exc):
        for owner, name, fn in reversed(self.saved):
            setattr(owner, name, fn)
        return False


def check_fits(config: GeneratorConfig, weights: Path) -> None:
    """Refuse (one line) a config whose generator does not have exactly the weights' tensors."""
    want, have = shape_plan(config), weight_shapes(weights)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            what = f"'{k}' is {list(have[k])} in the weights, {list(want[k])} by the config"
        elif missing:
            what = f"the weights lack '{missing[0]}'" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        else:
            what = f"the weights hold '{extra[0]}', which the config does not describe"
        raise ConfigError(
            f"model weights {weights} do not fit their config ({config.ARCH}): {what}; use the "
            "config saved with these weights, or retrain them (leave out --model for the "
            "bundled model)")


def load_generator(path: str | Path | None = None, device="cpu"):
    """The generator at ``path`` (None: the bundled model), checked, in eval mode, frozen."""
    from safetensors.torch import load_file

    weights = require_weights(path)
    config = read_config(weights)
    check_fits(config, weights)
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - a header that reads but tensors that do not
        raise UsageError(f"model weights {weights} cannot be read as safetensors "
                         f"({type(e).__name__}: {str(e)[:120]}); re-save or re-download them") from None
    check_finite(state, weights)
    g = get(config.ARCH).generator_class(config)
    g.load_state_dict(state)
    return g.to(device).eval().requires_grad_(False)


def check_finite(state: dict, weights: Path) -> None:
    """Every weight a finite number: NaN or infinite weights (a diverged training run, a bad
    conversion) would stream black or garbage frames with no error."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UsageError(f"model weights {weights} hold {bad} NaN or infinite value(s) in "
                             f"'{name}'; the model is broken (a diverged training run?): use "
                             "an earlier checkpoint or retrain it")


def save_generator(g, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Weights (float32) and config, each written atomically."""
    from safetensors.torch import save

    path = Path(path)
    state = {k: v.detach().float().contiguous().cpu() for k, v in g.state_dict().items()}
    # Serialised in memory, written by Python: a full disk is an OSError naming the file
    # (safetensors' own writer reports it as its SafetensorError).
    data = save(state, metadata=metadata or {})
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(g.config.to_json() + "\n"))


def init_config(arch: str, preset: str = "default", overrides: dict[str, Any] | None = None):
    """The config of ``arch`` from a preset plus overrides, validated."""
    a = get(arch)
    presets = {"default": {}, **a.presets}
    if preset not in presets:
        raise UsageError(f"architecture '{arch}' has no preset '{preset}'; presets: "
                         f"{', '.join(presets)}")
    data = {**presets[preset], **(overrides or {})}
    return parse_config({"architecture": arch, **data}, f"config of '{arch}'")


def build_generator(config: GeneratorConfig, seed: int = 0):
    """A randomly initialised generator of a validated ``config`` (seeded)."""
    import torch

    torch.manual_seed(seed)
    return get(config.ARCH).generator_class(config).eval()


def init_generator(arch: str, preset: str = "default", overrides: dict[str, Any] | None = None,
                   seed: int = 0):
    """A randomly initialised generator of ``arch`` (benchmarks, smoke tests, a training start)."""
    return build_generator(init_config(arch, preset, overrides), seed)


__all__ = ["BUNDLED_NAME", "atomic_write", "build_generator", "bundled_models", "bundled_path",
           "model_path", "check_fits", "init_config",
           "init_generator", "load_generator", "parse_config", "read_config", "require_weights",
           "save_generator", "shape_plan", "weight_shapes"]
