"""``sweeps/run.py``: ``--strategy NAME --bench NAME [--key=value | --key value ...]``.

Parsing, validation and data checks import no torch, so a typo costs a fraction of a second and
exits with code 2 and one line naming the key, before anything is downloaded or built.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Sequence

from cl_bench.config import Config, RunConfig, type_name, preset_names, resolve_config
from cl_bench.errors import ConfigError, report_errors
from cl_bench.registry import BACKBONES, BENCHES, STRATEGIES

__all__ = ["parse_args", "main", "help_text", "config_from_args", "ArgumentParser", "underscored"]

PROG = "sweeps/run.py"


def underscored(argv: Sequence[str]) -> list[str]:
    """``--out-dir=x`` -> ``--out_dir=x``: every script spells its options with underscores, like
    the config keys, and accepts dashes too."""
    def one(token: str) -> str:
        if not token.startswith("--") or token == "--":
            return token
        name, eq, value = token[2:].partition("=")
        return "--" + name.replace("-", "_") + eq + value

    return [one(token) for token in argv]


class ArgumentParser(argparse.ArgumentParser):
    """The scripts' argparse parser: options are declared with underscores (``--out_dir``) and
    accepted with dashes as well (``--out-dir``). No abbreviations: a script that passes unknown
    options on to ``run.py`` must not take ``--pre`` for one of its own."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(underscored(sys.argv[1:] if args is None else args), namespace)


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], bool]:
    """``{key: raw value}`` and whether help was asked for. ``--flag`` means true, ``--no-flag`` false."""
    values: dict[str, str] = {}
    want_help = False
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in ("-h", "--help"):
            want_help = True
            continue
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}; give keys as --key=value or --key value")
        body = token[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i < len(tokens) and not tokens[i].startswith("--"):
            key, value = body, tokens[i]
            i += 1
        elif body.startswith(("no-", "no_")):
            key, value = body[3:], "false"
        else:
            key, value = body, "true"
        key = key.replace("-", "_")
        if key in values:
            raise ConfigError(f"key '{key}' is given twice", key=key)
        values[key] = value
    return values, want_help


def config_from_args(argv: Sequence[str]) -> Config:
    values, _ = parse_args(argv)
    return _resolve(values)


def _resolve(values: dict[str, str]) -> Config:
    for key in ("strategy", "bench"):
        if key not in values:
            names = STRATEGIES.names() if key == "strategy" else BENCHES.names()
            raise ConfigError(f"missing --{key}; allowed: {', '.join(names)}", key=key)
    strategy, bench = values.pop("strategy"), values.pop("bench")
    return resolve_config(strategy, bench, values)


def _describe_fields(section_cls: type, indent: str = "  ") -> list[str]:
    hints = typing.get_type_hints(section_cls)
    lines = []
    for f in dataclasses.fields(section_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        extra = f" [{'|'.join(map(str, choices))}]" if choices else ""
        lines.append(f"{indent}--{f.name}={default!r} ({type_name(hints[f.name])}){extra}: {f.metadata.get('help', '')}")
    return lines


def help_text(strategy: str | None = None, bench: str | None = None) -> str:
    lines = [
        f"usage: python {PROG} --strategy NAME --bench NAME [--key=value | --key value ...]",
        "",
        "Values are applied in order: defaults, the bench's defaults, the strategy's preset for the bench",
        "(--preset NAME, default 'default'), then the command line. W&B sweeps pass --key=value via ${args}.",
        "",
        "strategies:",
        *[f"  {name}: {entry.summary}" for name, entry in STRATEGIES.items()],
        "",
        "benches:",
        *[f"  {name} ({entry.n_classes} classes): {entry.summary}" for name, entry in BENCHES.items()],
        "",
        "backbones (--backbone):",
        *[f"  {name}: {entry.summary}" for name, entry in BACKBONES.items()],
        "",
        "keys of every run:",
        *_describe_fields(RunConfig),
    ]
    benches = [bench] if bench in BENCHES else BENCHES.names()
    for name in benches:
        lines += ["", f"keys of bench {name}:", *_describe_fields(BENCHES[name].config_cls)]
    strategies = [strategy] if strategy in STRATEGIES else STRATEGIES.names()
    for name in strategies:
        lines += ["", f"keys of strategy {name}:", *(_describe_fields(STRATEGIES[name].config_cls) or ["  (none)"])]
        if bench in BENCHES:
            lines.append(f"  presets for {bench}: {', '.join(preset_names(name, bench)) or 'none'}")
    return "\n".join(lines)


def _announce(config: Config) -> None:
    chosen = {k: v for k, v in config.flat().items() if k in config.origins and k not in ("strategy", "bench")}
    sizes = config.classes_per_experience()
    split = f"B{sizes[0]}-{sizes[1] if len(sizes) > 1 else sizes[0]}-{len(sizes)}"
    print(f"{config.run.strategy} on {config.run.bench} {split}, seed {config.run.seed}, preset {config.run.preset}: "
          + " ".join(f"{k}={v}" for k, v in chosen.items()), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return report_errors(PROG, lambda: _main(argv))


def _main(argv: list[str]) -> int:
    values, want_help = parse_args(argv)
    if want_help:
        print(help_text(values.get("strategy"), values.get("bench")))
        return 0
    config = _resolve(values)
    BENCHES[config.run.bench].check_data(config.bench)
    _announce(config)

    from cl_bench.experiment import run_experiment

    run_experiment(config)
    return 0
