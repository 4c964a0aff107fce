"""Letter glyphs rendered from the typefaces installed by Debian font packages: pretraining data.

Real typography, not natural images. Letters only: digits are classes of the offline CIL bench,
so they never appear in pretraining. Lower-case letters that look like their capitals (c, o, s,
...) are left out, as EMNIST's balanced split merges them. Each image is one glyph in a random
installed typeface, size, position and rotation, drawn white on black at 28x28 like MNIST.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

__all__ = ["GLYPH_CLASSES", "FONT_DIRS", "DEBIAN_FONT_PACKAGES", "find_fonts", "render_glyphs", "fonts_digest"]

GLYPH_CLASSES = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + list("abdefghnqrt")
FONT_DIRS = ("/usr/share/fonts",)
#: The packages sweeps/quickstart.sh installs for pretraining (Debian bookworm names).
DEBIAN_FONT_PACKAGES = ("fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation2", "fonts-freefont-ttf", "fonts-urw-base35")
#: Typefaces whose letters are pictograms, not letters.
_NOT_LETTERS = ("symbol", "dingbat", "d050000l")
CANVAS = 28
SIZE_RANGE = (14, 24)
MAX_SHIFT = 3
MAX_ROTATION = 12.0


def find_fonts(dirs=FONT_DIRS) -> list[Path]:
    """Installed TrueType/OpenType files that draw every class, sorted (the dataset's order)."""
    from PIL import ImageFont

    found = []
    for directory in dirs:
        for path in sorted(Path(directory).rglob("*")):
            if path.suffix.lower() not in (".ttf", ".otf") or any(word in path.name.lower() for word in _NOT_LETTERS):
                continue
            try:
                font = ImageFont.truetype(str(path), 20)
            except OSError:
                continue
            if all(font.getmask(c).getbbox() for c in GLYPH_CLASSES):
                found.append(path)
    return found


def fonts_digest(fonts: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in fonts:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def render_glyphs(per_class: int, fonts: list[Path], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of every class, uint8 (N, 28, 28), and labels (N,)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.RandomState(seed)
    cache: dict[tuple[int, int], ImageFont.FreeTypeFont] = {}
    images, labels = [], []
    for label, char in enumerate(GLYPH_CLASSES):
        for _ in range(per_class):
            font_index = rng.randint(len(fonts))
            size = rng.randint(SIZE_RANGE[0], SIZE_RANGE[1] + 1)
            key = (font_index, size)
            if key not in cache:
                cache[key] = ImageFont.truetype(str(fonts[font_index]), size)
            canvas = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)  # drawn large, rotated, then centred
            dx, dy = rng.randint(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
            ImageDraw.Draw(canvas).text((CANVAS + dx, CANVAS + dy), char, fill=255, font=cache[key], anchor="mm")
            canvas = canvas.rotate(rng.uniform(-MAX_ROTATION, MAX_ROTATION), resample=Image.BILINEAR)
            crop = canvas.crop((CANVAS // 2, CANVAS // 2, CANVAS // 2 + CANVAS, CANVAS // 2 + CANVAS))
            images.append(np.asarray(crop, dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
