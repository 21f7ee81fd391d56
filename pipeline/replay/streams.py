"""Batch streams of the training loop: the real task data, the synthetic draw, and the image sets some
baselines replay (the current task's images, a reference ImageFolder, an exemplar memory).

Every stream is a pure function of its seed: an endless sequence of global batches from seeded permutations,
each rank taking its contiguous share, so N processes see exactly the batches of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.dist import Dist
from pipeline.models import normalize_uint8


@dataclass
class SynthBatch:
    """A replayed batch: this rank's share of images (and tokens), the whole batch's prompts."""

    images: torch.Tensor  # normalised [b,3,S,S]
    tokens: torch.Tensor | None  # [b,L], L ≤ 77 (None when a method replays images only)
    prompts: list[str]  # the whole batch's prompts, in rank order (B of them; empty for images only)
    labels: torch.Tensor | None = None  # [b] where the images come from a labelled dataset
    index: torch.Tensor | None = None  # [B] the whole batch's rows of the synthetic draw, on the device


class IndexStream:
    """Endless global batches of ``batch`` indices from seeded permutations of ``n`` items, each index paired
    with its own augmentation seed; yields this rank's contiguous share of every batch.

    Every rank draws the same stream (same generator state), so N ranks see exactly the one-process batches.
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator, dist: Dist = Dist()):
        self.n, self.batch, self.generator, self.dist = n, batch, generator, dist
        self._order = torch.empty(0, dtype=torch.long)
        self._seeds = torch.empty(0, dtype=torch.long)

    def next_global(self) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._order) < self.batch:  # a fresh seeded permutation per pass
            self._order = torch.cat([self._order, torch.randperm(self.n, generator=self.generator)])
            self._seeds = torch.cat([self._seeds, torch.randint(0, 2**62, (self.n,), generator=self.generator)])
        pick, seeds = self._order[: self.batch], self._seeds[: self.batch]
        self._order, self._seeds = self._order[self.batch :], self._seeds[self.batch :]
        return pick, seeds

    def next_local(self) -> tuple[torch.Tensor, torch.Tensor]:
        pick, seeds = self.next_global()
        part = self.dist.shard(self.batch)
        return pick[part], seeds[part]


class _BatchSampler(Sampler):
    def __init__(self, stream: IndexStream):
        self.stream = stream

    def __iter__(self):
        while True:
            pick, seeds = self.stream.next_local()
            yield list(zip(pick.tolist(), seeds.tolist(), strict=True))


class Augmented(Dataset):
    """Real training images; item (i, seed) applies the random transform under its own seed."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]):
        i, seed = item
        image, label = self.base[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


class SyntheticStream:
    """Batches of a task's synthetic draw (decoded once): images, their prompts' tokens, prompts, and the batch's
    rows of the draw (for the teacher's cached features). The draw moves to the device once (1,000 uint8 images
    at 224² are 150 MB); a step then sends only its indices, without waiting for the device."""

    def __init__(self, source, batch: int, seed: int, dist: Dist, device: torch.device):
        self.source, self.dist, self.device = source, dist, device
        self.stream = IndexStream(len(source), batch, torch.Generator().manual_seed(seed), dist)
        self.images, self.tokens = source.images.to(device), source.tokens.to(device)

    def next(self) -> SynthBatch:
        pick, _ = self.stream.next_global()
        index = _to_device(pick, self.device)
        mine = index[self.dist.shard(len(pick))]
        return SynthBatch(normalize_uint8(self.images[mine]), self.tokens[mine],
                          [self.source.prompts[i] for i in pick.tolist()], index=index)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without a synchronisation (pinned, then copied asynchronously)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


class ImageStream:
    """Batches of a dataset's images through ``transform`` (uint8 output is normalised on the device, unless
    ``normalized`` says the transform already did), loaded by ``workers`` processes; labels travel along."""

    def __init__(self, dataset: Dataset, transform, batch: int, seed: int, dist: Dist, device: torch.device,
                 workers: int = 0, normalized: bool = False):
        self.device, self.normalized = device, normalized
        self.stream = IndexStream(len(dataset), batch, torch.Generator().manual_seed(seed), dist)
        self.loader = DataLoader(Augmented(dataset, transform), batch_sampler=_BatchSampler(self.stream),
                                 num_workers=workers, persistent_workers=False, pin_memory=device.type == "cuda")
        self._it = None

    def next(self) -> SynthBatch:
        if self._it is None:
            self._it = iter(self.loader)
        images, labels = next(self._it)
        images = images.to(self.device, non_blocking=True)  # pinned by the loader on CUDA: no synchronisation
        return SynthBatch(images if self.normalized else normalize_uint8(images), None, [],
                          labels.to(self.device, non_blocking=True))
