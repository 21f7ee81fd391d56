"""(PIL image, label) pairs of any task's split, from wherever that task's data live."""

from __future__ import annotations

from torch.utils.data import Dataset

from . import catalog, mini


class _Images(Dataset):
    """In-memory (image, label) pairs (the mini tasks)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def task_dataset(task: str, split: str, data_root: str | None) -> Dataset:
    """(PIL image, label) pairs of a task's split: mini tasks from scikit-learn, MTIL from ``data_root``."""
    if task in catalog.MINI_TASKS:
        return _Images(*mini.load_split(task, split))
    if data_root is None:
        raise ValueError(f"task {task} needs --data-root (the folder holding the MTIL datasets; see `gift data check`)")
    from . import mtil

    return mtil.load_split(task, data_root, split)
