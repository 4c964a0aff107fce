"""One class-incremental experiment, end to end: the same loop for every strategy.

Everything that can reject the run (unfinished run without ``--resume``, changed config, missing
data or weights, a checkpoint of another run) is checked before anything is written or built.
After each experience the run record is rewritten, W&B gets the same numbers, and a checkpoint
is saved, in that order.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench import seeding
from cl_bench.backbones import check_weights_file, file_sha256, resolve_weights
from cl_bench.checkpoint import CHECKPOINT_FILE, check_compatible, load_checkpoint, save_checkpoint
from cl_bench.config import Config, config_differences
from cl_bench.errors import CheckpointError, ConfigError, RunInterrupted, RunStopped
from cl_bench.locking import RunLock
from cl_bench.metrics import chance_curve
from cl_bench.record import RECORD_FILE, RunRecord
from cl_bench.registry import BACKBONES, BENCHES, STRATEGIES
from cl_bench.tracking import WandbTracker, in_sweep_agent

__all__ = ["RunPlan", "plan_run", "resolve_device", "run_experiment", "environment", "results_table", "chance_warning"]

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
    device: Any = None  # torch.device, checked to exist
    record_bytes: bytes | None = None  # the record as planned from, to notice a concurrent writer


def _check_image_size(config: Config) -> None:
    """The bench's input size must be the one the backbone's patch embedding was built for."""
    img_size = getattr(config.bench, "img_size", None)
    entry = BACKBONES[config.run.backbone]
    if img_size is not None and img_size != entry.input_size:
        raise ConfigError(
            f"key 'img_size': backbone '{entry.name}' takes {entry.input_size}x{entry.input_size} images, "
            f"not {img_size}x{img_size}; use --img_size={entry.input_size} or another --backbone", key="img_size"
        )


def _check_writable(run_dir: Path) -> None:
    """A probe file in the nearest existing folder of ``run_dir``, removed at once: the only test that
    also catches read-only mounts and pseudo file systems, for any user."""
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"key 'out_dir': {folder} is not a directory, so {run_dir} cannot be created", key="out_dir")
    probe = folder / f".cl-bench-write-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(
            f"key 'out_dir': cannot write in {folder} ({error.strerror or error}); choose a writable --out_dir",
            key="out_dir",
        ) from None


def resolve_device(requested: str):
    """The torch device of ``--device``, refused with one line when this machine has no such device."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ConfigError(f"key 'device': '{requested}' is not a device; use auto, cpu, cuda, cuda:N or mps", key="device") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError(f"key 'device': {requested} does not exist here ({count} CUDA GPUs visible)", key="device")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"key 'device': {requested} is not available on this machine", key="device")
    elif device.type != "cpu":
        raise ConfigError(f"key 'device': '{requested}' is not supported; use auto, cpu, cuda, cuda:N or mps", key="device")
    return device


def plan_run(config: Config) -> RunPlan:
    """Every check that can reject the run, in order of cost; nothing is written here."""
    run_dir = Path(config.run.out_dir).expanduser() / (config.run.run_name or config.default_run_name)
    _check_image_size(config)
    BENCHES[config.run.bench].check_data(config.bench)
    record_path = run_dir / RECORD_FILE
    record_bytes = record_path.read_bytes() if record_path.is_file() else None
    record = RunRecord.load(run_dir) if record_bytes is not None else None
    action, checkpoint = "new", None
    if record is not None:
        diffs = config_differences(record.data.get("config_semantic", {}), config.semantic_json())
        if diffs:
            raise ConfigError(f"{run_dir} holds a run of another config ({'; '.join(diffs)}); use another --run_name", key="run_name")
        agent_rerun = bool(os.environ.get("WANDB_RUN_ID")) and os.environ["WANDB_RUN_ID"] == (record.data.get("wandb") or {}).get("run_id")
        if record.status == "running":  # a live run says so; a killed one left no lock behind
            RunLock(run_dir).check_free()
        if record.status == "finished":
            action = "finished"
        elif config.run.resume or agent_rerun:
            action = "resume"
        elif record.status in ("failed", "interrupted") and record.finished_experiences == 0:
            record = None  # a run that stopped before finishing anything: nothing to protect, start over
        else:
            raise ConfigError(
                f"{run_dir} holds an unfinished run (status {record.status}, {record.finished_experiences} of "
                f"{len(config.classes_per_experience())} experiences); pass --resume to continue it or --run_name=NEW for a new run",
                key="resume",
            )
    if action == "finished":
        return RunPlan(config, run_dir, action, record, None, (None, "", None), record_bytes=record_bytes)
    if action == "resume" and record.finished_experiences and not (run_dir / CHECKPOINT_FILE).is_file():
        raise CheckpointError(
            f"{run_dir} records {record.finished_experiences} finished experiences but has no {CHECKPOINT_FILE}, so "
            f"resuming would restart at experience 0 and discard them; to start over, move {run_dir} away or use --run_name=NEW"
        )
    _check_writable(run_dir)
    device = resolve_device(config.run.device)
    entry = BACKBONES[config.run.backbone]
    path, source = resolve_weights(entry, config.run)
    if path is not None:
        check_weights_file(entry, path)
    weights = (path, source, file_sha256(path) if path is not None else None)
    if action == "resume" and (run_dir / CHECKPOINT_FILE).is_file():
        checkpoint = load_checkpoint(run_dir)
        check_compatible(checkpoint, semantic_config=config.semantic_json(),
                         backbone={"tag": config.run.backbone, "sha256": weights[2]})
    return RunPlan(config, run_dir, action, record, checkpoint, weights, device, record_bytes)


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


def _setup_torch(config: Config) -> None:
    import torch

    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    if config.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


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


def deployed_cost(result, hits: int, caches: list, evaluate, *, measure: bool, collector) -> dict[str, Any]:
    """Evaluation cost as a deployed model pays it (every test image new), beside the harness's.

    ``result`` is the recorded evaluation, run with the strategy's harness caches. When they served
    no image, its cost is the deployed cost. Otherwise the deployed cost is measured (``measure``:
    the run's last experience) by evaluating again with the caches bypassed, with the RNG state
    restored and the recorded predictions kept; at other experiences it is left unmeasured (None).
    """
    harness = {"harness_eval_seconds": result.seconds, "harness_eval_images_per_s": result.images_per_second,
               "harness_vit_passes_per_image": result.vit_passes_per_image, "query_cache_hits": hits if caches else None}
    from cl_bench.efficiency import bypassing

    deployed = result if hits == 0 else None
    agreement = None
    if deployed is None and measure:
        recorded = collector.result()[0]
        rng = seeding.capture_rng_state()
        with bypassing(caches):
            deployed = evaluate()
        seeding.restore_rng_state(rng)
        agreement = float((collector.result()[0] == recorded).float().mean())
    return {
        "eval_seconds": deployed.seconds if deployed else None,
        "eval_images_per_s": deployed.images_per_second if deployed else None,
        "vit_passes_per_image": deployed.vit_passes_per_image if deployed else None,
        "block_passes_per_image": deployed.block_passes_per_image if deployed else None,
        **harness,
        "harness_eval_speedup": result.images_per_second / deployed.images_per_second if deployed else None,
        "uncached_prediction_agreement": agreement,
    }


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
        # the deployed cost (every test image new); the harness's cached figures beside it
        "eval_images_per_s_last": last["eval_images_per_s"],
        "vit_passes_per_image_last": last["vit_passes_per_image"],
        "block_passes_per_image_last": last["block_passes_per_image"],
        "harness_eval_images_per_s_last": last.get("harness_eval_images_per_s"),
        "harness_eval_speedup_last": last.get("harness_eval_speedup"),
        **{k: max(s["efficiency"][k] for s in steps) for k in memory_keys},
        "wall_seconds": wall_seconds,
    }


def chance_warning(data: dict[str, Any]) -> str | None:
    """A warning when the final accuracy cannot be told apart from guessing: within three binomial
    standard deviations of chance on the test images of the last evaluation."""
    metrics, steps = data.get("metrics") or {}, data.get("steps") or []
    accuracy, chance = metrics.get("last_accuracy"), metrics.get("chance_last_accuracy")
    n = steps[-1].get("n_test") if steps else None
    if accuracy is None or not chance or not n:
        return None
    if accuracy > chance + 3 * math.sqrt(chance * (1 - chance) / n):
        return None
    return (f"final accuracy {100 * accuracy:.1f}% is indistinguishable from chance ({100 * chance:.1f}% on {n} test images): "
            "training probably failed (learning rate, divergence or data); do not use these numbers")


def resumed_threads_warning(data: dict[str, Any], env: dict[str, Any]) -> str | None:
    """A warning when a run with finished experiences continues on another CPU thread count: the
    summation order changes and training amplifies it, so the result can differ from an uninterrupted run."""
    before = (data.get("environment") or {}).get("torch_threads")
    now = env.get("torch_threads")
    if not data.get("steps") or before is None or before == now or env.get("device") != "cpu":
        return None
    return (f"resumed on {now} CPU threads after {len(data['steps'])} experiences ran on {before}: the numbers can differ "
            f"from an uninterrupted run (pass --threads {before} to resume exactly)")


def _eval_cost_text(efficiency: dict[str, Any]) -> str:
    deployed = (f"eval {efficiency['eval_images_per_s']:.0f} img/s, {efficiency['vit_passes_per_image']:.2f} ViT passes/img"
                if efficiency["eval_images_per_s"] is not None else "eval cost of new images not measured here")
    if efficiency["harness_eval_images_per_s"] == efficiency["eval_images_per_s"]:
        return deployed
    return (f"{deployed} (harness with its query cache: {efficiency['harness_eval_images_per_s']:.0f} img/s, "
            f"{efficiency['harness_vit_passes_per_image']:.2f} passes/img)")


def run_experiment(config: Config, *, quiet: bool = False) -> RunRecord:
    """Train and evaluate every experience; returns the finished run record."""
    plan = plan_run(config)
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    if plan.action == "finished":
        return _report_finished(plan, say)

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(plan.run_dir):
        record_path = plan.run_dir / RECORD_FILE
        if (record_path.read_bytes() if record_path.is_file() else None) != plan.record_bytes:
            plan = plan_run(config)  # another process wrote the record between our checks and our lock
            if plan.action == "finished":
                return _report_finished(plan, say)
        return _train(plan, say)


def _report_finished(plan: RunPlan, say) -> RunRecord:
    say(f"{plan.run_dir} already finished; nothing to do (use another --run_name to run again)")
    say(results_table(plan.record))
    if in_sweep_agent():  # an agent re-ran a finished config: report its metric to the new run
        tracker = WandbTracker(plan.config, plan.run_dir, run_id=None, job_type="train")
        tracker.start()
        tracker.log_summary(plan.record.data["metrics"])
        tracker.finish()
    return plan.record


def _mark_stopped(record: RunRecord, error: BaseException, status: str) -> None:
    """Record why the run stopped; on a full disk the last complete record stays as it is."""
    try:
        record.fail(error, status=status)
    except RunStopped:
        pass


def _train(plan: RunPlan, say) -> RunRecord:
    import torch  # noqa: F401

    from cl_bench.backbones import build_backbone
    from cl_bench.benches.streams import build_streams
    from cl_bench.efficiency import (BlockPassCounter, ThroughputMeter, cache_hits, harness_caches, peak_memory_mb,
                                     reset_peak_memory)
    from cl_bench.training.evaluation import evaluate_seen_classes
    from cl_bench.training.plugins import (HEALTH_CHECK_EVERY, HealthCheck, LossLogger, PredictionCollector,
                                           ProgressBar, RunGuard, check_finite_state)

    config, run_dir, device = plan.config, plan.run_dir, plan.device
    _setup_torch(config)
    seeding.seed_everything(config.run.seed)
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
    tracker = WandbTracker(config, run_dir, run_id=previous_wandb, job_type="train")
    guard = RunGuard(stop_at_once=True)  # until training starts, a signal stops at once (W&B start, data, model)
    guard.install()
    try:
        wandb_info = tracker.start()
        env = environment(device)
        thread_warning = resumed_threads_warning(record.data, env)
        if thread_warning:
            record.data["warnings"] = [*record.data.get("warnings", []), thread_warning]
            print(f"warning: {thread_warning}", file=sys.stderr, flush=True)
        record.update(status="running", error=None, wandb=wandb_info, environment=env)
        tracker.update_config({"environment": env, "weights": backbone_record, "config_digest": record.data["config_digest"],
                               "config_origins": record.data.get("config_origins") or {}})
        say(f"run {run_dir} ({f'resuming at experience {start + 1}/{n_experiences}' if start else 'new'}); "
            f"W&B {wandb_info['mode']} ({wandb_info['reason']})")
        wall_start = time.perf_counter()
        streams = build_streams(config)
        record.update(class_order=streams.class_order, class_names=streams.class_names, test_sizes=streams.test_sizes())
        tracker.update_config({"protocol": {
            "class_order": streams.class_order, "class_order_seed": config.effective_class_order_seed,
            "classes_per_experience": sizes, "class_names": streams.class_names, "test_sizes": streams.test_sizes()}})
        backbone = build_backbone(config)
        collector, meter = PredictionCollector(), ThroughputMeter()
        progress = ProgressBar(n_experiences, label=config.run.strategy, every_s=config.run.progress_every)
        plugins = [guard, HealthCheck(HEALTH_CHECK_EVERY), collector, meter, progress, LossLogger(tracker, config.run.log_every)]
        strategy_class = STRATEGIES[config.run.strategy].load_class()
        strategy = strategy_class.from_config(config, model=backbone.vit, device=device, plugins=plugins)
        counter = BlockPassCounter(backbone.vit.blocks)
        if checkpoint:
            strategy.load_learned_state(checkpoint["learned_state"])
            seeding.restore_rng_state(checkpoint["rng"])
        guard.stop_at_once = False
        guard.raise_if_signalled()

        # A reference row that trains once on the union of the stream (Joint) trains at the first
        # experience and is then scored after every experience over the classes seen so far.
        trains_on_union = getattr(strategy, "trains_on_union", False)
        for t in range(start, n_experiences):
            reset_peak_memory(device)
            train_start = time.perf_counter()
            trained = not trains_on_union or t == 0
            if not trains_on_union:
                strategy.train(streams.train_stream[t], eval_streams=[], num_workers=config.run.num_workers)
            elif t == 0:
                strategy.train(streams.train_stream, eval_streams=[], num_workers=config.run.num_workers)
            if trains_on_union:
                strategy.score_experiences(t + 1)
            train_seconds = time.perf_counter() - train_start
            guard.raise_if_signalled()
            # Before anything of experience t is recorded: what it learned (prototypes included) is finite.
            check_finite_state(strategy.learned_state(), where=f"after training experience {t}")

            def evaluate():
                return evaluate_seen_classes(strategy, streams, t, collector=collector, counter=counter,
                                             shuffle_seed=config.run.seed * EVAL_SEED_STRIDE + t,
                                             num_workers=config.run.num_workers)

            caches = harness_caches(strategy)
            hits_before = cache_hits(caches)
            result = evaluate()
            efficiency = {
                "trainable_parameters": strategy.trainable_count if trained else 0,
                "trainable_parameters_head": strategy.trainable_head_count if trained else 0,
                "stored_parameters": strategy.stored_parameters(),
                "train_seconds": train_seconds,
                "train_images_per_s": meter.images_per_second if trained else None,
                **deployed_cost(result, cache_hits(caches) - hits_before, caches, evaluate,
                                measure=t == n_experiences - 1, collector=collector),
                **peak_memory_mb(device),
            }
            step = {"experience": t, "accuracy_per_experience": result.accuracy_per_experience[: t + 1],
                    "n_test": result.n_test, "efficiency": efficiency, "method": strategy.experience_report()}
            metrics = record.add_step(step)
            old, new = step["old_accuracy"], step["new_accuracy"]
            tracker.log({"experience": t, "eval/accuracy": step["accuracy"], "eval/old_accuracy": old,
                         "eval/new_accuracy": new, "eval/avg_accuracy": metrics["avg_accuracy"],
                         **{f"efficiency/{k}": v for k, v in efficiency.items() if v is not None}})
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
                f"train {train_seconds:.1f}s | {_eval_cost_text(efficiency)}")

        efficiency_summary = _efficiency_summary(record.data["steps"], time.perf_counter() - wall_start)
        warning = chance_warning(record.data)
        record.finish(efficiency=efficiency_summary, warnings=[*record.data.get("warnings", []), *([warning] if warning else [])])
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        tracker.log_summary({**record.data["metrics"], "R": record.data["R"],
                             "classes_per_experience": sizes, "test_sizes": record.data["test_sizes"],
                             **{f"efficiency/{k}": v for k, v in efficiency_summary.items()}})
        tracker.log_accuracy_matrix(record.data["R"])
        tracker.log_run_record(run_dir / RECORD_FILE, record.data,
                               checkpoint=run_dir / CHECKPOINT_FILE if config.run.wandb_log_checkpoint else None)
        tracker.finish(0)
        say(results_table(record))
        return record
    except (RunInterrupted, KeyboardInterrupt) as error:
        interrupted = error if isinstance(error, RunInterrupted) else RunInterrupted(guard.signal_received or signal.SIGINT)
        _mark_stopped(record, interrupted, "interrupted")
        tracker.finish(1)
        raise interrupted from None
    except BaseException as error:
        _mark_stopped(record, error, "failed")
        tracker.finish(1)
        raise
    finally:
        guard.uninstall()
