"""The paper benches: CIFAR-100 (torchvision files) and ImageNet-R (folders of JPEGs)."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import default_loader
from torchvision.datasets.utils import check_integrity, extract_archive

from cl_bench.benches import Cifar100Config, ImageNetRConfig, default_data_root
from cl_bench.benches.transforms import PAPER_TRANSFORMS
from cl_bench.benches.types import RawBench
from cl_bench.errors import DataMissingError

__all__ = ["load_cifar100", "load_imagenet_r", "ImageList", "IMAGENET_R_MD5", "read_split_file"]

#: md5 of the original imagenet-r.tar (https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar).
IMAGENET_R_MD5 = "a61312130a589d0ca1a8fca1f2bd3337"
DOWNLOAD_TIMEOUT_S = 30.0


def _root(config: Cifar100Config | ImageNetRConfig) -> Path:
    return Path(config.data_root).expanduser() if config.data_root else default_data_root()


def _transforms(config, dataset: str):
    variant = config.run.transform
    if variant == "coda":
        return PAPER_TRANSFORMS["coda"](dataset)
    return PAPER_TRANSFORMS[variant]()


@contextmanager
def bounded_socket_timeout(seconds: float = DOWNLOAD_TIMEOUT_S):
    """torchvision's download opens URLs without a timeout, so the process default is bounded for
    the duration of the download only (never hang on a network that half-answers), then restored."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_cifar100(config) -> RawBench:
    bench: Cifar100Config = config.bench
    root = _root(bench)
    folder = root / "cifar-100-python"
    present = all((folder / name).is_file() for name in ("train", "test", "meta"))
    try:  # files on disk are never replaced by a download: if they fail the check, they are corrupt
        with bounded_socket_timeout():
            train = datasets.CIFAR100(str(root), train=True, download=bench.download and not present)
            test = datasets.CIFAR100(str(root), train=False, download=bench.download and not present)
    except Exception as error:  # URLError offline, RuntimeError for missing or corrupt files
        problem = ("its files fail torchvision's md5 check (corrupt or incomplete); delete them to download again"
                   if present else f"{type(error).__name__}: {error}")
        raise DataMissingError(
            f"CIFAR-100 could not be loaded from {folder} ({problem}); "
            "put the extracted cifar-100-python.tar.gz there (files train, test, meta) or set --data_root / $CL_BENCH_DATA"
        ) from None
    train_tf, eval_tf = _transforms(config, "cifar")
    return RawBench(train, test, list(train.classes), train_tf, eval_tf)


class ImageList(Dataset):
    """JPEG paths with labels; ``targets`` as in ImageFolder (class index = sorted folder name)."""

    def __init__(self, root: Path, paths: list[str], classes: list[str]) -> None:
        index = {name: i for i, name in enumerate(classes)}
        self.root = root
        self.paths = paths
        self.targets = [index[Path(p).parts[0]] for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return default_loader(str(self.root / self.paths[i])), self.targets[i]


def read_split_file(path: Path) -> dict[str, list[str]]:
    """``train <wnid>/<file>`` / ``test <wnid>/<file>`` lines, paths relative to imagenet-r/."""
    split: dict[str, list[str]] = {"train": [], "test": []}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        part, _, rel = line.strip().partition(" ")
        if part not in split or not rel:
            raise DataMissingError(f"{path}:{number}: expected 'train <path>' or 'test <path>', got {line!r}")
        split[part].append(rel)
    return split


def load_imagenet_r(config) -> RawBench:
    bench: ImageNetRConfig = config.bench
    root = _root(bench)
    folder = root / "imagenet-r"
    train_tf, eval_tf = _transforms(config, "imagenet_r")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train = datasets.ImageFolder(str(folder / "train"))
        test = datasets.ImageFolder(str(folder / "test"))
        if train.classes != test.classes or len(train.classes) != 200:
            raise DataMissingError(f"{folder}: train/ and test/ must hold the same 200 class folders")
        return RawBench(train, test, list(train.classes), train_tf, eval_tf)

    tar = root / "imagenet-r.tar"
    if not folder.is_dir() and tar.is_file():
        if not check_integrity(str(tar), IMAGENET_R_MD5):
            raise DataMissingError(f"{tar}: md5 differs from {IMAGENET_R_MD5}; the archive is corrupt or another file")
        extract_archive(str(tar), str(root))
    if not bench.split_file:
        raise DataMissingError(
            f"{folder} holds the original ImageNet-R layout; give --split_file (see sweeps/make_imagenet_r_split.py) "
            "or use the pre-split train/ and test/ folders"
        )
    split = read_split_file(Path(bench.split_file).expanduser())
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    missing = [p for p in split["train"][:1] + split["test"][:1] if not (folder / p).is_file()]
    if missing or len(classes) != 200:
        raise DataMissingError(f"{folder} does not match the split file {bench.split_file} (first missing: {missing[:1]})")
    return RawBench(ImageList(folder, split["train"], classes), ImageList(folder, split["test"], classes), classes, train_tf, eval_tf)
