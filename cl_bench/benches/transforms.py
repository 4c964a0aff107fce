"""Input pipelines. None of them normalises: inputs stay in [0, 1], as in the reference code
(PILOT/EASE/CL-LoRA ``build_transform``), although timm's configs say mean = std = 0.5."""

from __future__ import annotations

import torch
from torchvision import transforms as T
from torchvision.transforms import v2

__all__ = ["reference_transforms", "coda_transforms", "grey_transforms", "PAPER_TRANSFORMS"]

#: The reference crop keeps 5-100% of the image area (PILOT ``build_transform``).
REFERENCE_CROP_SCALE = (0.05, 1.0)
#: At 28 px a 5% crop is a few pixels, so the grey benches keep at least half of the image.
GREY_CROP_SCALE = (0.5, 1.0)


def reference_transforms(size: int = 224, resize: int = 256) -> tuple[T.Compose, T.Compose]:
    train = T.Compose([
        T.RandomResizedCrop(size, scale=REFERENCE_CROP_SCALE, ratio=(3 / 4, 4 / 3)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
    ])
    test = T.Compose([
        T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
    ])
    return train, test


def coda_transforms(dataset: str, size: int = 224, resize: int = 256) -> tuple[T.Compose, T.Compose]:
    """CODA-Prompt's own pipeline (official ``dataloaders/utils.py``): default crop scale; CIFAR
    test images are only resized, ImageNet-R ones resized and centre-cropped."""
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor()])
    if dataset == "cifar":
        test = T.Compose([T.Resize((size, size)), T.ToTensor()])
    else:
        test = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor()])
    return train, test


def _grey_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1)


def grey_transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """For 1x28x28 uint8 tensors: scale to [0, 1], crop (train) or resize (test), repeat to RGB."""
    to_rgb = v2.Lambda(_grey_to_rgb)
    to_float = v2.ToDtype(torch.float32, scale=True)
    train = v2.Compose([to_float, v2.RandomResizedCrop(size, scale=GREY_CROP_SCALE, antialias=True), to_rgb])
    test = v2.Compose([to_float, v2.Resize(size, antialias=True), to_rgb] if size != 28 else [to_float, to_rgb])
    return train, test


PAPER_TRANSFORMS = {"reference": reference_transforms, "coda": coda_transforms}
