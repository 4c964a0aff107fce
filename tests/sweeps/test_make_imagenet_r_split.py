"""The ImageNet-R split file: written from pre-split folders, read back on the original layout."""

import shutil
import sys

import pytest

from helpers import REPO, tiny_config

sys.path.insert(0, str(REPO / "sweeps"))
import make_imagenet_r_split as maker  # noqa: E402


def _fake_presplit(root, n_classes=200):
    from PIL import Image

    for part, names in (("train", ("a.jpg", "b.jpg")), ("test", ("c.jpg",))):
        for c in range(n_classes):
            folder = root / "imagenet-r" / part / f"n{c:08d}"
            folder.mkdir(parents=True)
            for name in names:
                Image.new("RGB", (8, 8), color=(c, len(name), 0)).save(folder / name)


def test_split_from_presplit_folders_rebuilds_the_same_split_on_the_original_layout(tmp_path):
    from cl_bench.benches.streams import build_streams

    _fake_presplit(tmp_path / "presplit")
    split_file = tmp_path / "imagenet_r_split.txt"
    assert maker.main([str(tmp_path / "presplit" / "imagenet-r"), str(split_file)]) == 0
    original = tmp_path / "original" / "imagenet-r"
    for part in ("train", "test"):  # the tar's layout: every image of a class in one folder
        for class_dir in (tmp_path / "presplit" / "imagenet-r" / part).iterdir():
            (original / class_dir.name).mkdir(parents=True, exist_ok=True)
            for image in class_dir.iterdir():
                shutil.copy(image, original / class_dir.name / image.name)
    config = tiny_config("simple_cil", "imagenet_r", data_root=str(tmp_path / "original"), split_file=str(split_file))
    streams = build_streams(config)
    assert sum(len(e.dataset) for e in streams.train_stream) == 400
    assert sum(len(e.dataset) for e in streams.test_stream) == 200
    assert split_file.read_text().count("\ntest ") == 200


def test_split_from_the_original_layout_is_seeded_and_disjoint(tmp_path):
    from PIL import Image

    for c in range(3):
        folder = tmp_path / "imagenet-r" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (4, 4)).save(folder / f"{i}.jpg")
    out_a, out_b = tmp_path / "a.txt", tmp_path / "b.txt"
    for out in (out_a, out_b):
        assert maker.main([str(tmp_path / "imagenet-r"), str(out), "--n_classes", "3", "--seed", "7"]) == 0
    assert out_a.read_text() == out_b.read_text()
    split = maker.split_from_original(tmp_path / "imagenet-r", 0.8, 7)
    assert len(split["train"]) == 24 and len(split["test"]) == 6 and not set(split["train"]) & set(split["test"])
    assert "Not PILOT's split" in out_a.read_text()


@pytest.mark.parametrize("extra, message", [(["--train_fraction", "1.5"], "train_fraction"), ([], "has 3 class folders")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    for c in range(3):
        (tmp_path / "imagenet-r" / f"n{c}").mkdir(parents=True)
    assert maker.main([str(tmp_path / "imagenet-r"), str(tmp_path / "out.txt"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "out.txt").exists()
