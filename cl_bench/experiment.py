"""One class-incremental experiment, end to end: the same loop for every strategy.

Everything that can reject the run (unfinished run without ``--resume``, changed config, missing
data or weights, a checkpoint of another run) is checked before anything is written or built.
After each experience the run record is rewritten, W&B gets the same numbers, and a checkpoint
is saved, in that order.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench import seeding
from cl_bench.backbones import file_sha256, resolve_weights
from cl_bench.checkpoint import CHECKPOINT_FILE, check_compatible, load_checkpoint, save_checkpoint
from cl_bench.config import Config, config_differences
from cl_bench.errors import ConfigError, RunInterrupted
from cl_bench.metrics import chance_curve
from cl_bench.record import RECORD_FILE, RunRecord
from cl_bench.registry import BACKBONES, BENCHES, STRATEGIES
from cl_bench.tracking import WandbTracker, in_sweep_agent

__all__ = ["RunPlan", "plan_run", "run_experiment", "environment", "results_table"]

REPO_ROOT = Path(__file__).resolve().parent.parent
EVAL_SEED_STRIDE = 1000


@dataclass
class RunPlan:
    """What ``run_experiment`` will do, decided before anything is written."""

    config: Config
    run_dir: Path
    action: str  # "new", "resume" or "finished"
    record: RunRecord | None
    checkpoint: dict[str, Any] | None
    weights: tuple[Path | None, str, str | None]  # path, source, sha256


def plan_run(config: Config) -> RunPlan:
    """Every check that can reject the run, in order of cost; nothing is written here."""
    run_dir = Path(config.run.out_dir).expanduser() / (config.run.run_name or config.default_run_name)
    BENCHES[config.run.bench].check_data(config.bench)
    record = RunRecord.load(run_dir) if (run_dir / RECORD_FILE).is_file() else None
    action, checkpoint = "new", None
    if record is not None:
        diffs = config_differences(record.data.get("config_semantic", {}), config.semantic_json())
        if diffs:
            raise ConfigError(f"{run_dir} holds a run of another config ({'; '.join(diffs)}); use another --run_name", key="run_name")
        agent_rerun = bool(os.environ.get("WANDB_RUN_ID")) and os.environ["WANDB_RUN_ID"] == (record.data.get("wandb") or {}).get("run_id")
        if record.status == "finished":
            action = "finished"
        elif config.run.resume or agent_rerun:
            action = "resume"
        else:
            raise ConfigError(
                f"{run_dir} holds an unfinished run (status {record.status}, {record.finished_experiences} of "
                f"{len(config.classes_per_experience())} experiences); pass --resume to continue it or --run_name=NEW for a new run",
                key="resume",
            )
    weights: tuple[Path | None, str, str | None] = (None, "", None)
    if action != "finished":
        path, source = resolve_weights(BACKBONES[config.run.backbone], config.run)
        weights = (path, source, file_sha256(path) if path is not None else None)
    if action == "resume" and (run_dir / CHECKPOINT_FILE).is_file():
        checkpoint = load_checkpoint(run_dir)
        check_compatible(checkpoint, semantic_config=config.semantic_json(),
                         backbone={"tag": config.run.backbone, "sha256": weights[2]})
    return RunPlan(config, run_dir, action, record, checkpoint, weights)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device) -> dict[str, Any]:
    import torch

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": {p: _version(p) for p in ("torch", "torchvision", "timm", "avalanche-lib", "wandb", "numpy")},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }


def _setup_torch(config: Config):
    import torch

    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    if config.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    requested = config.run.device
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def results_table(record: RunRecord) -> str:
    """The R matrix, the A_t curve and Last/Avg beside chance, as plain text."""
    data = record.data
    R, metrics = data["R"], data["metrics"]
    if not R:
        return "no experience finished"
    lines = ["R[t][i] (%): rows = after experience t, columns = test experience i (both from 1)"]
    for t, row in enumerate(R):
        lines.append(f"  t={t + 1:<3d} " + " ".join(f"{100 * a:5.1f}" for a in row))
    lines.append("A_t (%):  " + " ".join(f"{100 * a:5.1f}" for a in metrics["accuracy_curve"]))
    lines.append("chance:   " + " ".join(f"{100 * c:5.1f}" for c in chance_curve(data["classes_per_experience"])[: len(R)]))
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines.append(
        f"Last {fmt(metrics['last_accuracy'])}% (chance {fmt(metrics['chance_last_accuracy'])}%)   "
        f"Avg {fmt(metrics['avg_accuracy'])}% (chance {fmt(metrics['chance_avg_accuracy'])}%)   "
        f"forgetting {fmt(metrics['forgetting'])}   BWT {fmt(metrics['bwt'])}"
    )
    return "\n".join(lines)


def _efficiency_summary(steps: list[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    def median(key):
        values = [s["efficiency"][key] for s in steps if s["efficiency"].get(key) is not None]
        return float(np.median(values)) if values else None

    last = steps[-1]["efficiency"]
    memory_keys = [k for k in last if k.startswith("peak_")]
    return {
        "trainable_parameters_per_experience": [s["efficiency"]["trainable_parameters"] for s in steps],
        "stored_parameters": last["stored_parameters"],
        "train_images_per_s_median": median("train_images_per_s"),
        "eval_images_per_s_last": last["eval_images_per_s"],
        "vit_passes_per_image_last": last["vit_passes_per_image"],
        "block_passes_per_image_last": last["block_passes_per_image"],
        **{k: max(s["efficiency"][k] for s in steps) for k in memory_keys},
        "wall_seconds": wall_seconds,
    }


def run_experiment(config: Config, *, quiet: bool = False) -> RunRecord:
    """Train and evaluate every experience; returns the finished run record."""
    plan = plan_run(config)
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    if plan.action == "finished":
        say(f"{plan.run_dir} already finished; nothing to do (use another --run_name to run again)")
        say(results_table(plan.record))
        if in_sweep_agent():  # an agent re-ran a finished config: report its metric to the new run
            tracker = WandbTracker(config, plan.run_dir, run_id=None)
            tracker.start()
            tracker.log_summary(plan.record.data["metrics"])
            tracker.finish()
        return plan.record

    import torch

    from cl_bench.backbones import build_backbone
    from cl_bench.benches.streams import build_streams
    from cl_bench.efficiency import BlockPassCounter, ThroughputMeter, peak_memory_mb, reset_peak_memory
    from cl_bench.training.evaluation import evaluate_seen_classes
    from cl_bench.training.plugins import Autocast, LossLogger, PredictionCollector, ProgressBar, RunGuard

    device = _setup_torch(config)
    seeding.seed_everything(config.run.seed)
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    sizes = config.classes_per_experience()
    n_experiences = len(sizes)
    path, source, sha256 = plan.weights
    backbone_record = {"tag": config.run.backbone, "pretrained": path is not None, "sha256": sha256,
                       "source": source if path is None else f"{source}: {path}"}
    if plan.record is None:
        record = RunRecord.create(
            run_dir,
            run_name=run_dir.name,
            strategy=config.run.strategy,
            bench=config.run.bench,
            seed=config.run.seed,
            class_order_seed=config.effective_class_order_seed,
            group=config.group,
            config=config.flat(),
            config_semantic=config.semantic_json(),
            config_origins=config.origins,
            config_digest=config.digest(),
            classes_per_experience=sizes,
            n_experiences=n_experiences,
            backbone=backbone_record,
        )
    else:
        record = plan.record
        record.data["resumed"] = record.data.get("resumed", 0) + 1
    checkpoint = plan.checkpoint
    start = checkpoint["finished_experiences"] if checkpoint else 0
    record.truncate(start)
    if checkpoint:
        record.data["steps"] = list(checkpoint["steps"])
        record.data["R"] = [s["accuracy_per_experience"] for s in record.data["steps"]]

    previous_wandb = (record.data.get("wandb") or {}).get("run_id")
    tracker = WandbTracker(config, run_dir, run_id=previous_wandb)
    wandb_info = tracker.start()
    record.update(status="running", error=None, wandb=wandb_info, environment=environment(device))
    say(f"run {run_dir} ({f'resuming at experience {start + 1}/{n_experiences}' if start else 'new'}); "
        f"W&B {wandb_info['mode']} ({wandb_info['reason']})")

    guard = RunGuard()
    guard.install()
    wall_start = time.perf_counter()
    try:
        streams = build_streams(config)
        record.update(class_order=streams.class_order, class_names=streams.class_names, test_sizes=streams.test_sizes())
        backbone = build_backbone(config)
        collector, meter = PredictionCollector(), ThroughputMeter()
        progress = ProgressBar(n_experiences, label=config.run.strategy, every_s=config.run.progress_every)
        plugins = [guard, collector, meter, progress, LossLogger(tracker, config.run.log_every)]
        if config.run.amp == "bf16":
            plugins.append(Autocast())
        builder = STRATEGIES[config.run.strategy].load_builder()
        strategy = builder(config=config, backbone=backbone, streams=streams, device=device, plugins=plugins)
        counter = BlockPassCounter(backbone.vit.blocks)
        if checkpoint:
            strategy.load_learned_state(checkpoint["learned_state"])
            seeding.restore_rng_state(checkpoint["rng"])

        for t in range(start, n_experiences):
            reset_peak_memory(device)
            train_start = time.perf_counter()
            strategy.train(streams.train_stream[t], eval_streams=[])
            train_seconds = time.perf_counter() - train_start
            guard.raise_if_signalled()
            result = evaluate_seen_classes(strategy, streams, t, collector=collector, counter=counter,
                                           shuffle_seed=config.run.seed * EVAL_SEED_STRIDE + t)
            efficiency = {
                "trainable_parameters": strategy.trainable_count,
                "trainable_parameters_head": strategy.trainable_head_count,
                "stored_parameters": strategy.stored_parameters(),
                "train_seconds": train_seconds,
                "train_images_per_s": meter.images_per_second,
                "eval_seconds": result.seconds,
                "eval_images_per_s": result.images_per_second,
                "vit_passes_per_image": result.vit_passes_per_image,
                "block_passes_per_image": result.block_passes_per_image,
                **peak_memory_mb(device),
            }
            step = {"experience": t, "accuracy_per_experience": result.accuracy_per_experience[: t + 1],
                    "n_test": result.n_test, "efficiency": efficiency, "method": strategy.experience_report()}
            metrics = record.add_step(step)
            old, new = step["old_accuracy"], step["new_accuracy"]
            tracker.log({"experience": t, "eval/accuracy": step["accuracy"], "eval/old_accuracy": old,
                         "eval/new_accuracy": new, "eval/avg_accuracy": metrics["avg_accuracy"],
                         **{f"efficiency/{k}": v for k, v in efficiency.items()}})
            tracker.log_accuracy_matrix(record.data["R"])
            save_checkpoint(run_dir, {
                "format": "cl-bench-checkpoint/1",
                "finished_experiences": t + 1,
                "strategy": config.run.strategy,
                "config": config.semantic_json(),
                "backbone": {"tag": config.run.backbone, "sha256": sha256},
                "learned_state": strategy.learned_state(),
                "rng": seeding.capture_rng_state(),
                "steps": record.data["steps"],
                "wandb_run_id": wandb_info["run_id"],
            })
            chance = 1 / sum(sizes[: t + 1])
            say(f"[{config.run.strategy} exp {t + 1}/{n_experiences}] A_t {100 * step['accuracy']:.1f}% "
                f"(chance {100 * chance:.1f}%), old {'-' if old is None else f'{100 * old:.1f}'} new {100 * new:.1f} | "
                f"train {train_seconds:.1f}s | eval {result.images_per_second:.0f} img/s, "
                f"{result.vit_passes_per_image:.2f} ViT passes/img")

        efficiency_summary = _efficiency_summary(record.data["steps"], time.perf_counter() - wall_start)
        record.finish(efficiency=efficiency_summary)
        tracker.log_summary({**record.data["metrics"], "R": record.data["R"],
                             "classes_per_experience": sizes, "test_sizes": record.data["test_sizes"],
                             **{f"efficiency/{k}": v for k, v in efficiency_summary.items()}})
        tracker.finish(0)
        say(results_table(record))
        return record
    except RunInterrupted as error:
        record.fail(error, status="interrupted")
        tracker.finish(1)
        raise
    except BaseException as error:
        record.fail(error)
        tracker.finish(1)
        raise
    finally:
        guard.uninstall()
