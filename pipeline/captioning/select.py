"""Which training images get captioned: per class, the k-means medoids of their frozen CLIP image features (the
images that best stand for the class's modes), or a seeded random draw; and a fingerprint of the chosen images.

Both choices are deterministic for a seed (and, for k-means, for the features: CLIP on another device may
differ numerically, and then so may the medoids; the fingerprint in the caption set's spec says which images
were captioned).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

SELECTIONS = ("kmeans", "random")
KMEANS_RESTARTS = 10


@torch.inference_mode()
def clip_features(images: Iterable[Image.Image], model: nn.Module, device: torch.device, batch_size: int = 64,
                  advance: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """L2-normalised CLIP image features [N, D] (float32) of ``images``, resized and centre-cropped to the model's
    input size as the evaluation transform does."""
    from pipeline.models import encode_images, eval_resize, image_size, normalize_uint8

    model = model.to(device).eval()
    transform = eval_resize(image_size(model))
    out, batch = [], []

    def flush() -> None:
        pixels = normalize_uint8(torch.stack(batch).to(device))
        out.append(encode_images(model, pixels).float().cpu())
        advance(len(batch))
        batch.clear()

    for image in images:
        batch.append(transform(image))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def kmeans_medoids(features: np.ndarray, k: int, seed: int) -> list[int]:
    """Indices (ascending) of ``k`` distinct rows of ``features`` [N, D]: k-means (``KMEANS_RESTARTS`` seeded
    restarts) in float64, then per cluster the member nearest to its centroid. All rows when N <= k."""
    from sklearn.cluster import KMeans

    n = len(features)
    if n <= k:
        return list(range(n))
    x = features.astype(np.float64)
    with warnings.catch_warnings():  # duplicate images: fewer distinct clusters than k is handled below
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed).fit(x)
    chosen = []
    for j, centre in enumerate(km.cluster_centers_):
        members = np.flatnonzero(km.labels_ == j)
        if len(members):  # members of different clusters are disjoint: medoids are distinct
            chosen.append(int(members[np.argmin(((x[members] - centre) ** 2).sum(axis=1))]))
    # An empty cluster (only with duplicate images) is filled by the lowest unused indices.
    used = set(chosen)
    chosen += [i for i in range(n) if i not in used][: k - len(chosen)]
    return sorted(chosen)


def random_pick(n: int, k: int, seed: int, class_index: int) -> list[int]:
    """``min(k, n)`` distinct indices in [0, n), ascending, drawn by a generator seeded by (seed, class)."""
    rng = np.random.default_rng([seed, class_index])
    return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))


def select_sources(labels: Sequence[int], num_classes: int, per_class: int, method: str, seed: int,
                   features: np.ndarray | None = None) -> list[list[int]]:
    """Per class (in label order), the ascending indices into the split of the images to caption.

    ``features`` [N, D] (one row per image of the split) are needed for ``kmeans``.
    """
    if method not in SELECTIONS:
        raise ValueError(f"unknown selection {method!r}; choose one of {', '.join(SELECTIONS)}")
    if method == "kmeans" and (features is None or len(features) != len(labels)):
        raise ValueError("kmeans selection needs one feature row per image of the split")
    labels = np.asarray(labels)
    out = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if method == "kmeans":
            picked = kmeans_medoids(features[members], per_class, seed)
        else:
            picked = random_pick(len(members), per_class, seed, c)
        out.append([int(members[i]) for i in picked])
    return out


def fingerprint(images: Iterable[tuple[int, Image.Image]]) -> str:
    """sha256 over (index, size, RGB pixels) of each chosen image, in order: which images were captioned, however
    they are stored (decoded pixels, not file bytes)."""
    h = hashlib.sha256()
    for index, image in images:
        rgb = image.convert("RGB")
        h.update(f"{index}:{rgb.width}x{rgb.height}:".encode())
        h.update(rgb.tobytes())
    return h.hexdigest()
