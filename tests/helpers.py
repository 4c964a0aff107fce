"""Small fakes and readers shared by the tests (the one place they live)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cl_bench.catalog  # noqa: E402,F401  (the names tests parametrize over)

REPO = Path(__file__).resolve().parent.parent
RUN_PY = REPO / "sweeps" / "run.py"

#: A bench small enough for unit tests: 8 train and 4 test images per class, 20 classes.
TINY_BENCH = {"train_per_class": 8, "test_per_class": 4}
#: Overrides that keep an end-to-end run to seconds and off the network.
QUICK_RUN = {"wandb_mode": "disabled", "epochs": 1, "batch_size": 16, "eval_batch_size": 64, **TINY_BENCH}


def tiny_vit(depth: int = 4, dim: int = 32, heads: int = 2, img_size: int = 28, patch_size: int = 4):
    """A random timm VisionTransformer of the suite's structure, small enough for CPU unit tests."""
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="token",
        img_size=img_size, patch_size=patch_size, embed_dim=dim, depth=depth, num_heads=heads,
    )


def tiny_cl_lora_net(n_tasks: int = 3, growth: bool = True):
    """A tiny CL-LoRA net with non-zero adapters, several branches and prototypes: a trained-looking net
    for inference tests, with no training."""
    import torch
    from cl_bench.strategies.cl_lora.model import CLLoRANet

    torch.manual_seed(0)
    net = CLLoRANet(tiny_vit(depth=4), rank=4, shared_blocks=2)
    for task in range(n_tasks):
        if task and growth:
            net.add_branch()
        net.task_branch.append(net.n_branches - 1)
        net.task_sizes.append(3)
        net.prototypes.add(torch.randn(3, 32))
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 2 and p.shape[1] == 4:  # up-projections
                p.normal_(0, 0.3)
    return net.eval()


def vit_b_shapes():
    """ViT-B/16 with the real shapes and uninitialised weights (fast): for parameter counts only."""
    import timm
    import torch

    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token")
    return vit.to_empty(device="cpu")


def fake_backbone(vit=None, tag: str = "vit_mini_patch4_28.fmnist_letters"):
    from cl_bench.backbones import Backbone, BackboneInfo

    vit = tiny_vit() if vit is None else vit
    vit.requires_grad_(False)
    return Backbone(vit=vit, info=BackboneInfo(tag=tag, pretrained=False, sha256=None, source="test fake"))


def tiny_config(strategy: str, bench: str = "digits_animals", **overrides: Any):
    import dataclasses

    import cl_bench.catalog  # noqa: F401
    from cl_bench.config import resolve_config
    from cl_bench.registry import BENCHES

    bench_keys = {f.name for f in dataclasses.fields(BENCHES[bench].config_cls)}
    values = {k: v for k, v in {"pretrained": False, **QUICK_RUN}.items() if k not in TINY_BENCH or k in bench_keys}
    return resolve_config(strategy, bench, {**values, **overrides})


def preset_config(strategy: str, bench: str, preset: str = "default"):
    """The config a user gets from ``--strategy S --bench B --preset P`` with nothing else given."""
    import cl_bench.catalog  # noqa: F401
    from cl_bench.config import resolve_config

    return resolve_config(strategy, bench, preset=preset)


def all_presets() -> list[tuple[str, str, str]]:
    """Every (strategy, bench, preset) the presets files define."""
    import cl_bench.catalog  # noqa: F401
    from cl_bench.config import load_presets
    from cl_bench.registry import STRATEGIES

    return [(name, bench, preset) for name in STRATEGIES.names()
            for bench, presets in load_presets(STRATEGIES[name].presets).items() for preset in presets]


#: Settings the tiny ViTs need: CODA-Prompt's keys must stay orthogonal in their narrow width.
TINY_VIT_OVERRIDES: dict[str, dict[str, Any]] = {"coda_prompt": {"pool_size": 10}, "ranpac": {"projection_size": 128}}


def build_strategy(strategy: str, *, vit=None, plugins=(), bench: str = "digits_animals", **overrides: Any):
    """A strategy on the tiny offline bench with a tiny random ViT, plus its streams."""
    import torch

    from cl_bench.benches.streams import build_streams
    from cl_bench.registry import STRATEGIES
    from cl_bench.seeding import seed_everything

    overrides = {**TINY_VIT_OVERRIDES.get(strategy, {}), **overrides}
    config = tiny_config(strategy, bench, **overrides)
    seed_everything(config.run.seed)
    streams = build_streams(config)
    backbone = fake_backbone(vit)
    strategy_class = STRATEGIES[strategy].load_class()
    return strategy_class.from_config(config, model=backbone.vit, device=torch.device("cpu"), plugins=list(plugins)), streams


def run_cli(*args: str, env: dict[str, str | None] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``sweeps/run.py`` in a subprocess; ``env`` values of None remove the variable."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run([sys.executable, str(RUN_PY), *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)


def cli_args(values: dict[str, Any]) -> list[str]:
    return [f"--{k}={v}" for k, v in values.items()]


def read_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "record.json").read_text())


def wandb_records(path: Path, block: int = 32768) -> Iterator[Any]:
    """Protobuf records of an offline ``run-<id>.wandb`` file (leveldb-log framing, 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B data file"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos: pos + 7])
        pos += 7
        if kind == 0 and n == 0:
            break
        buf += data[pos: pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_history(run_file: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """History rows, final config and summary of an offline W&B run file."""
    history, config, summary = [], {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
    return history, config, summary


def wandb_run_facts(run_file: Path) -> dict[str, Any]:
    """The run's ``job_type`` and its logged artifacts (type, name, file paths) from an offline run file."""
    facts: dict[str, Any] = {"job_type": None, "artifacts": []}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            facts["job_type"] = record.run.job_type
        elif kind == "artifact":
            artifact = record.artifact
            facts["artifacts"].append({"type": artifact.type, "name": artifact.name,
                                       "files": sorted(entry.path for entry in artifact.manifest.contents)})
    return facts


# -- run records for the analysis, notebook and report tests ------------------------------------------
#: Strategies and seeds of the tiny real runs the analysis tests share (the two fastest on CPU).
TINY_RECORD_STRATEGIES = ("simple_cil", "l2p")
TINY_RECORD_SEEDS = (0, 1)
_tiny_records: dict[str, Path] = {}


def tiny_run_records(tmp_path_factory) -> Path:
    """A directory of finished tiny offline runs (strategies x seeds on digits_animals), made once
    per test session and shared by every module that asks."""
    if "root" not in _tiny_records:
        from cl_bench.experiment import run_experiment

        root = tmp_path_factory.mktemp("tiny_runs")
        for strategy in TINY_RECORD_STRATEGIES:
            for seed in TINY_RECORD_SEEDS:
                run_experiment(tiny_config(strategy, out_dir=str(root), seed=seed, epochs=1), quiet=True)
        _tiny_records["root"] = root
    return _tiny_records["root"]


def write_fake_record(root: Path, *, strategy: str, bench: str, seed: int, R: list[list[float]],
                      classes_per_experience: list[int] | None = None, test_sizes: list[int] | None = None,
                      preset: str = "default", group: str | None = None, status: str = "finished",
                      efficiency: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
                      run_name: str | None = None) -> Path:
    """A run record with the fields ``cl_bench.record`` writes, metrics computed from ``R``
    (equal test sizes unless given), without training anything. ``config`` adds or overrides
    config keys (e.g. ``{"epochs": 1}``: another configuration of the strategy)."""
    from cl_bench.metrics import summarize
    from cl_bench.record import RECORD_FILE, RECORD_FORMAT

    T = len(R)
    classes = classes_per_experience or [2] * T
    sizes = test_sizes or [10] * T
    config = {"strategy": strategy, "bench": bench, "preset": preset, "seed": seed, "backbone": "fake_vit", **(config or {})}
    extra = {k: v for k, v in config.items() if k not in ("strategy", "bench", "preset", "seed", "backbone")}
    extra = "-" + hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8] if extra else ""
    run_name = run_name or f"{strategy}-{bench}-{preset}{extra}-s{seed}"
    group = group or f"{strategy}-{bench}-{preset}{extra}"
    run_dir = root / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "format": RECORD_FORMAT, "status": status, "run_name": run_name, "group": group,
        "strategy": strategy, "bench": bench, "seed": seed,
        "config": config, "config_semantic": config,
        "classes_per_experience": classes, "test_sizes": sizes, "R": R,
        "steps": [{"experience": t, "accuracy_per_experience": row} for t, row in enumerate(R)],
        "metrics": summarize(R, sizes, classes).as_dict(),
        "efficiency": efficiency if efficiency is not None else {
            "trainable_parameters_per_experience": [100] * T, "stored_parameters": 1000,
            "train_images_per_s_median": 50.0, "eval_images_per_s_last": 200.0, "vit_passes_per_image_last": 1.0,
            "block_passes_per_image_last": 12.0, "peak_rss_mb": 900.0, "wall_seconds": 3.0},
    }
    (run_dir / RECORD_FILE).write_text(json.dumps(data))
    return run_dir


@dataclass
class FakeWandbRun:
    """The attributes of a ``wandb.apis.public.Run`` that ``cl_bench.analysis`` reads."""

    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    group: str | None
    state: str = "finished"
    path: list[str] = field(default_factory=list)


def wandb_export(records_root: Path, entity: str = "team", project: str = "cl-bench") -> list[FakeWandbRun]:
    """What the W&B API would return for the runs under ``records_root``: the flat config, and the
    summary ``cl_bench.tracking`` leaves (the last step's ``eval/*`` and ``efficiency/*`` values,
    overwritten at the end by the metrics, ``R`` and the run's efficiency summary)."""
    runs = []
    for path in sorted(Path(records_root).rglob("record.json")):
        data = json.loads(path.read_text())
        finished = data["status"] == "finished"
        summary: dict[str, Any] = {}
        if data["steps"]:
            last = data["steps"][-1]
            summary.update({"experience": last["experience"], "eval/accuracy": last.get("accuracy")})
            summary.update({f"efficiency/{k}": v for k, v in (last.get("efficiency") or {}).items()})
        if finished:
            summary.update(data["metrics"])
            summary.update(R=data["R"], classes_per_experience=data["classes_per_experience"], test_sizes=data["test_sizes"])
            summary.update({f"efficiency/{k}": v for k, v in (data.get("efficiency") or {}).items()})
        runs.append(FakeWandbRun(name=data["run_name"], config=dict(data["config"]), summary=summary,
                                 group=data.get("group"), state="finished" if finished else "crashed",
                                 path=[entity, project, data["run_name"]]))
    return runs


# -- plain Avalanche use, outside the suite's runner -------------------------------------------------
#: A shuffled class order; Avalanche keeps the labels as they are (experience 0 holds labels 6 and 2).
PLAIN_CLASS_ORDER = [6, 2, 7, 4, 1, 5, 3, 0]


def tensor_benchmark(train_per_class: int = 6, test_per_class: int = 4, class_order=PLAIN_CLASS_ORDER,
                     classes_per_experience: int = 2, size: int = 28, seed: int = 0):
    """An Avalanche ``class_incremental_benchmark`` from tensors, as a user would build one: labels
    kept as they are (not renumbered), every class a fixed random pattern plus noise."""
    import torch
    from avalanche.benchmarks.scenarios import class_incremental_benchmark
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    labels = sorted(class_order)
    patterns = {c: torch.rand(3, size, size, generator=generator) for c in labels}

    class LabelledTensors(TensorDataset):
        @property
        def targets(self):
            return self.tensors[1]

    def split(per_class):
        y = torch.tensor(labels).repeat_interleave(per_class)
        x = torch.stack([patterns[int(c)] for c in y]) + 0.3 * torch.randn(len(y), 3, size, size, generator=generator)
        return LabelledTensors(x, y)

    return class_incremental_benchmark({"train": split(train_per_class), "test": split(test_per_class)},
                                       class_order=list(class_order),
                                       num_classes_per_exp=[classes_per_experience] * (len(labels) // classes_per_experience))


#: Small keyword arguments per strategy for a tiny ViT (depth 4, width 32) and the tensor benchmark.
TINY_STRATEGY_ARGUMENTS: dict[str, dict[str, Any]] = {
    "coda_prompt": {"pool_size": 8, "prompt_layers": (0, 1, 2)},
    "dual_prompt": {"g_layers": (0,), "e_layers": (1, 2)},
    "ranpac": {"projection_size": 128},
}


def plain_strategy(name: str, vit, *, n_classes: int = len(PLAIN_CLASS_ORDER), n_experiences: int = 4, **kwargs: Any):
    """A registered strategy built the Avalanche way (its class and keywords; no suite config)."""
    import torch

    from cl_bench.registry import STRATEGIES

    strategy_class = STRATEGIES[name].load_class()
    arguments = {**strategy_class.stream_arguments(n_classes=n_classes, n_experiences=n_experiences),
                 **TINY_STRATEGY_ARGUMENTS.get(name, {}), "train_mb_size": 8, "train_epochs": 1, "eval_mb_size": 16,
                 "device": torch.device("cpu"), **kwargs}
    return strategy_class(model=vit, **arguments)


def tiny_naive_strategy(plugins=(), *, epochs: int = 2, experiences: int = 2, per_class: int = 8, batch: int = 4):
    """Avalanche's own ``Naive`` strategy on a linear model and a synthetic 2-class-per-experience
    stream: a real Avalanche training and evaluation loop in well under a second, for plugin tests."""
    import torch
    from avalanche.benchmarks.scenarios import class_incremental_benchmark
    from avalanche.benchmarks.utils import as_classification_dataset
    from avalanche.training import Naive
    from torch.utils.data import TensorDataset

    n_classes = 2 * experiences
    generator = torch.Generator().manual_seed(0)

    def dataset():
        y = torch.arange(n_classes).repeat_interleave(per_class)
        data = TensorDataset(torch.rand(len(y), 6, generator=generator), y)
        data.targets = y.tolist()
        return as_classification_dataset(data)

    benchmark = class_incremental_benchmark({"train": dataset(), "test": dataset()}, class_order=list(range(n_classes)),
                                            num_classes_per_exp=[2] * experiences)
    model = torch.nn.Linear(6, n_classes)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=batch, train_epochs=epochs,
                     eval_mb_size=batch, device="cpu", plugins=list(plugins), evaluator=None)
    return strategy, benchmark
