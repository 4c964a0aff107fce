"""Streams: class order, split sizes, label remapping, mixed test batches, missing-data errors."""

import pytest

from cl_bench.benches import Cifar100Config, ImageNetRConfig, OfflineBenchConfig
from cl_bench.errors import DataMissingError
from cl_bench.registry import BENCHES
from cl_bench.seeding import class_order
from helpers import tiny_config

ICARL_ORDER = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85, 19, 17,
               50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71,
               96, 98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46, 62,
               69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33]


def test_class_order_1993_is_the_icarl_order():
    assert class_order(100, 1993) == ICARL_ORDER
    assert class_order(200, 1993)[:6] == [168, 136, 51, 9, 183, 101]  # ImageNet-R order of the EASE logs


def _stream(**overrides):
    from cl_bench.benches.streams import build_streams

    return build_streams(tiny_config("simple_cil", **overrides))


def _images_by_class(dataset, transform=None) -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = {}
    for i in range(len(dataset)):
        x, y = dataset[i]
        x = transform(x) if transform is not None else x
        out.setdefault(int(y), set()).add(x.numpy().tobytes())
    return out


def _stream_test_images(streams) -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = {}
    for exp in streams.test_stream:
        out.update(_images_by_class(exp.dataset.eval()))
    return out


def test_stream_class_order_follows_class_order_seed_not_seed():
    """Class k of the real stream holds the test images of dataset class order[k], for the order
    of class_order_seed (whatever the run seed), of the run seed in PILOT mode, natural with -1."""
    config = tiny_config("simple_cil")
    raw = BENCHES["digits_animals"].load()(config)
    by_dataset_class = _images_by_class(raw.test, raw.eval_transform)
    cases = [({"seed": 0}, class_order(20, 1993)), ({"seed": 1}, class_order(20, 1993)),
             ({"seed": 7, "class_order_from_seed": True}, class_order(20, 7)),
             ({"class_order_seed": -1}, list(range(20)))]
    assert class_order(20, 7) != class_order(20, 1993)  # the cases can tell the orders apart
    for overrides, order in cases:
        by_stream_class = _stream_test_images(_stream(**overrides))
        assert [by_stream_class[k] for k in range(20)] == [by_dataset_class[c] for c in order], overrides


@pytest.fixture(scope="module")
def streams():
    from cl_bench.benches.streams import build_streams

    return build_streams(tiny_config("simple_cil"))


def test_split_sizes_and_label_remapping(streams):
    assert streams.classes_per_experience == [4] * 5
    order = class_order(20, 1993)
    assert streams.class_order == order
    for t, exp in enumerate(streams.train_stream):
        labels = sorted(set(exp.dataset.targets))
        assert labels == list(range(4 * t, 4 * t + 4))  # class k of the stream is order[k] of the dataset
        assert len(exp.dataset) == 4 * 8 and len(streams.test_stream[t].dataset) == 4 * 4
    # the remapped label of an image is the position of its dataset label in the order
    from cl_bench.benches.offline import load_digits_animals

    raw = load_digits_animals(tiny_config("simple_cil"))
    first = streams.train_stream[0].dataset
    assert raw.class_names[order[0]] == streams.class_names[0]
    assert set(first.targets) == {0, 1, 2, 3}


def test_images_are_rgb_in_unit_range(streams):
    x, y = streams.test_stream[0].dataset.eval()[0]
    assert x.shape == (3, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_seen_test_data_mixes_experiences(streams):
    from torch.utils.data import DataLoader

    merged = streams.seen_test_experience(2).dataset
    assert len(merged) == 3 * 16
    first_batch = next(iter(DataLoader(merged, batch_size=16, shuffle=True)))[1]
    owners = set((first_batch // 4).tolist())
    assert len(owners) > 1  # a shuffled batch holds classes of several experiences


def test_fixed_split_is_independent_of_run_seed():
    """The same train and test images per class in the streams of two run seeds, never shared."""
    a, b = _stream(seed=0), _stream(seed=1)
    assert _stream_test_images(a) == _stream_test_images(b)
    train_a = {k: v for exp in a.train_stream for k, v in _images_by_class(exp.dataset.eval()).items()}
    train_b = {k: v for exp in b.train_stream for k, v in _images_by_class(exp.dataset.eval()).items()}
    assert train_a == train_b and all(len(images) == 8 for images in train_a.values())
    test = set().union(*_stream_test_images(a).values())
    assert not test & set().union(*train_a.values())  # train and test never share an image


def test_missing_data_errors_say_where_files_go(tmp_path):
    with pytest.raises(DataMissingError, match=r"cifar-100-python/\{train,test,meta\}.*--data_root"):
        BENCHES["split_cifar100"].check_data(Cifar100Config(data_root=str(tmp_path), download=False))
    with pytest.raises(DataMissingError, match="imagenet-r/train/<wnid>"):
        BENCHES["imagenet_r"].check_data(ImageNetRConfig(data_root=str(tmp_path)))
    with pytest.raises(DataMissingError, match="500 images per class"):
        BENCHES["digits_animals"].check_data(OfflineBenchConfig(train_per_class=450, test_per_class=100))
    from cl_bench.benches import FashionMnistConfig

    with pytest.raises(DataMissingError, match="apt-get install dataset-fashion-mnist"):
        BENCHES["fashion_mnist"].check_data(FashionMnistConfig(data_root=str(tmp_path)))


def test_cifar_offline_download_fails_clearly(tmp_path):
    from cl_bench.benches.images import load_cifar100

    config = tiny_config("simple_cil", "split_cifar100", data_root=str(tmp_path), download=True)
    with pytest.raises(DataMissingError, match="CIFAR-100 could not be loaded"):
        load_cifar100(config)


def test_imagenet_r_pre_split_layout(tmp_path):
    """A fake pre-split ImageNet-R with 200 class folders builds B5-5-40 streams."""
    from PIL import Image

    from cl_bench.benches.streams import build_streams

    for part in ("train", "test"):
        for c in range(200):
            folder = tmp_path / "imagenet-r" / part / f"n{c:08d}"
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), color=(c, 0, 0)).save(folder / "a.jpg")
    streams = build_streams(tiny_config("simple_cil", "imagenet_r", data_root=str(tmp_path)))
    assert streams.n_experiences == 40 and streams.classes_per_experience == [5] * 40
    x, y = streams.train_stream[0].dataset[0]
    assert tuple(x.shape) == (3, 224, 224)
