"""(PIL image, label) pairs of any task's split, from wherever that task's data live.

A task is an MTIL dataset (``data_root``), a mini task (scikit-learn), a CIL dataset (``cifar10``, ``cifar100``,
``tinyimagenet``, or its stage-1 task ``cil-cifar10`` ...: original labels) or a CIL step (``cifar100-10/03``: its classes, labels 0..n-1 in class order).
"""

from __future__ import annotations

from torch.utils.data import Dataset

from . import catalog, cil, mini, mtil


class _Images(Dataset):
    """In-memory (image, label) pairs (the mini tasks)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def task_dataset(task: str, split: str, data_root: str | None) -> Dataset:
    """(PIL image, label) pairs of a task's split: mini tasks from scikit-learn, the others from ``data_root``."""
    if task in catalog.MINI_TASKS:
        return _Images(*mini.load_split(task, split))
    if task in catalog.CIL_POOL_TASKS:  # a CIL dataset's own set (`gift caption cil-cifar10`): original labels
        dataset = catalog.cil_pool_dataset(task)
        if dataset is None:
            raise ValueError(f"{task} has no images: its classes are ImageNet names standing in for CLIP's "
                             "pre-training data (only `gift generate` renders it)")
        if data_root is None:
            raise ValueError(f"task {task} needs --data-root (the folder holding {dataset}; see `gift data check`)")
        return cil.load_split(dataset, data_root, split)
    if "/" in task:  # a CIL step of a setting's own class order (another order: ``step_dataset``)
        setting = catalog.get_setting(task.rpartition("/")[0])
        return step_dataset(setting, setting.step_names.index(catalog.get_task(task).name), split, data_root)
    if data_root is None:
        raise ValueError(f"task {task} needs --data-root (the folder holding the datasets; see `gift data check`)")
    if task in cil.CIL_DATASETS and task not in mtil.MTIL_DATASETS:
        return cil.load_split(task, data_root, split)
    return mtil.load_split(task, data_root, split)


def dataset_split(setting: catalog.CilSetting, split: str, data_root: str | None) -> Dataset:
    """The whole split of a CIL setting's dataset, original labels (CIFAR100 read with the CIL names)."""
    if setting.dataset in catalog.MINI_TASKS:
        return task_dataset(setting.dataset, split, None)
    if data_root is None:
        raise ValueError(f"setting {setting.name} needs --data-root (the folder holding {setting.dataset}; see "
                         "`gift data check`)")
    return cil.load_split(setting.dataset, data_root, split)


def step_dataset(setting: catalog.CilSetting, k: int, split: str, data_root: str | None,
                 whole: Dataset | None = None) -> Dataset:
    """Step k's images of ``split``, labels 0..n-1 in the setting's class order (``whole``: the split, if loaded)."""
    return cil.StepSplit(whole if whole is not None else dataset_split(setting, split, data_root), setting.steps[k])
