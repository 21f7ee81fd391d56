"""Frozen CLIP image features for CLTS, computed once and cached on disk.

CLTS never changes CLIP: heads and router are trained on its image features, so every image a run needs is encoded
once, in batches (resize + centre crop to the model's input, CLIP normalisation: the evaluation transform), and kept
as ``Features`` (float32 [N, D] + labels [N]) in ``RUNS/.cache/features/<name>-<key>.npz``: shared by every run
under ``--runs`` (a router ablation, a resumed run and a table reuse them) and keyed, like the test-set cache, by
what defines them: the CLIP (architecture and weights: a tag, or a checkpoint's content hash), the input size, and
the images (dataset, split, data root and count; or a render set's spec hash and the native size its images are
downsampled to). Written under a temporary name, then renamed: a killed run leaves no partial file.

Renders are first downsampled to the dataset's native size and channels (32×32 RGB for CIFAR, 64×64 for
TinyImageNet, 8×8 grey for the mini digits), so the router sees them as it will see the test images, then go through
the same transform.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.evaluation.evaluate import TestSet, Transformed
from pipeline.generation.generators import center_square
from pipeline.models import encode_images, eval_resize, normalize_uint8
from shards.layout import spec_hash, tmp_path
from shards.manifest import load_manifest
from shards.reader import iter_samples

log = logging.getLogger("gift.clts")
BATCH = 256


@dataclass
class Features:
    """Image features [N, D] (float32, L2-normalised) and labels [N] (long: the set's class indices, original labels
    of a CIL dataset)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def where(self, mask: torch.Tensor) -> Features:
        return Features(self.x[mask], self.y[mask])


def cache_path(runs: str | Path, name: str, key: dict) -> Path:
    """``RUNS/.cache/features/<name>-<hash of key>.npz``."""
    return Path(runs) / ".cache" / "features" / f"{name}-{spec_hash(key)[:12]}.npz"


def cached(path: Path, compute: Callable[[], Features]) -> Features:
    """The features stored at ``path``, or ``compute()`` stored there first (by rename)."""
    if path.exists():
        with np.load(path) as data:
            return Features(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, x=features.x.numpy(), y=features.y.numpy())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("cached %d features in %s", len(features), path)
    return features


@torch.no_grad()
def encode(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
           advance: Callable[[int], None] = lambda n: None) -> Features:
    """Features of uint8 image batches [b, 3, S, S] with their labels [b]."""
    was_training = model.training
    model.eval()
    xs, ys = [], []
    for images, labels in batches:
        xs.append(encode_images(model, normalize_uint8(images.to(device))).float().cpu())
        ys.append(torch.as_tensor(labels, dtype=torch.long))
        advance(len(labels))
    model.train(was_training)
    if not xs:
        return Features(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long))
    return Features(torch.cat(xs), torch.cat(ys))


def split_batches(dataset: Dataset, size: int, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 [b, 3, size, size], labels) of a dataset split, decoded by ``workers`` loader processes."""
    yield from DataLoader(Transformed(dataset, eval_resize(size)), batch_size=BATCH, num_workers=workers)


def test_batches(test: TestSet) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The decoded test split (the shared test-set cache) in batches."""
    images, labels = test.tensors()
    for i in range(0, len(labels), BATCH):
        rows = images[i : i + BATCH]
        yield (rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rows))), labels[i : i + BATCH]


def downsample(image: Image.Image, native: tuple[int, int, int]) -> Image.Image:
    """An image at the dataset's native (height, width, channels): centre square, bicubic (antialiased) resize, grey
    when the dataset is; back to RGB for the shared transform."""
    h, w, channels = native
    image = center_square(image.convert("RGB"), h) if h == w else image.convert("RGB").resize((w, h), Image.BICUBIC)
    return image.convert("L").convert("RGB") if channels == 1 else image


def render_batches(set_path: Path, native: tuple[int, int, int], size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 [b, 3, size, size], class indices) of every image of a render set, in set order, each downsampled to
    ``native`` first."""
    transform = eval_resize(size)
    manifest = load_manifest(set_path)
    batch, labels = [], []
    for sample in iter_samples(set_path, sorted(s["index"] for s in manifest["shards"])):
        batch.append(transform(downsample(sample.pil(), native)))
        labels.append(int(sample.meta["class_index"]))
        if len(batch) == BATCH:
            yield torch.stack(batch), torch.tensor(labels)
            batch, labels = [], []
    if batch:
        yield torch.stack(batch), torch.tensor(labels)
