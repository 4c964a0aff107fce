"""Plugins every run uses: prediction collection, guards, progress and loss logging."""

from __future__ import annotations

import math
import signal
import sys
from typing import Any, Callable, Iterator

import torch
from avalanche.core import SupervisedPlugin
from tqdm.auto import tqdm

from cl_bench.errors import DivergenceError, NonFiniteLossError, RunInterrupted

__all__ = ["PredictionCollector", "RunGuard", "HealthCheck", "ProgressBar", "LossLogger", "Autocast", "check_finite",
           "check_finite_state", "HEALTH_CHECK_EVERY"]

#: Training steps between two divergence checks of the trainable tensors and logits (one device sync each).
HEALTH_CHECK_EVERY = 50


class PredictionCollector(SupervisedPlugin):
    """Top-1 predictions and targets of the last evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.predictions: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.expected_width: int | None = None

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self.predictions, self.targets = [], []

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        logits = strategy.mb_output
        if self.expected_width is not None and logits.shape[1] != self.expected_width:
            raise RuntimeError(
                f"{type(strategy).__name__} scored {logits.shape[1]} classes, not the {self.expected_width} seen so far"
            )
        self.predictions.append(logits.argmax(dim=1).cpu())
        self.targets.append(strategy.mb_y.cpu())

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.predictions), torch.cat(self.targets)


def check_finite(loss: torch.Tensor, strategy, what: str = "loss") -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        clock = strategy.clock
        raise NonFiniteLossError(
            f"non-finite {what} ({value}) at experience {strategy.experience_index}, "
            f"epoch {clock.train_exp_epochs}, step {clock.train_epoch_iterations}"
        )


def check_finite_losses(strategy, named: list[tuple[str, torch.Tensor]]) -> None:
    """``check_finite`` of several losses with one device sync (the first non-finite one is named)."""
    values = torch.stack([loss.detach().float().reshape(()) for _, loss in named]).tolist()
    for (what, _), value in zip(named, values):
        if not math.isfinite(value):
            check_finite(torch.tensor(value), strategy, what)


def _where(strategy) -> str:
    clock = strategy.clock
    return (f"experience {strategy.experience_index}, epoch {clock.train_exp_epochs}, "
            f"step {clock.train_epoch_iterations} (iteration {clock.train_iterations})")


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")


def _first_non_finite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity; one device sync when all are finite."""
    floats = [(name, t.detach()) for name, t in named if t.is_floating_point() and t.numel()]
    if not floats:
        return None
    flags = torch.stack([torch.isfinite(t).all().to(floats[0][1].device) for _, t in floats])
    if bool(flags.all()):
        return None
    return next(name for (name, _), ok in zip(floats, flags.tolist()) if not ok)


def check_finite_state(state: Any, *, where: str) -> None:
    """Refuse to record or checkpoint a learned state (adapters, prompts, heads, prototypes) holding
    NaN or infinity: the run stops like on a non-finite loss, and the last good checkpoint stays."""
    bad = _first_non_finite(list(_tensors(state)))
    if bad is not None:
        raise DivergenceError(f"training diverged: non-finite values in {bad} {where}")


def _bad_logits(logits: torch.Tensor) -> torch.Tensor:
    """NaN or +inf; -inf is how some methods mask classes out, so it is allowed."""
    return torch.isnan(logits).any() | torch.isposinf(logits).any()


class RunGuard(SupervisedPlugin):
    """Stops on a NaN/inf loss before it updates anything, and turns SIGINT/SIGTERM into a clean
    stop after the current step."""

    def __init__(self, *, stop_at_once: bool = False) -> None:
        super().__init__()
        self.signal_received: int | None = None
        #: Before training starts (W&B start, data, model) there is no step to finish: stop at once.
        self.stop_at_once = stop_at_once
        self._previous: dict[int, Callable] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signal_received is not None or self.stop_at_once:  # a second signal, or nothing to finish: stop now
            self.signal_received = self.signal_received or signum
            raise KeyboardInterrupt
        self.signal_received = signum
        print(f"\nsignal {signum}: finishing the current step, then stopping", file=sys.stderr)

    def raise_if_signalled(self) -> None:
        if self.signal_received is not None:
            raise RunInterrupted(self.signal_received)

    def before_backward(self, strategy, **kwargs) -> None:
        check_finite(strategy.loss, strategy)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.raise_if_signalled()

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        self.raise_if_signalled()


class HealthCheck(SupervisedPlugin):
    """Stops a diverged run: non-finite trainable parameters or logits every ``every`` training steps
    and at the end of each epoch, non-finite evaluation logits at the end of each evaluation. Checks
    are batched into one device sync each, never one per step (the loss check has its own)."""

    def __init__(self, every: int = HEALTH_CHECK_EVERY) -> None:
        super().__init__()
        self.every = every
        self.trained_experience: int | None = None
        self._eval_bad: torch.Tensor | None = None

    def _check_training(self, strategy) -> None:
        named = [(f"parameter {name}", p) for name, p in strategy.model.named_parameters() if p.requires_grad]
        if isinstance(getattr(strategy, "mb_output", None), torch.Tensor):
            logits = strategy.mb_output.detach()
            named.append(("the training logits", torch.where(torch.isneginf(logits), 0.0, logits)))
        bad = _first_non_finite(named)
        if bad is not None:
            raise DivergenceError(f"training diverged: non-finite values in {bad} at {_where(strategy)}")

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if strategy.clock.train_iterations % self.every == 0:
            self._check_training(strategy)

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self._check_training(strategy)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.trained_experience = strategy.experience_index

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._eval_bad = None

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        bad = _bad_logits(strategy.mb_output.detach())  # no sync: accumulated on the device
        self._eval_bad = bad if self._eval_bad is None else self._eval_bad | bad

    def after_eval_exp(self, strategy, **kwargs) -> None:
        if self._eval_bad is not None and bool(self._eval_bad):
            raise DivergenceError(
                f"training diverged: non-finite values in the evaluation logits (NaN or +inf) after training "
                f"experience {self.trained_experience}"
            )


def _clock_text(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Phase:
    """Steps, images and time of one training or evaluation pass over an experience."""

    def __init__(self, total: int, now: float) -> None:
        self.total, self.steps, self.images = total, 0, 0
        self.start = self.last_line = now

    def rates(self, now: float) -> tuple[float, float, float]:
        """Steps/s, images/s and the seconds left at the current rate."""
        elapsed = max(now - self.start, 1e-9)
        steps_per_s = self.steps / elapsed
        left = (self.total - self.steps) / steps_per_s if steps_per_s > 0 else float("nan")
        return steps_per_s, self.images / elapsed, left


class ProgressBar(SupervisedPlugin):
    """Progress of training and evaluation, experiences counted from 1 like the run's summary lines.

    On a terminal (stderr): a tqdm bar per pass. When stdout is not a terminal (a log file, a SLURM
    job): one line every ``every_s`` seconds with steps, rates, the loss and the ETA of the pass, so
    logs show a run is alive and how long it needs. Both when only stdout is redirected.
    """

    def __init__(self, n_experiences: int | None = None, label: str = "", every_s: float = 60.0,
                 lines_to=None, clock: Callable[[], float] | None = None) -> None:
        import time

        super().__init__()
        self.n_experiences = n_experiences
        self.label = label
        self.every_s = every_s
        self._lines_to = lines_to  # None: stdout when it is not a terminal, else no lines
        self._clock = clock or time.monotonic
        self.bar = None
        self._phase: _Phase | None = None
        self._experience = 0  # index of the experience trained last (evaluation follows it)

    # -- output ---------------------------------------------------------------------------------
    def _stream(self):
        if self._lines_to is not None:
            return self._lines_to
        return None if _is_terminal(sys.stdout) else sys.stdout

    def _prefix(self, kind: str) -> str:
        of = f"/{self.n_experiences}" if self.n_experiences else ""
        return f"[{self.label + ' ' if self.label else ''}exp {self._experience + 1}{of} {kind}]"

    def _start(self, kind: str, total: int) -> None:
        self._close()
        self._phase = _Phase(total, self._clock())
        self.bar = tqdm(total=total, desc=self._prefix(kind)[1:-1], unit="step", leave=False, disable=None,
                        dynamic_ncols=True, file=sys.stderr)

    def _step(self, strategy, kind: str, detail: str = "") -> None:
        phase = self._phase
        if phase is None:
            return
        phase.steps += 1
        phase.images += len(strategy.mb_y) if getattr(strategy, "mb_y", None) is not None else 0
        if self.bar is not None:
            self.bar.update(1)
        stream = self._stream()
        now = self._clock()
        if stream is None or now - phase.last_line < self.every_s:
            return
        phase.last_line = now
        steps_per_s, images_per_s, left = phase.rates(now)
        percent = 100 * phase.steps / phase.total if phase.total else float("nan")
        loss = ""
        if kind == "train" and getattr(strategy, "loss", None) is not None:
            loss = f", loss {float(strategy.loss.detach()):.4f}"
        print(f"{self._prefix(kind)} {detail}step {phase.steps}/{phase.total} ({percent:.0f}%), "
              f"{steps_per_s:.2f} steps/s, {images_per_s:.0f} img/s{loss}, "
              f"elapsed {_clock_text(now - phase.start)}, ETA {_clock_text(left)}", file=stream, flush=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self._phase = None, None

    # -- training -------------------------------------------------------------------------------
    def before_training_exp(self, strategy, **kwargs) -> None:
        self._experience = strategy.experience.current_experience

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if self._phase is None:
            self._start("train", strategy.train_epochs * len(strategy.dataloader))
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {strategy.clock.train_exp_epochs + 1}/{strategy.train_epochs}")

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self._step(strategy, "train", f"epoch {strategy.clock.train_exp_epochs + 1}/{strategy.train_epochs}, ")

    def after_training_exp(self, strategy, **kwargs) -> None:
        self._close()

    # -- evaluation -----------------------------------------------------------------------------
    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._start("eval", len(strategy.dataloader))

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        self._step(strategy, "eval")

    def after_eval_exp(self, strategy, **kwargs) -> None:
        self._close()


class LossLogger(SupervisedPlugin):
    """Training loss and learning rate to W&B every ``every`` steps (one device sync per log)."""

    def __init__(self, tracker, every: int) -> None:
        super().__init__()
        self.tracker = tracker
        self.every = every

    def after_training_iteration(self, strategy, **kwargs) -> None:
        step = strategy.clock.train_iterations
        if step % self.every == 0 and self.tracker.run is not None:
            self.tracker.log({
                "train/loss": float(strategy.loss.detach()),
                **{f"train/{name}": float(value) for name, value in strategy.loss_terms.items()},
                "train/lr": strategy.optimizer.param_groups[0]["lr"],
                "train/experience": strategy.experience_index,
                "train/iteration": step,
            })


class Autocast(SupervisedPlugin):
    """The strategy's autocast context (``--amp bf16``) around every forward pass; losses, the
    backward pass and the optimizer steps stay outside it, in float32 (Avalanche's loop has no AMP)."""

    def __init__(self) -> None:
        super().__init__()
        self._context = None

    def _enter(self, strategy) -> None:
        self._context = strategy.autocast()
        self._context.__enter__()

    def _exit(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def before_forward(self, strategy, **kwargs) -> None:
        self._enter(strategy)

    def after_forward(self, strategy, **kwargs) -> None:
        self._exit()

    def before_eval_forward(self, strategy, **kwargs) -> None:
        self._enter(strategy)

    def after_eval_forward(self, strategy, **kwargs) -> None:
        self._exit()
