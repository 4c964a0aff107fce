"""The suite's pretrained ViT: transfer to the held-out CIL classes, and sweeps/pretrain.py end to end."""

import json
import subprocess
import sys

import torch

from cl_bench.backbones import MINI_VIT_WEIGHTS, build_backbone
from cl_bench.benches.glyphs import GLYPH_CLASSES
from cl_bench.pretraining import PretrainConfig, transfer_report
from helpers import REPO, tiny_config


def test_pretrained_backbone_beats_its_random_twin_on_held_out_classes():
    # a small subset of the CIL classes (digits and animals, never seen in pretraining)
    config = PretrainConfig(probe_train_per_class=40, probe_test_per_class=20)
    pretrained = build_backbone(tiny_config("simple_cil", pretrained=True)).vit
    torch.manual_seed(0)
    random_twin = build_backbone(tiny_config("simple_cil", pretrained=False)).vit
    ours, theirs = transfer_report(pretrained, config, linear_probe=False), transfer_report(random_twin, config, linear_probe=False)
    assert ours["ncm_accuracy"] > theirs["ncm_accuracy"] + 0.10, (ours, theirs)


def test_pretraining_record_is_complete_and_matches_the_weights():
    record = json.loads(MINI_VIT_WEIGHTS.with_suffix(".json").read_text())
    from cl_bench.backbones import file_sha256

    assert record["weights"]["sha256"] == file_sha256(MINI_VIT_WEIGHTS)
    assert record["data"]["glyphs"]["classes"] == "".join(GLYPH_CLASSES)
    assert not set("0123456789") & set(record["data"]["glyphs"]["classes"])  # digits are CIL classes
    transfer = record["transfer"]
    assert transfer["pretrained"]["ncm_accuracy"] > transfer["random_init_twin"]["ncm_accuracy"]
    assert record["wall_seconds"] < 3600


def test_pretrain_script_runs_a_tiny_configuration_deterministically(tmp_path):
    def run(name):
        out = tmp_path / name / "w.safetensors"
        result = subprocess.run(
            [sys.executable, str(REPO / "sweeps" / "pretrain.py"), "--epochs", "1", "--train_per_class", "20",
             "--test_per_class", "10", "--glyphs_per_class", "5", "--probe_train_per_class", "10",
             "--probe_test_per_class", "5", "--batch_size", "32", "--threads", "1", "--out", str(out)],
            capture_output=True, text=True, cwd=REPO, timeout=600)
        assert result.returncode == 0, result.stderr
        return json.loads(out.with_suffix(".json").read_text())

    first, second = run("a"), run("b")
    assert first["weights"]["sha256"] == second["weights"]["sha256"]  # deterministic given its seed
    assert first["history"][0]["train_loss"] == second["history"][0]["train_loss"]
    assert set(first["transfer"]) == {"pretrained", "random_init_twin"}
