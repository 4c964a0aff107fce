"""Pretrain the suite's small ViT on Fashion-MNIST and letter glyphs: python sweeps/pretrain.py [--epochs 7 ...].

Writes fp16 weights and a JSON record (history, transfer to the held-out CIL classes against a
random twin, sha256). The default output is the file the `vit_mini_patch4_28.fmnist_letters` tag
loads; after regenerating it, pin its new sha256 in cl_bench/backbones.py.
"""

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cl_bench.benches import FashionMnistConfig, _require_fashion_mnist, _check_digits_animals, OfflineBenchConfig  # noqa: E402
from cl_bench.cli import ArgumentParser  # noqa: E402
from cl_bench.errors import UserError  # noqa: E402
from cl_bench.pretraining import PretrainConfig  # noqa: E402


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sweeps/pretrain.py", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(PretrainConfig):
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help="default: %(default)s")
    return parser


def main() -> int:
    config = PretrainConfig(**vars(build_parser().parse_args()))
    try:
        if config.glyphs_per_class:
            from cl_bench.benches.glyphs import DEBIAN_FONT_PACKAGES, FONT_DIRS, find_fonts

            if not find_fonts():
                raise UserError(f"no typefaces that draw every letter under {', '.join(FONT_DIRS)}; "
                                f"apt-get install {' '.join(DEBIAN_FONT_PACKAGES)}, or pass --glyphs_per_class 0")
        _require_fashion_mnist("pretraining", FashionMnistConfig())
        _check_digits_animals(OfflineBenchConfig(train_per_class=config.probe_train_per_class,
                                                 test_per_class=config.probe_test_per_class))
    except UserError as error:
        print(f"sweeps/pretrain.py: error: {error}", file=sys.stderr)
        return 2
    from cl_bench.pretraining import pretrain

    record = pretrain(config)
    print(f"wrote {config.out} (sha256 {record['weights']['sha256']}) in {record['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
