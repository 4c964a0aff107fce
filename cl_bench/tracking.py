"""W&B tracking that can never stop a run.

Online when an API key and a reachable server exist (or a sweep agent started us), offline
otherwise, so runs can be uploaded later with ``wandb sync``. Any W&B failure, at start or
mid-run, prints one warning and turns tracking off; the run record on disk stays complete.
"""

from __future__ import annotations

import netrc
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["WandbTracker", "choose_wandb_mode", "in_sweep_agent", "exit_now_if_start_abandoned", "JOB_TYPES",
           "RUN_RECORD_ARTIFACT", "artifact_name"]

_PROBE_TIMEOUT_S = 3.0
#: What a W&B run is, as its ``job_type``: an experiment, the efficiency benchmark, or backbone pretraining.
JOB_TYPES = ("train", "efficiency", "pretrain")
#: Artifact type of the run record with its figures (the checkpoint is a ``model`` artifact).
RUN_RECORD_ARTIFACT = "run-record"


def artifact_name(kind: str, run_name: str) -> str:
    """A W&B artifact name (letters, digits, ``-``, ``_``, ``.``) for one run's record or checkpoint."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{kind}-{run_name}")


def in_sweep_agent() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(_base_url()).hostname or ""
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _server_reachable(timeout: float) -> bool:
    url = urlparse(_base_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_wandb_mode(requested: str, timeout: float = _PROBE_TIMEOUT_S) -> tuple[str, str]:
    """The mode to start W&B in, and why."""
    if requested != "auto":
        return requested, "requested"
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return ("disabled" if env_mode == "dryrun" else env_mode), "WANDB_MODE"
    if in_sweep_agent():
        return "online", "sweep agent"
    if not _has_api_key():
        return "offline", "no API key"
    if not _server_reachable(min(timeout, _PROBE_TIMEOUT_S)):
        return "offline", f"{_base_url()} unreachable"
    return "online", "API key and server"


#: W&B starts that failed or were interrupted in this process. W&B's exit handlers then wait for the
#: abandoned start (25-38 s against a server that never answers); entry points skip them.
_abandoned_starts: list[str] = []


def exit_now_if_start_abandoned(exit_code: int) -> None:
    """End the process at once, skipping W&B's exit handlers, when a W&B start was abandoned. Run
    records and any offline W&B run are already complete on disk by then; for entry points only."""
    if _abandoned_starts:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def _warn(message: str) -> None:
    print(f"warning: W&B {message}; training continues and the run record on disk stays complete", file=sys.stderr)


class WandbTracker:
    """One W&B run per experiment; every call is guarded."""

    def __init__(self, config, run_dir: Path, *, run_id: str | None, job_type: str = "train") -> None:
        if job_type not in JOB_TYPES:
            raise ValueError(f"job_type must be one of {', '.join(JOB_TYPES)}; got {job_type!r}")
        self.config = config
        self.run_dir = run_dir
        self.requested_id = run_id
        self.job_type = job_type
        self.run = None
        self.mode = "disabled"
        self.reason = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        run_cfg = self.config.run
        mode, self.reason = choose_wandb_mode(run_cfg.wandb_mode, run_cfg.wandb_timeout)
        if mode == "disabled":
            return self.info()
        try:
            import wandb
        except Exception as error:  # a broken install must not stop training
            _warn(f"could not be imported ({error})")
            return self.info()
        for attempt in ([mode, "offline"] if mode == "online" else [mode]):
            try:
                self.run = wandb.init(**self._init_kwargs(attempt, wandb))
                self.mode = attempt
                self._define_axes()
                break
            except Exception as error:
                _abandoned_starts.append(attempt)
                _warn(f"{attempt} start failed ({type(error).__name__}: {str(error)[:200]})")
                self.reason = f"{attempt} start failed"
            except BaseException:  # Ctrl-C while W&B starts
                _abandoned_starts.append(attempt)
                raise
        return self.info()

    def _init_kwargs(self, mode: str, wandb) -> dict[str, Any]:
        run_cfg = self.config.run
        kwargs: dict[str, Any] = dict(
            mode=mode,
            dir=str(self.run_dir),
            config=self.config.flat(),
            group=self.config.group,
            job_type=self.job_type,
            tags=[run_cfg.strategy, run_cfg.bench],
            resume="allow",
            reinit="create_new",  # never hand back a run an earlier experiment in this process left open
            settings=wandb.Settings(init_timeout=max(run_cfg.wandb_timeout, 1.0), console="off", silent=True),
        )
        if not in_sweep_agent():  # an agent's run, project and id come from its environment
            kwargs.update(project=run_cfg.wandb_project, entity=run_cfg.wandb_entity or None,
                          name=self.run_dir.name, id=self.requested_id)
        return kwargs

    def _define_axes(self) -> None:
        """Per-experience metrics plot against ``experience``, losses against ``train/iteration``;
        no explicit ``step`` is ever passed, so the two never conflict."""
        self.run.define_metric("experience")
        self.run.define_metric("eval/*", step_metric="experience")
        self.run.define_metric("efficiency/*", step_metric="experience")
        self.run.define_metric("train/iteration")
        self.run.define_metric("train/*", step_metric="train/iteration")

    def info(self) -> dict[str, Any]:
        run = self.run
        return {
            "mode": self.mode if run is not None else "disabled",
            "reason": self.reason,
            "run_id": getattr(run, "id", None),
            "dir": getattr(run, "dir", None),
            "url": getattr(run, "url", None) if self.mode == "online" else None,
            "sweep_id": os.environ.get("WANDB_SWEEP_ID"),
        }

    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        if self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            _warn(f"{what} failed ({type(error).__name__}: {str(error)[:200]}); tracking is off from here")
            self.run = None
            return None

    # -- logging ------------------------------------------------------------------------------
    def log(self, data: dict[str, Any]) -> None:
        self._guard("log", lambda: self.run.log(data))

    def update_config(self, data: dict[str, Any]) -> None:
        self._guard("config update", lambda: self.run.config.update(data, allow_val_change=True))

    def log_summary(self, data: dict[str, Any]) -> None:
        def write():
            for key, value in data.items():
                self.run.summary[key] = value
        self._guard("summary", write)

    def log_accuracy_matrix(self, R: list[list[float]]) -> None:
        """``R`` as one W&B table and one heatmap, logged once when the run ends (the per-experience
        numbers are in ``eval/*`` already)."""
        def write():
            import wandb

            from cl_bench.plots import accuracy_matrix_figure

            T = len(R)
            columns = ["after_experience"] + [f"exp_{i}" for i in range(T)]
            rows = [[t] + [R[t][i] if i <= t else None for i in range(T)] for t in range(T)]
            run_cfg = self.config.run
            figure = accuracy_matrix_figure(R, title=f"{run_cfg.strategy} on {run_cfg.bench}, seed {run_cfg.seed}: "
                                                     f"accuracy (%) after experience {T}")
            self.run.log({"experience": T - 1, "eval/accuracy_matrix": wandb.Table(columns=columns, data=rows),
                          "eval/accuracy_matrix_heatmap": wandb.Image(figure)})
        self._guard("accuracy matrix", write)

    def log_run_record(self, record_file: Path, data: dict[str, Any], checkpoint: Path | None = None) -> None:
        """``record.json`` with its accuracy-matrix heatmap and curves as one ``run-record`` artifact,
        and the checkpoint as a ``model`` artifact when one is given."""
        def write():
            import wandb

            from cl_bench.plots import accuracy_matrix_figure, figure_png, run_curves_figure
            from cl_bench.metrics import chance_curve

            run_name = data.get("run_name") or self.run_dir.name
            metadata = {k: data.get(k) for k in ("strategy", "bench", "seed", "status", "config_digest", "group")}
            artifact = wandb.Artifact(artifact_name("record", run_name), type=RUN_RECORD_ARTIFACT, metadata=metadata)
            artifact.add_file(str(record_file), name="record.json")
            with tempfile.TemporaryDirectory() as tmp:  # add_file copies ("mutable" policy)
                steps = data.get("steps") or []
                figures = {
                    "accuracy_matrix.png": accuracy_matrix_figure(data["R"], title=run_name),
                    "curves.png": run_curves_figure(
                        accuracy=[s["accuracy"] for s in steps], old=[s.get("old_accuracy") for s in steps],
                        new=[s.get("new_accuracy") for s in steps],
                        chance=chance_curve(data["classes_per_experience"])[: len(steps)], title=run_name),
                }
                for name, figure in figures.items():
                    path = Path(tmp) / name
                    path.write_bytes(figure_png(figure))
                    artifact.add_file(str(path), name=f"figures/{name}")
                self.run.log_artifact(artifact)
            if checkpoint is not None:
                model = wandb.Artifact(artifact_name("checkpoint", run_name), type="model", metadata=metadata)
                model.add_file(str(checkpoint), name=checkpoint.name)
                self.run.log_artifact(model)
        self._guard("run-record artifact", write)

    def finish(self, exit_code: int = 0) -> None:
        self._guard("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None
