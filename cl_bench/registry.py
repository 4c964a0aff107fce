"""One small registry per kind (strategy, bench, backbone), keyed by the names users type.

Entries are light: they name their heavy implementation as ``"module:attribute"`` and import it
only when a run is built, so ``sweeps/run.py --help`` and config validation never import torch.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from cl_bench.errors import ConfigError

__all__ = [
    "Registry",
    "StrategyEntry",
    "BenchEntry",
    "BackboneEntry",
    "STRATEGIES",
    "BENCHES",
    "BACKBONES",
    "load_object",
]

T = TypeVar("T")


def load_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted)."""
    module_name, _, attribute = path.partition(":")
    found = importlib.import_module(module_name)
    for part in attribute.split("."):  # "module:Class.from_config"
        found = getattr(found, part)
    return found


def did_you_mean(name: str, allowed: list[str]) -> str:
    """A suggestion matched case-insensitively (``CL_LORA`` -> ``cl_lora``)."""
    by_lower = {a.lower(): a for a in allowed}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


class Registry(Generic[T]):
    """Named entries of one kind. Duplicate names are a programming error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            allowed = self.names()
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}",
                key=self.kind,
            )
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]


@dataclass(frozen=True)
class StrategyEntry:
    """A continual-learning method: its typed keys, presets and the builder of its Avalanche strategy.

    ``builder`` names the Avalanche strategy class (``"module:Class"``); the runner builds it with
    ``Class.from_config(config, model=..., device=..., plugins=...)``.
    """

    name: str
    config_cls: type
    builder: str
    presets: Path | None
    summary: str

    def load_class(self) -> type:
        return load_object(self.builder)


@dataclass(frozen=True)
class BenchEntry:
    """A class-incremental benchmark.

    ``check_data`` is light (file checks only) and runs before anything heavy; ``loader`` builds the
    raw train/test datasets and is imported lazily.
    """

    name: str
    n_classes: int
    config_cls: type
    loader: str
    check_data: Callable[[Any], None]
    run_defaults: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""

    def load(self) -> Callable[..., Any]:
        return load_object(self.loader)


@dataclass(frozen=True)
class BackboneEntry:
    """A pinned backbone: the timm model name with its weight tag, or a suite-made one.

    ``timm_kwargs`` are passed to ``timm.create_model`` (architecture overrides for small test
    ViTs). ``weights_file`` and ``sha256`` pin suite-made weights that ship with the repository.
    """

    name: str
    timm_name: str
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    pretrained: bool = True
    weights_file: Path | None = None
    sha256: str | None = None
    input_size: int = 224
    depth: int = 12
    embed_dim: int = 768
    summary: str = ""


STRATEGIES: Registry[StrategyEntry] = Registry("strategy")
BENCHES: Registry[BenchEntry] = Registry("bench")
BACKBONES: Registry[BackboneEntry] = Registry("backbone")
