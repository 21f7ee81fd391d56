"""The `mini` benchmark: real images that ship inside scikit-learn, no download.

- ``mini-a`` / ``mini-b``: the 1,797 handwritten digits (8×8, upscaled by the transforms), classes 0–4 and 5–9.
- ``mini-c``: 96×96 crops of scikit-learn's two sample photographs, "temple" (china.jpg) and "flower".
- ``mini-base``: all twelve classes, the stand-in for ImageNet in the replay pool.

Each class's images are cut, in a fixed order, into 40% train, 30% test and 30% ``reference`` (held out for
the ``reference`` generator, so replayed images are real images of the class that training never saw).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import catalog

SPLITS = ("train", "test", "reference")
CROPS_PER_PHOTO = 120
CROP = 96


def _digit_images() -> dict[str, list[Image.Image]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    by_class: dict[str, list[Image.Image]] = {w: [] for w in catalog.DIGIT_WORDS}
    for pixels, label in zip(digits.images, digits.target, strict=True):
        by_class[catalog.DIGIT_WORDS[label]].append(Image.fromarray((pixels * (255 / 16)).astype(np.uint8), "L"))
    return by_class


def _photo_crops() -> dict[str, list[Image.Image]]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    rng = np.random.default_rng(0)
    out = {}
    for name, array in zip(("temple", "flower"), photos.images, strict=True):
        h, w, _ = array.shape
        ys, xs = rng.integers(0, h - CROP, CROPS_PER_PHOTO), rng.integers(0, w - CROP, CROPS_PER_PHOTO)
        out[name] = [Image.fromarray(array[y : y + CROP, x : x + CROP]) for y, x in zip(ys, xs, strict=True)]
    return out


def _cut(images: list, split: str) -> list:
    n = len(images)
    bounds = {"train": (0, int(0.4 * n)), "test": (int(0.4 * n), int(0.7 * n)), "reference": (int(0.7 * n), n)}
    lo, hi = bounds[split]
    return images[lo:hi]


def class_images(split: str) -> dict[str, list[Image.Image]]:
    """Every mini class name -> its images of ``split`` (RGB)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    images = {**_digit_images(), **_photo_crops()}
    return {name: [im.convert("RGB") for im in _cut(ims, split)] for name, ims in images.items()}


def load_split(task: str, split: str) -> tuple[list[Image.Image], list[int]]:
    """(images, labels) of a mini task's split; labels index the task's class names."""
    names = catalog.get_task(task).classnames
    per_class = class_images(split)
    images, labels = [], []
    for label, name in enumerate(names):
        images += per_class[name]
        labels += [label] * len(per_class[name])
    return images, labels


def export_reference(root: Path) -> Path:
    """Write the held-out ``reference`` images as ``root/<class name>/NNNN.png`` for ``--model reference:ROOT``."""
    for name, images in class_images("reference").items():
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images):
            path = folder / f"{k:04d}.png"
            if not path.exists():
                image.save(path)
    return Path(root)
