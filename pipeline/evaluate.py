"""Zero-shot evaluation: one row of the accuracy matrix after each task.

Head: for each class, every template of the dataset is encoded, normalised, averaged and renormalised;
logits are 100·cos. Test images are resized and centre-cropped once and kept as uint8 (decoded once per run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .catalog import Task
from .models import LOGIT_SCALE, encode_images, encode_texts, normalize_uint8


@torch.no_grad()
def zeroshot_head(model: nn.Module, task: Task, tokenizer, device: torch.device) -> torch.Tensor:
    """Class embeddings [C, D] from all of the task's templates."""
    prompts = [t.format(c) for c in task.classnames for t in task.templates]
    feats = torch.cat([encode_texts(model, tokenizer(prompts[i : i + 512]).to(device))
                       for i in range(0, len(prompts), 512)])
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
    """A task's test split as uint8 [N,3,S,S] + labels, decoded on first use and then kept."""

    def __init__(self, dataset: Dataset, transform: Callable, workers: int = 0, batch_size: int = 256):
        self.dataset, self.transform, self.workers, self.batch_size = dataset, transform, workers, batch_size
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            loader = DataLoader(Transformed(self.dataset, self.transform), batch_size=self.batch_size,
                                num_workers=self.workers)
            images, labels = zip(*loader, strict=True)
            self._images, self._labels = torch.cat(images), torch.cat(labels)
        return self._images, self._labels


@torch.no_grad()
def accuracy(model: nn.Module, head: torch.Tensor, test: TestSet, device: torch.device, batch_size: int = 256,
             autocast_dtype: torch.dtype | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` with class embeddings ``head`` on ``test``."""
    images, labels = test.tensors()
    correct = 0
    for i in range(0, len(labels), batch_size):
        batch = normalize_uint8(images[i : i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = LOGIT_SCALE * encode_images(model, batch) @ head.T
        correct += (logits.argmax(dim=1).cpu() == labels[i : i + batch_size]).sum().item()
    return 100.0 * correct / max(1, len(labels))


def evaluate_order(model: nn.Module, tasks: Sequence[Task], tests: Sequence[TestSet], tokenizer,
                   device: torch.device, autocast_dtype: torch.dtype | None = None) -> list[float]:
    """One accuracy-matrix row: top-1 (%) on every dataset of the order."""
    was_training = model.training
    model.eval()
    row = [accuracy(model, zeroshot_head(model, task, tokenizer, device), test, device, autocast_dtype=autocast_dtype)
           for task, test in zip(tasks, tests, strict=True)]
    model.train(was_training)
    return row
