"""The Avalanche template every strategy of the suite subclasses.

Strategies are built like Avalanche's own (``Naive``, ``LearningToPrompt``): keyword arguments for
the model, the method's hyperparameters, the optimiser, and Avalanche's ``train_mb_size``,
``train_epochs``, ``eval_mb_size``, ``device``, ``plugins``, ``evaluator`` and ``eval_every``.
``from_config`` is the bridge from the suite's typed configs (``sweeps/run.py``).

What the template adds to ``SupervisedTemplate``, and why:

- **classes come from the experiences.** Each training experience's new classes get the next
  output columns (in sorted label order), so any label set works: non-contiguous labels, a
  ``class_order`` without renumbering, or the suite's remapped streams (where column = label).
  Evaluation scores every class trained so far and returns logits indexed by label, unseen
  labels at ``-inf``: nothing reads the identity of the experience being evaluated;
- ``make_optimizer`` builds a fresh optimiser and per-epoch schedule each experience over the
  trainable parameters only (Avalanche's default keeps one optimiser holding every parameter);
- plugins that add parameters implement ``adapt_model(strategy)``. It runs inside
  ``model_adaptation``, after Avalanche's dynamic-module adaptation and before the method's own
  ``adapt_model`` and the optimiser; a plugin's ``before_training_exp`` runs too late for that;
- plain data loaders: shuffled training batches from the global RNG, and evaluation batches
  shuffled by a generator of their own, so test batches mix every seen class and evaluation
  consumes none of the training randomness; ``num_workers``, ``collate_fn``, ``pin_memory``
  and ``persistent_workers`` passed to ``train``/``eval`` are honoured;
- the caller's ViT is copied, never changed (``copy_model=False`` hands it over instead);
- ``learned_state``/``load_learned_state`` for checkpoints: everything but the frozen backbone.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import trigger_plugins
from torch import nn
from torch.utils.data import DataLoader

from cl_bench.errors import StrategyArgumentError
from cl_bench.training.plugins import Autocast

__all__ = ["CLBenchTemplate", "prepare_vit", "AMP_CHOICES"]

AMP_CHOICES = ("none", "bf16")


def _placeholder_optimizer() -> torch.optim.Optimizer:
    """Avalanche wants an optimizer at construction; the real one is built per experience."""
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)


def _is_stock_vit_block(block: nn.Module) -> bool:
    from timm.layers import Attention, Mlp
    from timm.models.vision_transformer import Block

    return (type(block) is Block and type(block.attn) is Attention and type(block.attn.qkv) is nn.Linear
            and isinstance(block.mlp, Mlp))


def prepare_vit(model: Any, *, copy_model: bool = True) -> nn.Module:
    """The frozen timm ``VisionTransformer`` a strategy builds on, with the CLS token after the
    final LayerNorm as its output.

    ``model`` is a ViT or a backbone tag of the suite (``cl_bench.backbones``). A ViT is deep-copied
    unless ``copy_model=False``, so the caller's model never carries our adapters or prompts; one
    that already carries another method's wrappers (or is not a stock timm ViT) is refused.
    """
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, str):
        from cl_bench.backbones import load_vit

        return _mark_pretrained(load_vit(model).requires_grad_(False))
    if not isinstance(model, VisionTransformer):
        raise StrategyArgumentError(
            f"argument 'model' must be a timm VisionTransformer or a backbone tag; got {type(model).__name__}",
            key="model")
    altered = [i for i, block in enumerate(model.blocks) if not _is_stock_vit_block(block)]
    if altered:
        raise StrategyArgumentError(
            f"argument 'model': blocks {altered[:4]} of this ViT are not stock timm blocks (another method's "
            "adapters or prompts?); pass the plain pretrained ViT", key="model")
    if getattr(model, "global_pool", "token") != "token" or not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):
        raise StrategyArgumentError(
            "argument 'model': the methods use the CLS token after the final LayerNorm; build the ViT with "
            "global_pool='token' (timm's default for ViT-B/16)", key="model")
    vit = copy.deepcopy(model) if copy_model else model
    if vit.num_classes != 0:
        vit.reset_classifier(0)  # features, not the pretraining head's logits
    return _mark_pretrained(vit.requires_grad_(False))


def _mark_pretrained(vit: nn.Module) -> nn.Module:
    """Remember which tensors are the pretrained ones before a method injects adapters or prompts
    into the ViT's own modules: checkpoints leave out exactly these (``CLBenchTemplate``)."""
    vit.pretrained_tensor_ids = frozenset(id(t) for t in [*vit.parameters(), *vit.buffers()])
    return vit


class CLBenchTemplate(SupervisedTemplate):
    #: CODA-Prompt's reference drops the last incomplete training batch; the others keep it.
    drop_last_train_batch: bool = False
    #: Training logits cover only the current experience's classes (a per-task head) or all columns.
    task_head_in_training: bool = True
    #: The method's typed config class (``from_config`` reads its keys as constructor arguments).
    config_cls: type | None = None

    def __init__(self, *, model: nn.Module, backbone: nn.Module, lr: float, weight_decay: float = 0.0,
                 amp: str = "none", train_mb_size: int = 32, train_epochs: int = 1, eval_mb_size: int = 128,
                 device: str | torch.device | None = None, plugins: Sequence[Any] | None = None,
                 evaluator: Any = default_evaluator, eval_every: int = -1, **base_kwargs: Any) -> None:
        """``model``: the method's network, built around ``backbone`` (the frozen ViT from ``prepare_vit``,
        whose pretrained tensors checkpoints leave out, or a module holding just those tensors).
        Subclasses pass everything else through from their own keywords."""
        if amp not in AMP_CHOICES:
            raise StrategyArgumentError(f"argument 'amp' must be one of {', '.join(AMP_CHOICES)}; got {amp!r}", key="amp")
        for name, value in (("train_mb_size", train_mb_size), ("eval_mb_size", eval_mb_size)):
            if not isinstance(value, int) or value < 1:
                raise StrategyArgumentError(f"argument '{name}' must be a positive integer; got {value!r}", key=name)
        if not isinstance(train_epochs, int) or train_epochs < 0:
            raise StrategyArgumentError(f"argument 'train_epochs' must be an integer >= 0; got {train_epochs!r}", key="train_epochs")
        self.lr = lr
        self.weight_decay = weight_decay
        self.amp = amp
        self.scheduler = None
        self.trainable_count = 0
        self.trainable_head_count = 0
        #: Named loss terms of the last iteration (detached) that plugins or the method add; logged.
        self.loss_terms: dict[str, torch.Tensor] = {}
        self.eval_shuffle_seed = 0
        #: Labels in output-column order, and where each task's columns start (plus the total).
        self.class_labels: list[int] = []
        self.task_offsets: list[int] = [0]
        self._column_lookup = torch.full((0,), -1, dtype=torch.long)
        self.mb_columns: torch.Tensor | None = None
        self.num_workers = 0
        plugins = list(plugins or [])
        if amp != "none":
            plugins.append(Autocast())
        with warnings.catch_warnings():  # evaluator=None: the runner keeps metrics in its own record
            warnings.filterwarnings("ignore", message="No loggers specified")
            super().__init__(
                model=model,
                optimizer=_placeholder_optimizer(),
                criterion=nn.CrossEntropyLoss(),
                train_mb_size=train_mb_size,
                train_epochs=train_epochs,
                eval_mb_size=eval_mb_size,
                device=device if device is not None else "cpu",
                plugins=plugins,
                evaluator=evaluator,
                eval_every=eval_every,
                **base_kwargs,
            )
        # The pretrained tensors as ``prepare_vit`` found them: by now the method's adapters may live inside the ViT.
        backbone_ids = getattr(backbone, "pretrained_tensor_ids", None)
        if backbone_ids is None:
            backbone_ids = {id(t) for t in [*backbone.parameters(), *backbone.buffers()]}
        # By name, fixed now: moving the model to a device replaces tensors, names stay.
        self._backbone_names = {
            name for name, t in [*model.named_parameters(), *model.named_buffers()] if id(t) in backbone_ids
        }

    # -- the runner's bridge ------------------------------------------------------------------
    @classmethod
    def config_arguments(cls, config) -> dict[str, Any]:
        """Constructor keywords from a resolved suite config: the method's keys, the optimiser's,
        and what the method needs to know of the stream (``stream_arguments``)."""
        method = dataclasses.asdict(config.method) if dataclasses.is_dataclass(config.method) else {}
        sizes = config.classes_per_experience()
        return {**method, "lr": config.run.lr, "weight_decay": config.run.weight_decay, "amp": config.run.amp,
                **cls.stream_arguments(n_classes=sum(sizes), n_experiences=len(sizes))}

    @classmethod
    def stream_arguments(cls, *, n_classes: int, n_experiences: int) -> dict[str, Any]:
        """The facts of the whole stream a method fixes at construction (e.g. L2P's head size), as
        its constructor keywords; none for most methods."""
        return {}

    @classmethod
    def from_config(cls, config, *, model: nn.Module, device, plugins: Sequence[Any] = (), evaluator: Any = None):
        """The strategy for a resolved suite config, on ``model`` (the run's own ViT, handed over:
        no copy). ``evaluator=None``: no Avalanche metrics, the runner records its own."""
        return cls(model=model, copy_model=False, **cls.config_arguments(config),
                   train_mb_size=config.run.batch_size, train_epochs=config.run.epochs,
                   eval_mb_size=config.run.eval_batch_size, device=device, plugins=list(plugins),
                   evaluator=evaluator)

    # -- where we are in the stream -----------------------------------------------------------
    @property
    def experience_index(self) -> int:
        """The position of the current experience in its stream (for messages and logs)."""
        return self.experience.current_experience

    @property
    def task_index(self) -> int:
        """How many experiences were trained before the one being trained (or the last trained)."""
        return max(len(self.task_offsets) - 2, 0)

    @property
    def known_classes(self) -> int:
        """Columns of the experiences trained before the current one (columns below this are old)."""
        return self.task_offsets[-2] if len(self.task_offsets) > 1 else 0

    @property
    def seen_classes(self) -> int:
        """Columns of every class trained so far, the current experience's included."""
        return self.task_offsets[-1]

    @property
    def task_sizes(self) -> list[int]:
        return [b - a for a, b in zip(self.task_offsets[:-1], self.task_offsets[1:])]

    def columns_of(self, labels: torch.Tensor) -> torch.Tensor:
        """Output columns of ``labels`` (-1 for a class not trained)."""
        lookup = self._column_lookup.to(labels.device)
        inside = (labels >= 0) & (labels < lookup.numel())
        return torch.where(inside, lookup[labels.clamp(0, max(lookup.numel() - 1, 0))], torch.full_like(labels, -1))

    def _register_classes(self, experience) -> None:
        """The experience's classes get the next columns; a class-incremental experience brings
        only new classes (the per-task heads and prototypes of these methods assume it)."""
        classes = sorted(int(c) for c in experience.classes_in_this_experience)
        old = sorted(set(classes) & set(self.class_labels))
        if old:
            raise StrategyArgumentError(
                f"experience {experience.current_experience} holds classes {old[:5]} that were learned in an earlier "
                "experience; these class-incremental strategies need new classes in every experience", key="experience")
        if not classes:
            raise StrategyArgumentError(f"experience {experience.current_experience} has no classes", key="experience")
        self.class_labels.extend(classes)
        self.task_offsets.append(len(self.class_labels))
        self._rebuild_column_lookup()

    def _rebuild_column_lookup(self) -> None:
        lookup = torch.full((max(self.class_labels, default=-1) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(self.class_labels, dtype=torch.long)] = torch.arange(len(self.class_labels))
        self._column_lookup = lookup

    def label_space(self, logits: torch.Tensor, first_column: int = 0) -> torch.Tensor:
        """Logits over columns ``first_column..`` as logits indexed by label (Avalanche's and the
        metrics' convention); labels without a score get ``-inf``. The identity when the columns
        already are the labels (the suite's remapped streams)."""
        labels = self.class_labels[first_column: first_column + logits.shape[1]]
        width = max(self.class_labels) + 1 if self.class_labels else logits.shape[1]
        if first_column == 0 and width == logits.shape[1] and labels == list(range(width)):
            return logits
        logits = logits[:, : len(labels)]  # a head sized for the whole stream: columns not trained yet go
        out = logits.new_full((logits.shape[0], width), float("-inf"))
        out[:, torch.tensor(labels, device=logits.device)] = logits
        return out

    # -- optimizer and schedule ---------------------------------------------------------------
    def build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def build_scheduler(self, optimizer: torch.optim.Optimizer):
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """The classifier head's tensors, counted apart from the adapters or prompts."""
        return []

    def autocast(self):
        """The precision context of forward passes (``amp='bf16'``); plugins that run their own
        forward passes use it too, so every pass of an iteration has the same precision."""
        if self.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def make_optimizer(self, **kwargs) -> None:
        params = self.trainable_parameters()
        self.trainable_count = sum(p.numel() for p in params)
        self.trainable_head_count = sum(p.numel() for p in self.head_parameters() if p.requires_grad)
        self.optimizer = self.build_optimizer(params) if params else _placeholder_optimizer()
        self.scheduler = self.build_scheduler(self.optimizer) if params else None
        self.optimized_param_id = True

    def _after_training_epoch(self, **kwargs) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    # -- model growth -------------------------------------------------------------------------
    def _before_training_exp(self, **kwargs) -> None:
        self._register_classes(self.experience)  # before model_adaptation, which sizes heads from it
        super()._before_training_exp(**kwargs)

    def adapt_model(self) -> None:
        """Method hook: prepare the model for the experience about to be trained."""

    def model_adaptation(self, model: nn.Module | None = None) -> nn.Module:
        model = super().model_adaptation(model)  # Avalanche's dynamic modules, if any
        if self.is_training:
            trigger_plugins(self, "adapt_model")  # plugins grow the structure first,
            self.adapt_model()  # then the method sets its head and trainable set
        return model.to(self.device)

    # -- data ---------------------------------------------------------------------------------
    def _loader_arguments(self, num_workers: int, pin_memory: bool | None, persistent_workers: bool,
                          kwargs: dict[str, Any]) -> dict[str, Any]:
        arguments = {"num_workers": num_workers,
                     "pin_memory": self.device.type == "cuda" if pin_memory is None else pin_memory}
        if num_workers > 0 and persistent_workers:
            arguments["persistent_workers"] = True
        collate = kwargs.get("collate_fn", getattr(self.adapted_dataset, "collate_fn", None))
        if collate is not None:
            arguments["collate_fn"] = collate
        return arguments

    def make_train_dataloader(self, num_workers: int = 0, shuffle: bool = True, pin_memory: bool | None = None,
                              persistent_workers: bool = False, drop_last: bool = False, **kwargs) -> None:
        self.num_workers = num_workers  # the prototype pass over the same data uses as many
        self.dataloader = DataLoader(
            self.adapted_dataset,
            batch_size=self.train_mb_size,
            shuffle=shuffle,
            drop_last=drop_last or self.drop_last_train_batch,
            **self._loader_arguments(num_workers, pin_memory, persistent_workers, kwargs),
        )

    def make_eval_dataloader(self, num_workers: int = 0, shuffle: bool = True, pin_memory: bool | None = None,
                             persistent_workers: bool = False, **kwargs) -> None:
        self.dataloader = DataLoader(
            self.adapted_dataset,
            batch_size=self.eval_mb_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.eval_shuffle_seed),
            **self._loader_arguments(num_workers, pin_memory, persistent_workers, kwargs),
        )

    def _unpack_minibatch(self) -> None:
        super()._unpack_minibatch()
        self.mb_columns = self.columns_of(self.mb_y) if self.is_training else None

    @torch.no_grad()
    def class_means(self, features: Callable[[torch.Tensor], torch.Tensor], experience=None) -> torch.Tensor:
        """Per-class mean of ``features(x)`` over the current task's training images, seen through
        the test transform (prototype methods). Rows follow the task's columns."""
        experience = self.experience if experience is None else experience
        start, n_classes = self.known_classes, self.seen_classes - self.known_classes
        loader = DataLoader(experience.dataset.eval(), batch_size=self.eval_mb_size, shuffle=False,
                            num_workers=self.num_workers)
        was_training = self.model.training
        self.model.eval()
        sums, counts = None, torch.zeros(n_classes, device=self.device)
        for x, y, *_ in loader:
            f = features(x.to(self.device))
            local = self.columns_of(y.to(self.device).long()) - start
            if sums is None:
                sums = torch.zeros((n_classes,) + tuple(f.shape[1:]), device=self.device, dtype=f.dtype)
            sums.index_add_(0, local, f)
            counts += torch.bincount(local, minlength=n_classes)
        self.model.train(was_training)
        return sums / counts.view((-1,) + (1,) * (sums.dim() - 1))

    # -- loss and outputs ---------------------------------------------------------------------
    def criterion(self) -> torch.Tensor:
        if not self.is_training:  # evaluation needs predictions only
            return self._make_empty_loss()
        first = self.known_classes if self.task_head_in_training else 0  # a per-task head scores its own classes
        return F.cross_entropy(self.mb_output, self.mb_columns - first)

    def _after_eval_forward(self, **kwargs) -> None:
        self.mb_output = self.label_space(self.mb_output)  # before plugins and metrics read it
        super()._after_eval_forward(**kwargs)

    def _after_training_iteration(self, **kwargs) -> None:
        # Avalanche's training metrics compare mb_output with the labels: give them label space.
        first = self.known_classes if self.task_head_in_training else 0
        self.mb_output = self.label_space(self.mb_output.detach(), first)
        super()._after_training_iteration(**kwargs)

    # -- checkpoints --------------------------------------------------------------------------
    def experience_report(self) -> dict[str, Any]:
        """Method-specific facts about the experience just trained, kept in the run record."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Plain values the method needs to rebuild its structure (e.g. how many task branches)."""
        return {}

    def restore_structure(self, extra: dict[str, Any]) -> None:
        """Grow the model to the structure described by ``extra_state`` before tensors load."""

    def learned_state(self) -> dict[str, Any]:
        tensors = {name: t for name, t in self.model.state_dict().items() if name not in self._backbone_names}
        classes = {"class_labels": list(self.class_labels), "task_offsets": list(self.task_offsets)}
        return {"tensors": tensors, "extra": self.extra_state(), "classes": classes}

    def load_learned_state(self, state: dict[str, Any]) -> None:
        from cl_bench.errors import CheckpointError

        if "classes" not in state:
            raise CheckpointError("the checkpoint predates per-experience class bookkeeping (cl-bench < 0.2); "
                                  "start the run again with another --run_name")
        self.class_labels = []
        self.task_offsets = [0]
        labels = state["classes"]["class_labels"]
        for start, stop in zip(state["classes"]["task_offsets"][:-1], state["classes"]["task_offsets"][1:]):
            self.class_labels.extend(labels[start:stop])
            self.task_offsets.append(stop)
        self._rebuild_column_lookup()
        self.restore_structure(state["extra"])
        missing, unexpected = self.model.load_state_dict(state["tensors"], strict=False)
        learned_missing = [name for name in missing if name not in self._backbone_names]
        if learned_missing or unexpected:
            raise RuntimeError(f"checkpoint does not fit the model: missing {learned_missing[:5]}, unexpected {unexpected[:5]}")

    def stored_parameters(self) -> int:
        """Numbers kept beyond the frozen backbone (adapters, prompts, heads, prototypes, ...)."""
        return sum(t.numel() for t in self.learned_state()["tensors"].values())
