"""Readers for the class-incremental datasets under one data root, in their real on-disk layouts, and the splits of
CIL steps.

* CIFAR10 ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) and CIFAR100
  ``cifar-100-python/`` (the folder MTIL reads too): the pickles torchvision downloads.
* TinyImageNet ``tiny-imagenet-200/``: the label of a wnid is its line number in ``wnids.txt``; train images are
  ``train/<wnid>/images/*.JPEG``; ``val`` is the benchmark's test split, labelled by the wnid column of
  ``val/val_annotations.txt``; ``test/`` (unlabelled) and ``words.txt`` are not used.

Labels are the datasets' own (original) labels, and the class list found on disk must be the one the package's class
orders were written for (``catalog.cil_dataset_classnames``; TinyImageNet's wnids in ``wnids.txt`` order): a CIL
class order names original labels, so another class list would silently train other classes. Nothing downloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from . import catalog
from .mtil import (
    SPLITS,
    CheckResult,
    DatasetBrokenError,
    DatasetMissingError,
    LabeledImages,
    _Corrupt,
    _lines,
    _load_pickle,
    _Read,
    _read_cifar100,
    check_one,
)

CIL_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "tinyimagenet")


def _cifar_pixels(data: object, labels: list[int], where: Path) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise _Corrupt(f"{where}: data {data.dtype} {data.shape} with {len(labels)} labels, expected N x 3072 uint8")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R, G, B planes -> N x H x W x C


def _read_cifar10(base: Path, split: str) -> _Read:
    meta = _load_pickle(base / "batches.meta")
    if "label_names" not in meta:
        raise _Corrupt(f"{base / 'batches.meta'} has no 'label_names'")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    pixels, labels = [], []
    for name in files:
        batch = _load_pickle(base / name)
        if "data" not in batch or "labels" not in batch:
            raise _Corrupt(f"{base / name}: expected keys 'data' and 'labels'")
        ys = [int(y) for y in batch["labels"]]
        pixels.append(_cifar_pixels(batch["data"], ys, base / name))
        labels += ys
    return _Read(labels, pixels=np.concatenate(pixels), class_names=dict(enumerate(map(str, meta["label_names"]))),
                 complete=True)


def _read_tinyimagenet(base: Path, split: str) -> _Read:
    wnids = _lines(base / "wnids.txt")
    index = {w: i for i, w in enumerate(wnids)}
    labels, paths = [], []
    if split == "train":
        for label, wnid in enumerate(wnids):
            folder = base / "train" / wnid / "images"
            if not folder.is_dir():
                raise _Corrupt(f"class folder {folder} does not exist")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
            labels += [label] * len(files)
            paths += files
    else:
        annotations = base / "val" / "val_annotations.txt"
        for line in _lines(annotations):
            fields = line.split("\t")
            if len(fields) < 2:
                raise _Corrupt(f"{annotations}: cannot parse line {line!r} (file<TAB>wnid<TAB>box)")
            if fields[1] not in index:
                raise _Corrupt(f"{annotations}: wnid {fields[1]!r} is not in wnids.txt")
            labels.append(index[fields[1]])
            paths.append(base / "val" / "images" / fields[0])
    return _Read(labels, paths=paths, class_names=dict(enumerate(wnids)), complete=True)


@dataclass(frozen=True)
class _Source:
    folder: str
    read: Callable[[Path, str], _Read]
    expected: Callable[[], Sequence[str]]  # the dataset's own class names (wnids) in label order
    official: tuple[int, int]
    layout: str
    how_to_get: str


def _tiny_wnids() -> Sequence[str]:
    return catalog._load("cil.json")["tinyimagenet_wnids"]


_SOURCES: dict[str, _Source] = {
    "cifar10": _Source(
        "cifar-10-batches-py", _read_cifar10, lambda: catalog.cil_dataset_classnames("cifar10"), (50000, 10000),
        "cifar-10-batches-py/\n  data_batch_1 ... data_batch_5   (pickle: data N x 3072 uint8, labels)\n"
        "  test_batch\n  batches.meta   (pickle: label_names)",
        "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it in the data root (it "
        "unpacks to cifar-10-batches-py/), or run torchvision.datasets.CIFAR10(ROOT, download=True) once.",
    ),
    "cifar100": _Source(
        "cifar-100-python", _read_cifar100, lambda: catalog.cil_dataset_classnames("cifar100"), (50000, 10000),
        "cifar-100-python/\n  train   (pickle: data N x 3072 uint8, fine_labels)\n  test\n  meta    (pickle: fine_label_names)",
        "Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it in the data root, or run "
        "torchvision.datasets.CIFAR100(ROOT, download=True) once.",
    ),
    "tinyimagenet": _Source(
        "tiny-imagenet-200", _read_tinyimagenet, _tiny_wnids, (100000, 10000),
        "tiny-imagenet-200/\n  wnids.txt   (200 wnids; label = line number)\n  train/<wnid>/images/<wnid>_<n>.JPEG\n"
        "  val/images/val_<n>.JPEG\n  val/val_annotations.txt   (file<TAB>wnid<TAB>x y w h)",
        "Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it in the data root (it unpacks to "
        "tiny-imagenet-200/). torchvision has no TinyImageNet class; nothing here downloads it.",
    ),
}


def _source(name: str) -> _Source:
    if name not in _SOURCES:
        raise ValueError(f"unknown CIL dataset {name!r}; valid names: {', '.join(CIL_DATASETS)}")
    return _SOURCES[name]


def _validate(read: _Read, expected: Sequence[str], what: str) -> None:
    found = [read.class_names[k] for k in sorted(read.class_names)]
    if len(found) != len(expected):
        raise _Corrupt(f"found {len(found)} classes, expected {len(expected)} (partial download or extraction?)")
    for label, (have, want) in enumerate(zip(found, expected, strict=True)):
        if have != want:
            raise _Corrupt(f"class {label} is {have!r} in {what} but {want!r} in the package's class list: the class "
                           "orders name original labels, so they would pick other classes on this copy")
    bad = next((y for y in read.labels if not 0 <= y < len(expected)), None)
    if bad is not None:
        raise _Corrupt(f"label {bad} is outside 0..{len(expected) - 1}")


def load_split(name: str, root: str | Path, split: str) -> LabeledImages:
    """One split (``train`` or ``test``; TinyImageNet's test is ``val``) of a CIL dataset, original labels.

    Raises :class:`DatasetMissingError` (folder absent: what was searched, the layout, how to get it),
    :class:`DatasetBrokenError` (incomplete or another class list) and ``ValueError`` (unknown name or split).
    """
    source = _source(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    base = Path(root).expanduser() / source.folder
    if not base.is_dir():
        raise DatasetMissingError(name, base, source.layout, source.how_to_get)
    what = "wnids.txt" if name == "tinyimagenet" else "the dataset's meta file"
    try:
        read = source.read(base, split)
        _validate(read, source.expected(), what)
    except _Corrupt as e:
        raise DatasetBrokenError(name, base, str(e), source.layout) from None
    except OSError as e:
        raise DatasetBrokenError(name, base, f"{type(e).__name__}: {e}", source.layout) from None
    return LabeledImages(name, split, catalog.cil_dataset_classnames(name), read.labels, paths=read.paths,
                         pixels=read.pixels)


class StepSplit(Dataset):
    """The images of some classes of a dataset, labels renumbered 0..n-1 in the given class order.

    ``base`` yields (image, original label); its ``labels`` list (LabeledImages) is read to select without decoding.
    """

    def __init__(self, base: Dataset, classes: Sequence[int]):
        self.base, self.classes = base, tuple(classes)
        new = {c: i for i, c in enumerate(self.classes)}
        labels = base.labels if hasattr(base, "labels") else [base[i][1] for i in range(len(base))]
        self.indices = [i for i, y in enumerate(labels) if y in new]
        self.labels = [new[labels[i]] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]][0], self.labels[i]


def check(root: str | Path, names: Sequence[str] = ("cifar10", "tinyimagenet")) -> list[CheckResult]:
    """Inspect the CIFAR10 and TinyImageNet folders (or those of ``names``) under ``root`` (CIFAR100 is MTIL's
    folder, which ``mtil.check`` reports): found / missing / broken with image counts per split (TinyImageNet's
    test = val)."""
    root = Path(root).expanduser()
    return [check_one(name, root, _SOURCES[name], load_split) for name in names]


def folder(name: str) -> str:
    """The dataset's folder under the data root (torchvision's)."""
    return _source(name).folder


def official_counts(name: str) -> tuple[int, int]:
    """(train, test) images of the dataset's complete release."""
    return _source(name).official
