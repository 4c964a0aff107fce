"""Write an ImageNet-R split file for `--split_file`: python sweeps/make_imagenet_r_split.py SOURCE OUT.

SOURCE is either PILOT's pre-split `imagenet-r/` (with `train/` and `test/`): the file lists that
split exactly, so users who only have the original `imagenet-r.tar` train and test on the same
images; or the extracted original `imagenet-r/` (one folder per class): then `--train_fraction`
of every class, chosen by `--seed`, is training data. That second split is not PILOT's; the file
says so in its header.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from cl_bench.cli import ArgumentParser  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
N_CLASSES = 200


def _images(class_dir: Path) -> list[str]:
    return sorted(p.name for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def split_from_presplit(folder: Path) -> dict[str, list[str]]:
    split = {part: [f"{d.name}/{name}" for d in _class_dirs(folder / part) for name in _images(d)]
             for part in ("train", "test")}
    overlap = set(split["train"]) & set(split["test"])
    if overlap:
        raise ValueError(f"{len(overlap)} images are in both train/ and test/ (first: {sorted(overlap)[0]})")
    return split


def split_from_original(folder: Path, train_fraction: float, seed: int) -> dict[str, list[str]]:
    rng = np.random.RandomState(seed)
    split: dict[str, list[str]] = {"train": [], "test": []}
    for class_dir in _class_dirs(folder):
        names = _images(class_dir)
        order = rng.permutation(len(names))
        n_train = int(round(train_fraction * len(names)))
        split["train"] += [f"{class_dir.name}/{names[i]}" for i in sorted(order[:n_train])]
        split["test"] += [f"{class_dir.name}/{names[i]}" for i in sorted(order[n_train:])]
    return split


def write_split(split: dict[str, list[str]], out: Path, header: str) -> None:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{part} {rel}" for part in ("train", "test") for rel in split[part]]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sweeps/make_imagenet_r_split.py", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="imagenet-r/ folder: PILOT's pre-split one, or the extracted tar")
    parser.add_argument("out", type=Path, help="the split file to write (pass it to run.py --split_file)")
    parser.add_argument("--train_fraction", type=float, default=0.8,
                        help="share of every class for training, original layout only (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1993, help="numpy seed of that split (default: %(default)s)")
    parser.add_argument("--n_classes", type=int, default=N_CLASSES, help=argparse.SUPPRESS)  # tests use fewer
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "sweeps/make_imagenet_r_split.py"
    source: Path = args.source.expanduser()
    if not source.is_dir():
        print(f"{prog}: error: {source} is not a folder", file=sys.stderr)
        return 2
    if not 0 < args.train_fraction < 1:
        print(f"{prog}: error: --train_fraction must be between 0 and 1, got {args.train_fraction}", file=sys.stderr)
        return 2
    presplit = (source / "train").is_dir() and (source / "test").is_dir()
    classes = _class_dirs(source / "train") if presplit else _class_dirs(source)
    if len(classes) != args.n_classes:
        print(f"{prog}: error: {source} has {len(classes)} class folders, ImageNet-R has {args.n_classes}", file=sys.stderr)
        return 2
    try:
        if presplit:
            split = split_from_presplit(source)
            header = f"ImageNet-R split read from the pre-split folders {source.name}/train and {source.name}/test"
        else:
            split = split_from_original(source, args.train_fraction, args.seed)
            header = (f"ImageNet-R split made from the original layout: {args.train_fraction:g} of every class for "
                      f"training, numpy seed {args.seed}. Not PILOT's split: results are not comparable with papers.")
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    write_split(split, args.out, header)
    print(f"wrote {args.out}: {len(split['train'])} training and {len(split['test'])} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
