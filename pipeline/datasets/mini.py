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


def pretrain_tiny_clip(path: Path, steps: int = 300, seed: int = 0, lr: float = 1e-3) -> Path:
    """Give the tiny CLIP some "pre-training" knowledge: CE over all ``mini-base`` classes on their train
    images (prompt "a photo of a {}."), so that continual learning has something to forget, as real CLIP has.

    Deterministic for a seed; written as safetensors (by rename) for ``--clip-weights``.
    """
    import os

    import torch
    from safetensors.torch import save_file

    from pipeline.models import ClipSpec, encode_images, encode_texts, load_clip, tokenizer, train_transform
    from pipeline.training.losses import classification_loss

    path = Path(path)
    if path.exists():
        return path
    torch.manual_seed(seed)
    model = load_clip(ClipSpec("tiny", "none", seed))
    task = catalog.get_task("mini-base")
    images, labels = load_split("mini-base", "train")
    transform = train_transform(32)
    tokens = tokenizer()([task.prompt(c) for c in range(task.num_classes)])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(labels), (64,), generator=generator).tolist()
        batch = torch.stack([transform(images[i]) for i in idx])
        loss = classification_loss(encode_images(model, batch), encode_texts(model, tokens),
                                    torch.tensor([labels[i] for i in idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path
