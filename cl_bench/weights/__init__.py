"""Weight files that ship with the repository (package data), by path: a light module that both
the backbone registry and the suite's timm model definitions import, so neither imports the other."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
MINI_VIT_WEIGHTS = WEIGHTS_DIR / "vit_mini_patch4_28.fmnist_letters.safetensors"
