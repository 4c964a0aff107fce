"""Typed run configuration: dataclass defaults, then bench defaults, then the (strategy, bench) YAML
preset, then ``--key=value`` overrides.

Keys are flat (``--rank=8``, ``--lr=0.03``) because that is what W&B sweeps pass through ``${args}``;
each key lives in exactly one section (run, bench or method). This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from cl_bench.errors import ConfigError
from cl_bench.registry import BACKBONES, BENCHES, STRATEGIES, did_you_mean

__all__ = [
    "option",
    "RunConfig",
    "SplitConfig",
    "MethodConfig",
    "Config",
    "resolve_config",
    "coerce_value",
    "split_sizes",
    "config_differences",
    "load_presets",
    "preset_names",
]

_TRUE = {"true", "1", "yes", "on"}
#: numpy's legacy seeding takes 32-bit seeds; larger or negative ones fail deep inside a run.
SEED_MAX = 2**32 - 1
_FALSE = {"false", "0", "no", "off"}


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    finite: bool = True,
    semantic: bool = True,
) -> Any:
    """A config key with its help text.

    ``semantic=False`` marks keys that cannot change results (paths, tracking, resume); they are
    left out of the config hash, so changing them never invalidates a checkpoint. Float keys must
    be finite unless ``finite=False`` (NaN passes every comparison, so a bound alone lets it in).
    """
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "finite": finite,
            "semantic": semantic}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Keys shared by every strategy and bench."""

    strategy: str = option("", "strategy name (see --help)")
    bench: str = option("", "benchmark name (see --help)")
    preset: str = option("default", "named preset of the strategy for this bench")
    seed: int = option(1993, "seed of torch/numpy/python RNGs, data order and inits", minimum=0, maximum=SEED_MAX)
    class_order_seed: int = option(
        1993, "seed of the class order: np.random.seed(s); permutation(n); -1: natural order", minimum=-1, maximum=SEED_MAX
    )
    class_order_from_seed: bool = option(
        False, "PILOT-compatible mode: the class order is drawn from `seed` (overrides class_order_seed)"
    )
    backbone: str = option("", "pinned backbone tag (see --help); the bench picks a default")
    pretrained: bool = option(True, "load the backbone's pretrained weights")
    pretrained_file: str = option("", "local weights file for the backbone (.safetensors/.pth/.npz)")
    transform: str = option(
        "reference", "input pipeline variant", choices=("reference", "coda")
    )
    epochs: int = option(1, "training epochs per experience", minimum=0)
    batch_size: int = option(32, "training mini-batch size", minimum=1)
    eval_batch_size: int = option(128, "evaluation mini-batch size (L2P's batch-wise prompt vote depends on it)", minimum=1)
    lr: float = option(0.01, "learning rate", minimum=0.0)
    weight_decay: float = option(0.0, "weight decay", minimum=0.0)
    amp: str = option("none", "autocast precision for training (bf16 on GPU)", choices=("none", "bf16"))
    device: str = option("auto", "torch device: auto, cpu, cuda, cuda:1, ...", semantic=False)
    threads: int = option(0, "torch CPU threads (0: torch's default)", minimum=0, semantic=False)
    num_workers: int = option(0, "data loader worker processes", minimum=0, semantic=False)
    deterministic: bool = option(
        False, "torch deterministic algorithms (for GPU runs; CPU runs are deterministic anyway)"
    )
    out_dir: str = option("runs", "directory of run records and checkpoints", semantic=False)
    run_name: str = option("", "run directory name (default: derived from the config)", semantic=False)
    resume: bool = option(False, "continue an unfinished run from its last finished experience", semantic=False)
    wandb_mode: str = option(
        "auto",
        "W&B mode: auto (online with an API key and a reachable server, else offline)",
        choices=("auto", "online", "offline", "disabled"),
        semantic=False,
    )
    wandb_project: str = option("cl-bench", "W&B project", semantic=False)
    wandb_entity: str = option("", "W&B entity (team or user)", semantic=False)
    wandb_group: str = option("", "W&B group (default: the config without its seed)", semantic=False)
    wandb_timeout: float = option(20.0, "seconds W&B may take to start before falling back to offline", minimum=0.0, semantic=False)
    wandb_log_checkpoint: bool = option(
        False, "also store the final checkpoint as a W&B `model` artifact (it can be large)", semantic=False
    )
    log_every: int = option(25, "log the training loss every N steps", minimum=1, semantic=False)
    progress_every: float = option(
        60.0, "seconds between progress lines (rates, ETA) when stdout is not a terminal, e.g. a log file; 0: every step",
        minimum=0.0, semantic=False,
    )


@dataclass
class SplitConfig:
    """The class split ``B{init}-{inc}-{T}`` of a bench."""

    init_cls: int = option(
        0, "classes in the first experience (0: same as inc_cls, PILOT's 'B0')", minimum=0
    )
    inc_cls: int = option(5, "classes in each later experience", minimum=1)


@dataclass
class MethodConfig:
    """Base of the per-strategy key sections."""


def config_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``key: saved -> now`` for every key whose value differs (for refusing a run of another config)."""
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


def split_sizes(n_classes: int, init_cls: int, inc_cls: int) -> list[int]:
    """Classes per experience, or a ConfigError naming the impossible split."""
    first = init_cls or inc_cls
    if first > n_classes or (n_classes - first) % inc_cls:
        raise ConfigError(
            f"impossible split: init_cls={init_cls}, inc_cls={inc_cls} on {n_classes} classes; "
            f"init + inc*(T-1) must equal {n_classes}",
            key="init_cls",
        )
    return [first] + [inc_cls] * ((n_classes - first) // inc_cls)


@dataclass
class Config:
    """A resolved configuration: three typed sections and where each value came from."""

    run: RunConfig
    bench: Any
    method: Any
    origins: dict[str, str] = field(default_factory=dict)

    SECTIONS: typing.ClassVar[tuple[str, ...]] = ("run", "bench", "method")

    def section_of(self, key: str) -> str:
        for name in self.SECTIONS:
            if key in _field_map(getattr(self, name)):
                return name
        raise KeyError(key)

    def get(self, key: str) -> Any:
        return getattr(getattr(self, self.section_of(key)), key)

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.SECTIONS:
            out.update(dataclasses.asdict(getattr(self, name)))
        return out

    def semantic(self) -> dict[str, Any]:
        """The keys that can change results."""
        out = {}
        for name in self.SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                if f.metadata.get("semantic", True):
                    out[f.name] = getattr(section, f.name)
        return out

    def semantic_json(self) -> dict[str, Any]:
        """``semantic()`` as it reads back from JSON (tuples become lists), for comparisons with records."""
        return json.loads(json.dumps(self.semantic(), default=str))

    def digest(self, *, without: tuple[str, ...] = ()) -> str:
        items = {k: v for k, v in self.semantic().items() if k not in without}
        blob = json.dumps(items, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    @property
    def group(self) -> str:
        """Runs that differ only in their seed share a group, so seeds aggregate."""
        if self.run.wandb_group:
            return self.run.wandb_group
        return f"{self.run.strategy}-{self.run.bench}-{self.digest(without=('seed',))}"

    @property
    def default_run_name(self) -> str:
        return f"{self.run.strategy}-{self.run.bench}-s{self.run.seed}-{self.digest()}"

    @property
    def effective_class_order_seed(self) -> int:
        return self.run.seed if self.run.class_order_from_seed else self.run.class_order_seed

    def classes_per_experience(self) -> list[int]:
        return split_sizes(BENCHES[self.run.bench].n_classes, self.bench.init_cls, self.bench.inc_cls)


def _field_map(section: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(section)}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce_value(key: str, raw: Any, tp: Any) -> Any:
    """Turn a CLI string or YAML value into ``tp``, or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        return coerce_value(key, raw, args[0])
    if origin in (tuple, list):
        inner = typing.get_args(tp)[0]
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"key '{key}' expects a comma-separated list, got {raw!r}", key=key)
        return origin(coerce_value(key, item, inner) for item in items)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"key '{key}' expects a boolean (true/false), got {raw!r}", key=key)
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(f"key '{key}' expects an integer, got {raw!r}", key=key)
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"key '{key}' expects an integer, got {raw!r}", key=key) from None
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"key '{key}' expects a number, got {raw!r}", key=key)
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"key '{key}' expects a number, got {raw!r}", key=key) from None
    if tp is str:
        if isinstance(raw, (dict, list)):
            raise ConfigError(f"key '{key}' expects a string, got {raw!r}", key=key)
        return str(raw)
    raise TypeError(f"unsupported config type {tp!r} for key '{key}'")


def _check_field(key: str, value: Any, f: dataclasses.Field) -> None:
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"key '{key}' must be one of {', '.join(map(str, choices))}; got {value!r}", key=key
        )
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if isinstance(item, float) and f.metadata.get("finite", True) and not math.isfinite(item):
            raise ConfigError(f"key '{key}' must be a finite number; got {value!r}", key=key)
        minimum, maximum = f.metadata.get("minimum"), f.metadata.get("maximum")
        if minimum is not None and isinstance(item, (int, float)) and item < minimum:
            raise ConfigError(f"key '{key}' must be >= {minimum}; got {value!r}", key=key)
        if maximum is not None and isinstance(item, (int, float)) and item > maximum:
            raise ConfigError(f"key '{key}' must be <= {maximum}; got {value!r}", key=key)


def load_presets(path: Path | None) -> dict[str, dict[str, dict[str, Any]]]:
    """``{bench: {preset_name: {key: value}}}`` from a strategy's YAML file."""
    if path is None or not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{path}: presets must map bench -> preset name -> keys")
    return data


def preset_names(strategy: str, bench: str) -> list[str]:
    return sorted(load_presets(STRATEGIES[strategy].presets).get(bench, {}))


class _Sections:
    """Where each flat key lives, with its declared type."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.fields: dict[str, tuple[str, dataclasses.Field, Any]] = {}
        for name in Config.SECTIONS:
            section = getattr(config, name)
            hints = _type_hints(type(section))
            for f in dataclasses.fields(section):
                if f.name in self.fields:
                    raise ValueError(f"config key '{f.name}' is defined in two sections")
                self.fields[f.name] = (name, f, hints[f.name])

    def allowed(self) -> list[str]:
        return sorted(self.fields)

    def assign(self, key: str, raw: Any, origin: str) -> None:
        key = key.replace("-", "_")
        if key not in self.fields:
            allowed = self.allowed()
            raise ConfigError(
                f"unknown key '{key}'{did_you_mean(key, allowed)} for strategy "
                f"'{self.config.run.strategy}' on bench '{self.config.run.bench}' ({origin}); "
                f"allowed: {', '.join(allowed)}",
                key=key,
            )
        section, f, tp = self.fields[key]
        value = coerce_value(key, raw, tp)
        _check_field(key, value, f)
        setattr(getattr(self.config, section), key, value)
        self.config.origins[key] = origin


def resolve_config(
    strategy: str,
    bench: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    preset: str = "default",
) -> Config:
    """Defaults, then bench defaults, then the preset, then ``overrides`` (CLI strings or values)."""
    overrides = dict(overrides or {})
    strategy_entry = STRATEGIES[strategy]
    bench_entry = BENCHES[bench]
    preset = str(overrides.pop("preset", preset))
    config = Config(
        run=RunConfig(strategy=strategy, bench=bench, preset=preset),
        bench=bench_entry.config_cls(),
        method=strategy_entry.config_cls(),
    )
    sections = _Sections(config)
    for key, value in bench_entry.run_defaults.items():
        sections.assign(key, value, f"defaults of bench {bench}")

    presets = load_presets(strategy_entry.presets)
    bench_presets = presets.get(bench, {})
    if preset in bench_presets:
        for key, value in (bench_presets[preset] or {}).items():
            sections.assign(key, value, f"preset '{preset}' in {strategy_entry.presets.name}")
    elif preset != "default":
        names = sorted(bench_presets) or ["default"]
        raise ConfigError(
            f"unknown preset '{preset}' for strategy '{strategy}' on bench '{bench}'; allowed: {', '.join(names)}",
            key="preset",
        )

    for key, value in overrides.items():
        if key.replace("-", "_") in ("strategy", "bench"):
            raise ConfigError(f"key '{key}' is given twice", key=key)
        sections.assign(key, value, "command line")

    _validate(config)
    return config


def _validate(config: Config) -> None:
    config.classes_per_experience()
    if config.run.backbone not in BACKBONES:
        BACKBONES[config.run.backbone]
    if config.run.pretrained_file:
        path = Path(config.run.pretrained_file).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"key 'pretrained_file': no such file {path}", key="pretrained_file"
            )
    validate_method = getattr(config.method, "validate", None)
    if validate_method is not None:
        validate_method(config)
