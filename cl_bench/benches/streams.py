"""Avalanche class-incremental streams with labels remapped to class-order positions.

Class ``k`` of a stream is ``class_order[k]`` of the dataset, so experience ``t`` holds the
contiguous label range ``offsets[t] .. offsets[t+1]-1``. Samples carry no task label: nothing at
test time can read task identity (protocol § Metrics).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from avalanche.benchmarks import DatasetExperience
from avalanche.benchmarks.scenarios import class_incremental_benchmark
from avalanche.benchmarks.utils import as_classification_dataset
from avalanche.benchmarks.utils.transform_groups import TransformGroups
from torch.utils.data import Dataset

from cl_bench.registry import BENCHES
from cl_bench.seeding import class_order as make_class_order

__all__ = ["BenchStreams", "Relabelled", "build_streams"]


class Relabelled(Dataset):
    """A dataset whose labels are replaced by their class-order position."""

    def __init__(self, dataset: Dataset, position: np.ndarray) -> None:
        self.dataset = dataset
        self.position = position
        self.targets = [int(position[y]) for y in dataset.targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        x, _ = self.dataset[index]
        return x, self.targets[index]


@dataclass
class BenchStreams:
    """The scenario plus what the runner and the metrics need to know about it."""

    scenario: object
    class_order: list[int]
    classes_per_experience: list[int]
    class_names: list[str]

    @property
    def train_stream(self):
        return self.scenario.train_stream

    @property
    def test_stream(self):
        return self.scenario.test_stream

    @property
    def n_experiences(self) -> int:
        return len(self.classes_per_experience)

    @property
    def n_classes(self) -> int:
        return sum(self.classes_per_experience)

    @property
    def offsets(self) -> list[int]:
        """First label of each experience, then the total number of classes."""
        return [0] + np.cumsum(self.classes_per_experience).tolist()

    def experience_of_label(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_experiences), self.classes_per_experience)

    def test_sizes(self) -> list[int]:
        return [len(exp.dataset) for exp in self.test_stream]

    def seen_test_experience(self, t: int) -> DatasetExperience:
        """The test data of experiences ``0..t`` as one experience, so eval batches mix them."""
        datasets = [self.test_stream[i].dataset for i in range(t + 1)]
        merged = functools.reduce(lambda a, b: a.concat(b), datasets)
        return DatasetExperience(dataset=merged.eval(), current_experience=t)


def build_streams(config) -> BenchStreams:
    entry = BENCHES[config.run.bench]
    raw = entry.load()(config)
    order = make_class_order(entry.n_classes, config.effective_class_order_seed)
    position = np.empty(entry.n_classes, dtype=np.int64)
    position[order] = np.arange(entry.n_classes)
    groups = TransformGroups({"train": raw.train_transform, "eval": raw.eval_transform})
    train = as_classification_dataset(Relabelled(raw.train, position), transform_groups=groups)
    test = as_classification_dataset(Relabelled(raw.test, position), transform_groups=groups)
    sizes = config.classes_per_experience()
    scenario = class_incremental_benchmark(
        {"train": train, "test": test},
        class_order=list(range(entry.n_classes)),
        num_classes_per_exp=sizes,
    )
    names = [raw.class_names[c] for c in order]
    return BenchStreams(scenario=scenario, class_order=order, classes_per_experience=sizes, class_names=names)
