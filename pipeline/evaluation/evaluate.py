"""Zero-shot evaluation: one row of the accuracy matrix after each task.

Head: for each class, every template of the dataset is encoded, normalised, averaged and renormalised;
logits are 100·cos. Test images are resized and centre-cropped once and kept as uint8: in memory, or in a memory-mapped cache file
shared by every run that uses the same split (decoded once, ever).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.datasets.catalog import Task
from pipeline.dist import Dist
from pipeline.models import LOGIT_SCALE, encode_images, encode_text_batches, normalize_uint8
from shards.layout import tmp_path


@torch.no_grad()
def zeroshot_head(model: nn.Module, task: Task, tokenizer, device: torch.device) -> torch.Tensor:
    """Class embeddings [C, D] from all of the task's templates (512 prompts a batch, each trimmed to its own
    longest prompt: MTIL prompts are 10-30 tokens of 77)."""
    prompts = [t.format(c) for c in task.classnames for t in task.templates]
    feats = encode_text_batches(model, tokenizer(prompts), device, batch=512)
    feats = feats.view(task.num_classes, len(task.templates), -1).mean(dim=1)
    return nn.functional.normalize(feats, dim=-1)


class Transformed(Dataset):
    """A (image, label) dataset with ``transform`` applied to the image."""

    def __init__(self, base, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.transform(image), label


class TestSet:
    """A task's test split as uint8 [N,3,S,S] + labels, decoded once and then read from memory or disk.

    With ``cache`` (a ``.npy`` path), the decoded images go to a memory-mapped file written under a
    temporary name and renamed when complete, so the full MTIL test sets (~14 GB at 224²) never sit in RAM
    and every later run with the same key reads them back instead of decoding again. Without it, they are
    kept in memory (the mini tasks).
    """

    def __init__(self, dataset: Dataset, transform: Callable, workers: int = 0, batch_size: int = 256,
                 cache: Path | None = None):
        self.dataset, self.transform, self.workers, self.batch_size = dataset, transform, workers, batch_size
        self.cache = Path(cache) if cache is not None else None
        self._images: torch.Tensor | np.ndarray | None = None
        self._labels: torch.Tensor | None = None

    def _batches(self):
        return DataLoader(Transformed(self.dataset, self.transform), batch_size=self.batch_size,
                          num_workers=self.workers)

    def build(self) -> None:
        """Decode now (into the cache file when there is one); a no-op when already done."""
        if self.cache is None:
            if self._images is None:
                images, labels = zip(*self._batches(), strict=True)
                self._images, self._labels = torch.cat(images), torch.cat(labels)
            return
        labels_file = self.cache.with_suffix(".labels.npy")
        if self.cache.exists():
            return
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(self.cache)
        out = labels = None
        try:
            offset = 0
            for images, batch_labels in self._batches():
                if out is None:
                    shape = (len(self.dataset), *images.shape[1:])
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                    labels = np.empty(len(self.dataset), dtype=np.int64)
                out[offset : offset + len(images)] = images.numpy()
                labels[offset : offset + len(images)] = batch_labels.numpy()
                offset += len(images)
            out.flush()
            del out
            tmp_labels = tmp_path(labels_file)
            with open(tmp_labels, "wb") as f:
                np.save(f, labels)
            os.replace(tmp_labels, labels_file)
            os.replace(tmp, self.cache)  # the images file appears last, complete
        finally:
            tmp.unlink(missing_ok=True)

    def tensors(self) -> tuple[torch.Tensor | np.ndarray, torch.Tensor]:
        """(images, labels): images are a torch tensor in memory or a read-only memory-mapped array."""
        if self._images is None:
            self.build()
            if self.cache is not None:
                self._images = np.load(self.cache, mmap_mode="r")
                self._labels = torch.from_numpy(np.load(self.cache.with_suffix(".labels.npy")))
        return self._images, self._labels


def _rows(images, start: int, stop: int) -> torch.Tensor:
    rows = images[start:stop]
    return rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rows))


@torch.no_grad()
def correct_count(model: nn.Module, head: torch.Tensor, test: TestSet, device: torch.device, batch_size: int = 256,
                  autocast_dtype: torch.dtype | None = None, part: slice = slice(None)) -> tuple[int, int]:
    """(correct, total) of ``model`` with class embeddings ``head`` on the ``part`` of ``test``."""
    images, labels = test.tensors()
    start, stop, _ = part.indices(len(labels))
    correct = 0
    for i in range(start, stop, batch_size):
        j = min(i + batch_size, stop)
        batch = normalize_uint8(_rows(images, i, j).to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = LOGIT_SCALE * encode_images(model, batch) @ head.T
        correct += (logits.argmax(dim=1).cpu() == labels[i:j]).sum().item()
    return correct, stop - start


def evaluate_order(model: nn.Module, tasks: Sequence[Task], tests: Sequence[TestSet], tokenizer,
                   device: torch.device, autocast_dtype: torch.dtype | None = None, dist: Dist = Dist()) -> list[float]:
    """One accuracy-matrix row: top-1 (%) on every dataset of the order.

    Under torchrun each rank scores a contiguous share of every test set and the counts are summed.
    """
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, len(tests), dtype=torch.float64)
    for k, (task, test) in enumerate(zip(tasks, tests, strict=True)):
        head = zeroshot_head(model, task, tokenizer, device)
        counts[:, k] = torch.tensor(correct_count(model, head, test, device, autocast_dtype=autocast_dtype,
                                                  part=dist.shard(len(test.dataset))), dtype=torch.float64)
    model.train(was_training)
    if dist.world > 1:  # gloo reduces CPU tensors; nccl needs them on the GPU
        counts = dist.all_reduce(counts.to(device)).cpu()
    return (100.0 * counts[0] / counts[1].clamp(min=1)).tolist()
