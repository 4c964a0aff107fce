"""How many token sequences one batched pass over a method's branches holds, measured on first use.

CL-LoRA's task branches and EASE's adapter sets can run one per pass or several stacked along the
batch. Which is faster depends on the model's shapes, the device and the batch, not on the device
alone: on 2 CPU cores batching was slower on the suite's 28 px ViT at batch 32 and faster on
ViT-B/16 at batch 4 (sweeps/bench_efficiency.py). So with the option at 0 (auto) the first call
that has several branches times one representative block of the method at 1, 2, 4, 8 branches per
pass on its real input, and keeps the fastest (the smallest within 5% of it, to keep memory low).
The choice is cached per (block shape, tokens, dtype, device, threads, batch, torch version): in
this process, and in ``$CL_BENCH_CACHE_DIR/branch_batching.json`` (default ``~/.cache/cl-bench``),
so later runs and resumed runs reuse it instead of measuring again. Every path gives the same
outputs (tested); only speed depends on the choice. Methods record it in their experience report.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

__all__ = ["MAX_BRANCH_SEQUENCES", "BatchingChoice", "BranchBatching", "cache_file", "device_key",
           "measure_sequences_per_pass", "clear_process_cache", "shape_key", "measuring"]

#: Most token sequences per batched pass, whatever the measurement says: bounds activation memory
#: (ViT-B/16 at 1024 sequences holds about 2.5 GB per MLP activation in fp32).
MAX_BRANCH_SEQUENCES = 1024
#: Branches per pass tried, in this order; larger ones only while they keep getting faster.
CANDIDATE_GROUPS = (1, 2, 4, 8)
#: A candidate that is not at least this much faster per sequence than the previous one ends the search.
MIN_GAIN = 0.02
#: Among the measured candidates, the smallest within this fraction of the fastest is chosen.
TOLERANCE = 0.05
#: A timed pass longer than this is timed once, and ends the search (the launches that batching
#: saves are negligible against it).
LONG_PASS_S = 0.5

_PROCESS_CACHE: dict[str, dict] = {}
_MEASURING = [False]


def measuring() -> bool:
    """True while a choice is being timed: those block passes are not the method's cost (not counted)."""
    return _MEASURING[0]


@dataclass
class BatchingChoice:
    sequences_per_pass: int
    #: "requested" (the option), "measured", "process cache" or "cache file".
    source: str
    key: str | None = None
    #: Measured seconds per token sequence, by sequences per pass (as strings, for JSON).
    seconds_per_sequence: dict[str, float] = field(default_factory=dict)


def clear_process_cache() -> None:
    _PROCESS_CACHE.clear()


def cache_file() -> Path:
    root = os.environ.get("CL_BENCH_CACHE_DIR") or Path.home() / ".cache" / "cl-bench"
    return Path(root).expanduser() / "branch_batching.json"


def device_key(device: torch.device) -> str:
    """The hardware a timing holds for: the GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"{device.type} {platform.processor() or platform.machine()} x{os.cpu_count()} threads {torch.get_num_threads()}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_sequences_per_pass(batch: int, make_pass: Callable[[int], Callable[[], object]], device: torch.device,
                               cap: int = MAX_BRANCH_SEQUENCES, timer: Callable[[], float] = time.perf_counter,
                               ) -> tuple[int, dict[str, float]]:
    """Time ``make_pass(k)()`` (one pass of a representative block over ``k`` stacked branches of
    ``batch`` sequences) for k = 1, 2, 4, 8 within ``cap``; returns the chosen sequences per pass and
    the seconds per sequence measured. One untimed pass first; each candidate is timed twice (min)."""
    candidates = [k for k in CANDIDATE_GROUPS if k == 1 or k * batch <= cap]
    per_sequence: dict[int, float] = {}
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices), _measuring():  # the run's random streams stay untouched
        make_pass(1)()
        for k in candidates:
            run = make_pass(k)
            times = []
            for _ in range(2):
                _sync(device)
                start = timer()
                run()
                _sync(device)
                times.append(timer() - start)
                if times[-1] > LONG_PASS_S:
                    break
            per_sequence[k] = min(times) / (k * batch)
            previous = per_sequence.get(k // 2) if k > 1 else None
            if previous is not None and (per_sequence[k] > (1 - MIN_GAIN) * previous or min(times) > LONG_PASS_S):
                break
    best = min(per_sequence.values())
    chosen = min(k for k, v in per_sequence.items() if v <= best * (1 + TOLERANCE))
    return chosen * batch, {str(k * batch): v for k, v in per_sequence.items()}


@contextmanager
def _measuring():
    _MEASURING[0] = True
    try:
        yield
    finally:
        _MEASURING[0] = False


def _read_file() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_file(key: str, entry: dict) -> None:
    """Best effort, atomic: a cache that cannot be written only means measuring again next time."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_file()
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".branch_batching.")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


class BranchBatching:
    """A method's choice of sequences per batched branch pass: ``requested`` (> 0) as given, or
    (0) measured on the first call with several branches, then cached."""

    def __init__(self, requested: int, device, timer: Callable[[], float] = time.perf_counter) -> None:
        if requested < 0:
            raise ValueError(f"sequences per pass must be >= 0 (0: measured); got {requested}")
        self.requested = requested
        self.timer = timer
        self.device = torch.device(device if device is not None else "cpu")
        self.choice: BatchingChoice | None = BatchingChoice(requested, "requested") if requested else None

    @property
    def sequences_per_pass(self) -> int | None:
        return self.choice.sequences_per_pass if self.choice is not None else None

    def branches_per_pass(self, batch: int, n_branches: int, describe: Callable[[], str],
                          make_pass: Callable[[int], Callable[[], object]]) -> int:
        """How many of ``n_branches`` branches of ``batch`` sequences one pass takes. On first use
        with several branches: ``describe()`` names the model's shapes (see ``shape_key``) and
        ``make_pass(k)`` returns a callable running one representative block over k branches."""
        if self.choice is None:
            if n_branches < 2:
                return 1  # nothing to choose yet
            self.choice = self._choose(batch, describe(), make_pass)
        return max(1, self.choice.sequences_per_pass // batch)

    def _choose(self, batch: int, shape_key: str, make_pass) -> BatchingChoice:
        key = f"{shape_key} | {device_key(self.device)} | batch {batch} | torch {torch.__version__}"
        if key in _PROCESS_CACHE:
            return BatchingChoice(source="process cache", key=key, **_PROCESS_CACHE[key])
        stored = _read_file().get(key)
        if isinstance(stored, dict) and isinstance(stored.get("sequences_per_pass"), int) and stored["sequences_per_pass"] > 0:
            entry = {"sequences_per_pass": stored["sequences_per_pass"],
                     "seconds_per_sequence": dict(stored.get("seconds_per_sequence") or {})}
            _PROCESS_CACHE[key] = entry
            return BatchingChoice(source="cache file", key=key, **entry)
        chosen, timings = measure_sequences_per_pass(batch, make_pass, self.device, timer=self.timer)
        entry = {"sequences_per_pass": chosen, "seconds_per_sequence": timings}
        _PROCESS_CACHE[key] = entry
        _write_file(key, entry)
        return BatchingChoice(source="measured", key=key, **entry)

    def report(self) -> dict:
        """For the run record: the choice, where it came from, and what was measured."""
        if self.choice is None:
            return {"sequences_per_pass": None, "source": "not chosen yet (one branch so far)"}
        return asdict(self.choice)


def shape_key(part: str, vit: torch.nn.Module, tokens: torch.Tensor) -> str:
    """What a block's timing depends on besides the device and batch: width, heads, MLP, tokens, dtype."""
    block = vit.blocks[0]
    block = getattr(block, "block", block)  # EASE wraps the stock block
    heads = getattr(block.attn, "num_heads", "?")
    hidden = getattr(getattr(block.mlp, "fc1", None), "out_features", "?")
    dtype = tokens.dtype
    if tokens.device.type in ("cuda", "cpu") and torch.is_autocast_enabled(tokens.device.type):
        dtype = torch.get_autocast_dtype(tokens.device.type)
    return f"{part} | width {tokens.shape[-1]} heads {heads} mlp {hidden} tokens {tokens.shape[1]} {dtype}"
