"""Efficiency benchmark: every registered strategy on one backbone and input size, in one process.

    python sweeps/bench_efficiency.py                       # the suite's small ViT at 28 px, CPU, ~3 min
    python sweeps/bench_efficiency.py --backbone vit_base_patch16_224.augreg_in21k --device cuda
    python sweeps/bench_efficiency.py --paper_shapes                # ViT-B/16, random weights, CL-LoRA and EASE

Measured, not assumed: trainable and stored parameters, training images/s (forward, backward and
the method's optimizer steps), inference images/s and ViT block passes per test image (counted by
hooks, every test image new: query caches bypassed) after 1, 5, 10 and 20 experiences, peak memory, and each method's training FLOP/s as a
fraction of the machine's measured matmul FLOP/s. Strategies are measured in alternation, each
figure is the median of --repeats with its min-max spread. Also: the harness overhead (our
Avalanche strategy with its plugins and W&B logging against a bare PyTorch loop on the same model
and data), and the before/after ratio of each fast path (outputs equal; see the tests).
The data are synthetic images (timing does not depend on pixels); the split is B5-5-20.

``--paper_shapes`` checks the speed choices where they matter: ViT-B/16 with random weights at
224 px, CL-LoRA (with its reference-style KD variant) and EASE, after 2, 6 and 10 experiences; at
batch 4 with one batch of images on a CPU, at the paper's batch (64) on a GPU. Branch batching is
measured afresh (a temporary choice cache), so the run validates the measured choice against
both fixed settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Only light imports up to parsing, so --help and a typo answer at once; torch and Avalanche load in run().
import cl_bench.catalog  # noqa: E402,F401  (registered names, for the defaults below; no torch)
from cl_bench.cli import ArgumentParser  # noqa: E402
from cl_bench.config import resolve_config  # noqa: E402
from cl_bench.errors import UserError  # noqa: E402
from cl_bench.registry import BACKBONES, STRATEGIES  # noqa: E402

PROG = "sweeps/bench_efficiency.py"
STAGES = (1, 5, 10, 20)
#: --paper_shapes: what it sets unless the option is given explicitly (CPU / GPU).
PAPER_SHAPES = {"backbone": "vit_base_patch16_224.augreg_in21k", "pretrained": "false", "strategies": "cl_lora,ease",
                "stages": "2,6,10", "experiences": 10, "harness": "false"}
PAPER_SHAPES_CPU = {"batch_size": 4, "eval_batch_size": 4, "train_per_experience": 4, "eval_images": 4}
PAPER_SHAPES_GPU = {"batch_size": 64, "eval_batch_size": 128, "train_per_experience": 256, "eval_images": 256}
CLASSES_PER_EXPERIENCE = 5
#: The benchmark's configs borrow CIFAR-100's 100-class B5-5-20 split; the data are synthetic.
CONFIG_BENCH = "split_cifar100"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="vit_mini_patch4_28.fmnist_letters",
                   help="pinned backbone tag (see sweeps/run.py --help; default: %(default)s)")
    p.add_argument("--pretrained", default="false", choices=["true", "false"],
                   help="load the backbone's weights; they do not change timings (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--strategies", default=",".join(STRATEGIES.names()),
                   help="comma-separated strategies to measure (default: all: %(default)s)")
    p.add_argument("--experiences", type=int, default=20,
                   help="grow to this many experiences; stages 1/5/10/20 beyond it are skipped (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="repeats of every measurement; tables show the median and min-max (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=32, help="training and inference batch size (default: %(default)s)")
    p.add_argument("--train_per_experience", type=int, default=128,
                   help="synthetic training images per experience (default: %(default)s)")
    p.add_argument("--eval_images", type=int, default=128,
                   help="synthetic test images per inference measurement (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default (default: %(default)s)")
    p.add_argument("--bf16", action="store_true", help="also measure bf16 autocast (meaningful on GPU)")
    p.add_argument("--stages", default=",".join(map(str, STAGES)),
                   help="experiences after which inference is measured (default: %(default)s)")
    p.add_argument("--eval_batch_size", type=int, default=64, help="evaluation batch size (default: %(default)s)")
    p.add_argument("--harness", default="true", choices=["true", "false"],
                   help="also measure the harness overhead (EASE training, default: %(default)s)")
    p.add_argument("--paper_shapes", action="store_true",
                   help="ViT-B/16 (random weights), CL-LoRA and EASE, stages 2,6,10, batch 4 on CPU / 64 on GPU; "
                        "options given explicitly still win")
    p.add_argument("--out", default="reports/efficiency",
                   help="directory for efficiency.json and efficiency.md (default: %(default)s)")
    return p


def parse(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.paper_shapes:
        defaults = {**PAPER_SHAPES, **(PAPER_SHAPES_GPU if args.device.startswith("cuda") else PAPER_SHAPES_CPU)}
        probe = build_parser()  # the options given explicitly: parsed again with no defaults
        for action in probe._actions:
            action.default = argparse.SUPPRESS
        given = set(vars(probe.parse_args(argv)))
        for key, value in defaults.items():
            if key not in given:
                setattr(args, key, value)
    return args


# -- measurement helpers -----------------------------------------------------------------------
def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


class PeakMemory:
    """Peak CUDA allocation, or peak process RSS above the level at entry, sampled every 10 ms."""

    def __init__(self, device):
        self.device = device
        self.peak_mb = 0.0

    @contextmanager
    def measure(self):
        import psutil
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            self.peak_mb = max(self.peak_mb, torch.cuda.max_memory_allocated(self.device) / 2**20)
            return
        process = psutil.Process()
        base = process.memory_info().rss
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                done.wait(0.01)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.peak_mb = max(self.peak_mb, (peak[0] - base) / 2**20)


def machine_matmul_flops(device, size=1024, repeats=20):
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_streams(n_experiences, train_per_class, test_per_class, size, seed=0):
    import torch
    from avalanche.benchmarks.scenarios import class_incremental_benchmark
    from avalanche.benchmarks.utils import as_classification_dataset
    from torch.utils.data import TensorDataset

    from cl_bench.benches.streams import BenchStreams

    n_classes = n_experiences * CLASSES_PER_EXPERIENCE
    generator = torch.Generator().manual_seed(seed)

    def dataset(per_class):
        y = torch.arange(n_classes).repeat_interleave(per_class)
        data = TensorDataset(torch.rand(len(y), 3, size, size, generator=generator), y)
        data.targets = y.tolist()
        return as_classification_dataset(data)

    scenario = class_incremental_benchmark(
        {"train": dataset(train_per_class), "test": dataset(test_per_class)},
        class_order=list(range(n_classes)), num_classes_per_exp=[CLASSES_PER_EXPERIENCE] * n_experiences,
    )
    return BenchStreams(scenario=scenario, class_order=list(range(n_classes)),
                        classes_per_experience=[CLASSES_PER_EXPERIENCE] * n_experiences,
                        class_names=[f"class {c}" for c in range(n_classes)])


def flop_window():
    """A plugin that counts the FLOPs of the training epochs only (not of prototype passes after
    them); made on demand so that parsing never imports Avalanche."""
    from avalanche.core import SupervisedPlugin

    class FlopWindow(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.flops = 0
            self._mode = None

        def before_training_epoch(self, strategy, **kwargs):
            from torch.utils.flop_counter import FlopCounterMode

            self._mode = FlopCounterMode(display=False)
            self._mode.__enter__()

        def after_training_epoch(self, strategy, **kwargs):
            self._mode.__exit__(None, None, None)
            self.flops += self._mode.get_total_flops()

    return FlopWindow()


class Subject:
    """One strategy under measurement, with the plugins a real run has."""

    def __init__(self, label, name, overrides, streams, device, extra_plugins=()):
        from cl_bench.backbones import build_backbone
        from cl_bench.efficiency import BlockPassCounter, ThroughputMeter
        from cl_bench.training.plugins import PredictionCollector, ProgressBar, RunGuard

        self.label, self.name = label, name
        self.config = resolve_config(name, CONFIG_BENCH, overrides)
        self.backbone = build_backbone(self.config)
        self.meter, self.collector = ThroughputMeter(), PredictionCollector()
        plugins = [RunGuard(), self.collector, self.meter, ProgressBar(), *extra_plugins]
        self.strategy = STRATEGIES[name].load_class().from_config(self.config, model=self.backbone.vit, device=device,
                                                                   plugins=plugins)
        self.counter = BlockPassCounter(self.backbone.vit.blocks)
        self.streams, self.device = streams, device
        self.done = 0
        self.memory = PeakMemory(device)
        self.trainable = None

    def train_next(self, flops=False):
        exp = self.streams.train_stream[self.done]
        window = flop_window()
        if flops:
            self.strategy.plugins.append(window)
        with self.memory.measure():
            self.strategy.train(exp, eval_streams=[])
        if flops:
            self.strategy.plugins.remove(window)
            self.flops_per_image = window.flops / self.meter.images if self.meter.images else 0.0
        self.trainable = self.strategy.trainable_count
        self.done += 1
        return self.meter.epoch_rates[-1] if self.meter.epoch_rates else None  # SimpleCIL trains nothing

    def eval_experience(self, n_images):
        from avalanche.benchmarks import DatasetExperience

        merged = self.streams.seen_test_experience(self.done - 1).dataset
        n = min(n_images, len(merged))
        spaced = [i * len(merged) // n for i in range(n)]  # every seen experience is represented
        return DatasetExperience(dataset=merged.subset(spaced), current_experience=self.done - 1)

    def evaluate(self, experience):
        self.collector.expected_width = self.streams.offsets[self.done]
        self.counter.reset()
        with self.memory.measure(), self.counter.counting():
            sync(self.device)
            start = time.perf_counter()
            self.strategy.eval(experience)
            sync(self.device)
            seconds = time.perf_counter() - start
        self.counter.images = len(experience.dataset)
        return len(experience.dataset) / seconds


def timed(fn, repeats, device):
    values = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        values.append(time.perf_counter() - start)
    return statistics.median(values)


# -- the benchmark -----------------------------------------------------------------------------
def run(args):
    import torch

    from cl_bench.seeding import seed_everything

    import os
    import tempfile

    from cl_bench.models import branch_batching

    if args.threads:
        torch.set_num_threads(args.threads)
    # Branch batching is measured afresh in this run (never from an earlier run's cache), so the run
    # checks the measured choice against the fixed settings.
    os.environ["CL_BENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="cl-bench-efficiency-")
    branch_batching.clear_process_cache()
    device = torch.device(args.device)
    entry = BACKBONES[args.backbone]
    size = entry.input_size
    per_class_train = max(1, args.train_per_experience // CLASSES_PER_EXPERIENCE)
    per_class_test = max(1, args.eval_images // CLASSES_PER_EXPERIENCE)
    seed_everything(0)
    streams = synthetic_streams(args.experiences, per_class_train, per_class_test, size)
    common = {"backbone": args.backbone, "pretrained": args.pretrained, "epochs": 1, "batch_size": args.batch_size,
              "eval_batch_size": args.eval_batch_size, "init_cls": 5, "inc_cls": 5, "wandb_mode": "disabled"}
    names = args.strategies.split(",")
    subjects = [Subject(n, n, common, streams, device) for n in names]
    variants = []
    if "cl_lora" in names:
        variants.append(Subject("cl_lora (reference KD pass)", "cl_lora", {**common, "kd_reuse_shared_forward": "false"}, streams, device))
    if args.bf16:
        variants += [Subject(f"{n} (bf16)", n, {**common, "amp": "bf16"}, streams, device) for n in names if n != "simple_cil"]
    everyone = subjects + variants
    stages = [s for s in sorted({int(v) for v in str(args.stages).split(",")}) if s <= args.experiences]
    results = {s.label: {"strategy": s.name, "inference": {}, "stored_parameters": {}} for s in everyone}
    machine = machine_matmul_flops(device)
    print(f"machine: {machine / 1e9:.1f} GFLOP/s (fp32 matmul); backbone {args.backbone} at {size} px on {device}", flush=True)

    def measure_stage(stage):
        from cl_bench.efficiency import bypassing, harness_caches
        evals = {s.label: s.eval_experience(args.eval_images) for s in subjects}
        rates = {s.label: [] for s in subjects}
        for repeat in range(args.repeats):
            order = subjects if repeat % 2 == 0 else subjects[::-1]  # alternate, so drift spreads evenly
            for s in order:
                with bypassing(harness_caches(s.strategy)):  # a deployed model's cost: every image new
                    rates[s.label].append(s.evaluate(evals[s.label]))
        for s in subjects:
            results[s.label]["inference"][stage] = {**spread(rates[s.label]), "vit_passes_per_image": s.counter.vit_passes_per_image,
                                                    "block_passes_per_image": s.counter.block_passes_per_image}
            results[s.label]["stored_parameters"][stage] = s.strategy.stored_parameters()
        print(f"after {stage} experiences: " + ", ".join(
            f"{s.label} {statistics.median(rates[s.label]):.0f} img/s ({s.counter.vit_passes_per_image:.2f} passes)" for s in subjects), flush=True)

    fast = {}
    for s in everyone:
        s.train_next()
    while subjects[0].done < stages[0]:
        for s in subjects:
            s.train_next()
    measure_stage(stages[0])
    fast.update(fast_path_ratios(subjects, stages[0], args, device, first=True))
    for s in everyone:  # an untimed experience that counts FLOPs
        s.train_next(flops=True)
    train_rates = {s.label: [] for s in everyone}
    for repeat in range(args.repeats):
        order = everyone if repeat % 2 == 0 else everyone[::-1]
        for s in order:
            if s.done < args.experiences:
                rate = s.train_next()
                if rate is not None:
                    train_rates[s.label].append(rate)
    for s in everyone:
        rates = train_rates[s.label]
        results[s.label]["trainable_parameters"] = s.trainable
        if rates and s.meter.images:
            results[s.label]["train_images_per_s"] = spread(rates)
            flop_rate = s.flops_per_image * statistics.median(rates)
            results[s.label]["train_flops_per_image"] = s.flops_per_image
            results[s.label]["train_flops_fraction_of_machine"] = flop_rate / machine
    for stage in stages[1:]:
        while subjects[0].done < stage:
            for s in subjects:
                s.train_next()
        if subjects[0].done > stage:  # the timed training went past it: measured, and labelled, where it is
            print(f"stage {stage} measured after {subjects[0].done} experiences (the timed training went past it)")
        stage = subjects[0].done
        if stage in results[subjects[0].label]["inference"]:
            continue
        measure_stage(stage)
        fast.update(fast_path_ratios(subjects, stage, args, device, first=False))
    for s in everyone:
        results[s.label]["peak_memory_mb"] = s.memory.peak_mb
    reuse, reference = results.get("cl_lora", {}), results.get("cl_lora (reference KD pass)", {})
    if "train_images_per_s" in reuse and "train_images_per_s" in reference:  # timed experiences ran
        pairs = zip(train_rates["cl_lora"], train_rates["cl_lora (reference KD pass)"])  # same repeat, adjacent
        fast["cl_lora training: KD student from the main forward vs a separate pass"] = spread([a / b for a, b in pairs])
    harness = harness_overhead(common, streams, device, args.repeats) if args.harness == "true" else None
    choices = {s.label: s.strategy.experience_report().get("branch_batching") for s in subjects
               if "branch_batching" in s.strategy.experience_report()}
    return {"machine_matmul_flops": machine, "backbone": args.backbone, "input_size": size, "device": str(device),
            "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size, "threads": torch.get_num_threads(),
            "experiences": args.experiences, "repeats": args.repeats,
            "strategies": results, "fast_paths": fast, "branch_batching": choices, "harness": harness}


def rotating_ratios(fns, base, repeats, device):
    """Run every callable of ``fns`` once per repeat, the order rotating (a shared machine's drift
    falls on all); per repeat, the time of ``fns[base]`` over each one's: median and min-max."""
    names = list(fns)
    seconds = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: spread([b / t for b, t in zip(seconds[base], seconds[name])]) for name in names if name != base}


def fast_path_ratios(subjects, stage, args, device, first=False):
    """Before/after time ratios of the fast paths on the current models (outputs equal: tests)."""
    import torch

    from cl_bench.efficiency import bypassing, harness_caches
    from cl_bench.models.branch_batching import MAX_BRANCH_SEQUENCES, BranchBatching

    by_name = {s.name: s for s in subjects}
    x = torch.rand(min(64, args.eval_images), 3, subjects[0].streams.train_stream[0].dataset[0][0].shape[-1],
                   subjects[0].streams.train_stream[0].dataset[0][0].shape[-1], device=device)
    out = {}

    def batching(model, sequences, fn):
        """``fn`` with ``sequences`` per pass (None: the strategy's own, measured choice)."""
        def run():
            chosen = model.batching
            if sequences is not None:
                model.batching = BranchBatching(sequences, chosen.device)
            try:
                return fn()
            finally:
                model.batching = chosen
        return run

    with torch.no_grad():
        if "cl_lora" in by_name:
            model = by_name["cl_lora"].strategy.model.eval()
            model.predict(x)  # makes the strategy's own choice now if it is not made yet
            chosen = model.batching.sequences_per_pass
            fns = {"naive": lambda: model.predict_naive(x), "chosen": batching(model, None, lambda: model.predict(x))}
            if len(set(model.task_branch)) > 1:  # with one branch there is nothing to batch
                fns["one"] = batching(model, x.shape[0], lambda: model.predict(x))
                fns["all"] = batching(model, MAX_BRANCH_SEQUENCES, lambda: model.predict(x))
            ratios = rotating_ratios(fns, "naive", args.repeats, device)
            out[f"cl_lora inference, {stage} tasks: shared half once (measured batching) vs one full pass per task"] = ratios["chosen"]
            if "one" in ratios:
                out[f"cl_lora inference, {stage} tasks: shared half once, one branch per pass vs one full pass per task"] = ratios["one"]
                out[f"cl_lora inference, {stage} tasks: shared half once, all branches batched vs one full pass per task"] = ratios["all"]
                out[f"cl_lora inference, {stage} tasks: measured batching ({chosen} sequences per pass) vs one branch per pass"] = spread(
                    [c / o for c, o in zip(ratios["chosen"]["values"], ratios["one"]["values"])])
            if not args.paper_shapes:
                wrappers = model.shared_wrappers + model.specific_wrappers

                def low_rank():
                    for w in wrappers:
                        w.merge_for_inference = False
                    try:
                        return model.predict(x)
                    finally:
                        for w in wrappers:
                            w.merge_for_inference = True
                folded = rotating_ratios({"low_rank": low_rank, "folded": lambda: model.predict(x)}, "low_rank",
                                         args.repeats, device)
                out[f"cl_lora inference, {stage} tasks: LoRA folded into the qkv weight vs low-rank detour"] = folded["folded"]
        if "ease" in by_name and by_name["ease"].strategy.model.n_sets > 1:  # one set: nothing to batch
            model = by_name["ease"].strategy.model.eval()
            sets = list(range(model.n_sets))
            model.features(x, sets)
            chosen = model.batching.sequences_per_pass
            ratios = rotating_ratios({
                "per_set": lambda: model.features(x, sets, batched=False),
                "all": batching(model, MAX_BRANCH_SEQUENCES, lambda: model.features(x, sets)),
                "chosen": batching(model, None, lambda: model.features(x, sets)),
            }, "per_set", args.repeats, device)
            out[f"ease inference, {stage} tasks: all adapter sets batched vs one pass per set"] = ratios["all"]
            out[f"ease inference, {stage} tasks: measured batching ({chosen} sequences per pass) vs one pass per set"] = ratios["chosen"]
    for name in ("l2p", "coda_prompt"):
        caches = harness_caches(by_name[name].strategy) if name in by_name else []
        if caches and first:  # a speed-up of the harness (re-seen images), not of the method
            s = by_name[name]
            experience = s.eval_experience(args.eval_images)
            with bypassing(caches):
                uncached = statistics.median(1 / s.evaluate(experience) for _ in range(args.repeats))
            s.evaluate(experience)  # fills the cache
            cached = statistics.median(1 / s.evaluate(experience) for _ in range(args.repeats))
            out[f"{name} repeated evaluation, query cache vs none"] = spread([uncached / cached])
    return out


def harness_overhead(common, streams, device, repeats):
    """Seconds per training step of EASE's first experience through our Avalanche strategy (its
    plugins and W&B logging, offline) against a bare PyTorch loop on the same model and data."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from cl_bench.config import resolve_config
    from cl_bench.models.heads import CosineLinear
    from cl_bench.tracking import WandbTracker
    from cl_bench.training.plugins import LossLogger

    import tempfile

    config = resolve_config("ease", CONFIG_BENCH, {**common, "wandb_mode": "offline", "log_every": 1})
    with tempfile.TemporaryDirectory() as tmp:
        tracker = WandbTracker(config, Path(tmp), run_id=None, job_type="efficiency")
        tracker.start()
        subject = Subject("harness", "ease", {**common, "wandb_mode": "offline"}, streams, device, [LossLogger(tracker, 1)])
        strategy, model = subject.strategy, subject.strategy.model
        strategy.train(streams.train_stream[0], eval_streams=[])  # warm-up, and builds the proxy head and optimizer
        avalanche_steps, bare_steps = [], []
        # Each repeat trains the next experience (an experience's classes are learned once): same sizes, same step.
        for repeat in range(min(repeats, len(streams.train_stream) - 1)):
            experience = streams.train_stream[1 + repeat]
            data = experience.dataset.train()
            steps = len(data) // strategy.train_mb_size + bool(len(data) % strategy.train_mb_size)
            strategy.train(experience, eval_streams=[])  # a new adapter set each time; the step is the same
            avalanche_steps.append(len(data) / subject.meter.epoch_rates[-1] / steps)  # the epoch, not the prototypes after it
            head = CosineLinear(model.vit.embed_dim, CLASSES_PER_EXPERIENCE).to(device)  # the strategy drops its own
            model.set_trainable(model.n_sets - 1)
            optimizer = strategy.build_optimizer([p for p in model.parameters() if p.requires_grad] + list(head.parameters()))
            loader = DataLoader(data, batch_size=strategy.train_mb_size, shuffle=True)
            model.train()
            start = time.perf_counter()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                local = strategy.columns_of(y) - strategy.known_classes  # the experience's own classes, as the strategy trains them
                loss = F.cross_entropy(head(model.features(x, [model.n_sets - 1])[0]), local)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sync(device)
            bare_steps.append((time.perf_counter() - start) / steps)
        tracker.finish()
    a, b = statistics.median(avalanche_steps), statistics.median(bare_steps)
    return {"avalanche_step_seconds": spread(avalanche_steps), "bare_step_seconds": spread(bare_steps),
            "overhead_fraction": a / b - 1,
            "note": "EASE, the experiences after a warm-up one, W&B offline logging every step; the epoch time only (prototypes after it excluded)"}


def markdown(report):
    lines = [f"Backbone `{report['backbone']}` at {report['input_size']} px on {report['device']} "
             f"({report.get('threads', '?')} threads), batch {report['batch_size']} (eval {report.get('eval_batch_size', '?')}), "
             f"median of {report['repeats']} repeats [min-max]; machine fp32 matmul {report['machine_matmul_flops'] / 1e9:.1f} GFLOP/s.", ""]
    stages = sorted({int(k) for r in report["strategies"].values() for k in r["inference"]})
    header = ["strategy", "trainable / exp", "stored after " + "/".join(map(str, stages)), "train img/s", "train FLOP/s (of machine)"]
    header += [f"infer img/s @{t}" for t in stages] + ["ViT passes/img @" + "/".join(map(str, stages)), "peak mem MB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    def rate(v):
        return f"{v:.0f}" if v >= 10 else f"{v:.2g}"  # ViT-B on a CPU runs below 1 img/s

    for label, r in report["strategies"].items():
        r = {**r, "inference": {int(k): v for k, v in r["inference"].items()},
             "stored_parameters": {int(k): v for k, v in r["stored_parameters"].items()}}  # JSON keys are strings
        train = r.get("train_images_per_s")
        cells = [label, f"{r.get('trainable_parameters') or 0:,}",
                 "/".join(f"{r['stored_parameters'][t]:,}" for t in stages) if r["stored_parameters"] else "-",
                 f"{rate(train['median'])} [{rate(train['min'])}-{rate(train['max'])}]" if train else "-",
                 f"{100 * r['train_flops_fraction_of_machine']:.1f}%" if "train_flops_fraction_of_machine" in r else "-"]
        for t in stages:
            i = r["inference"].get(t)
            cells.append(f"{rate(i['median'])} [{rate(i['min'])}-{rate(i['max'])}]" if i else "-")
        cells.append("/".join(f"{r['inference'][t]['vit_passes_per_image']:.2f}" for t in stages) if r["inference"] else "-")
        cells.append(f"{r['peak_memory_mb']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Inference img/s and ViT passes are a deployed model's cost: every test image new, query caches "
              "bypassed. The query cache below only speeds up this harness, which re-evaluates the same test images."]
    lines += ["", f"| fast path | speed-up, median of {report['repeats']} [min-max] |", "|---|---|"]
    lines += [f"| {k} | {v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}] |" for k, v in report["fast_paths"].items()]
    for label, choice in (report.get("branch_batching") or {}).items():
        if choice and choice.get("sequences_per_pass"):
            measured = ", ".join(f"{n}: {1e3 * t:.1f} ms" for n, t in sorted(choice["seconds_per_sequence"].items(),
                                                                           key=lambda kv: int(kv[0])))
            lines += ["", f"{label} branch batching: {choice['sequences_per_pass']} sequences per pass ({choice['source']}; "
                      f"one block's time per sequence at each size: {measured})."]
    h = report["harness"]
    if h is None:
        return "\n".join(lines)
    lines += ["", f"Harness overhead (EASE training step, Avalanche + plugins + W&B offline logging every step vs a bare "
              f"PyTorch loop): {1e3 * h['avalanche_step_seconds']['median']:.1f} ms vs {1e3 * h['bare_step_seconds']['median']:.1f} ms "
              f"per step, overhead {100 * h['overhead_fraction']:+.1f}%."]
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    try:
        BACKBONES[args.backbone]
        for name in args.strategies.split(","):
            STRATEGIES[name]
        if args.experiences < 1 or args.repeats < 1:
            raise UserError("--experiences and --repeats must be at least 1")
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "efficiency.json").write_text(json.dumps(report, indent=1, default=str))
    table = markdown(report)
    (out / "efficiency.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {out / 'efficiency.json'} and {out / 'efficiency.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
