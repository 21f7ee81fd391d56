"""Readers for the 11 MTIL datasets under one data root, in torchvision's own on-disk layouts.

Each dataset lives in torchvision's folder under the root (``fgvc-aircraft-2013b``, ``caltech101/101_ObjectCategories``,
``cifar-100-python``, ``dtd/dtd``, ``eurosat/2750``, ``flowers-102``, ``food-101``, ``MNIST/raw``, ``oxford-iiit-pet``,
``stanford_cars``, ``SUN397``), so a root already filled by ``torchvision.datasets.X(root, download=True)`` works as is.
The files are read directly rather than through torchvision's classes: those verify archive MD5 checksums (so small
test fixtures and hand-assembled copies fail) and may try to download. Nothing here downloads.

Labels are 0-based and index ``pipeline.datasets.catalog.get_task(name).classnames``. Where the files carry class names of
their own (everything but Flowers, MNIST and Caltech101), they are compared with the catalog, and a complete class list
must have the catalog's length: a partial extraction or a mirror with a different class order is reported as broken
(:class:`DatasetBrokenError`) instead of silently mislabelling images.

Splits: the official train/test splits where they exist (Aircraft variant train/test, DTD partition 1 train/test,
Flowers trnid/tstid, Pets trainval/test, Food, CIFAR-100, MNIST, Cars). Caltech101, EuroSAT and SUN397 have none, so
a seeded split is made that is identical on every machine:

* list every (image, label) pair and sort them by the image's path relative to the dataset folder (POSIX string);
* ``perm = torch.randperm(n, generator=torch.Generator().manual_seed(42))``;
* train = the pairs at ``perm[: 4 * n // 5]`` (that is floor(0.8 n)), test = the pairs at ``perm[4 * n // 5 :]``;
* each side is kept in sorted-file order (the chosen indices are sorted).
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import indent

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .catalog import get_task, mtil_task_names

MTIL_DATASETS: tuple[str, ...] = tuple(mtil_task_names())
SPLITS: tuple[str, ...] = ("train", "test")
SPLIT_SEED = 42
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


class DatasetMissingError(FileNotFoundError):
    """A dataset's folder is not under the data root."""

    def __init__(self, dataset: str, path: Path, expected_layout: str, how_to_get: str):
        self.dataset = dataset
        self.path = path
        super().__init__(
            f"{dataset}: dataset not found, looked for {path}\n"
            f"expected layout under the data root:\n{indent(expected_layout, '  ')}\n"
            f"how to get it:\n{indent(how_to_get, '  ')}"
        )


class DatasetBrokenError(ValueError):
    """A dataset's folder exists but its files are incomplete, unreadable or inconsistent with the catalog."""

    def __init__(self, dataset: str, path: Path, problem: str, expected_layout: str):
        self.dataset = dataset
        self.path = path
        self.problem = problem
        super().__init__(
            f"{dataset}: broken dataset at {path}: {problem}\n"
            f"expected layout under the data root:\n{indent(expected_layout, '  ')}"
        )


class _Corrupt(Exception):
    """Raised by the readers; load_split turns it into DatasetBrokenError with the dataset's context."""


class LabeledImages(Dataset):
    """One split of one dataset: items are ``(PIL RGB image, 0-based label)``.

    File-based datasets keep paths and open each image in ``__getitem__``; MNIST and CIFAR-100 keep their uint8
    arrays (``pixels``: N x H x W or N x H x W x 3).
    """

    def __init__(
        self,
        name: str,
        split: str,
        classnames: Sequence[str],
        labels: Sequence[int],
        *,
        paths: Sequence[Path] | None = None,
        pixels: np.ndarray | None = None,
    ):
        if (paths is None) == (pixels is None):
            raise ValueError("give exactly one of paths or pixels")
        count = len(paths) if paths is not None else len(pixels)
        if count != len(labels):
            raise ValueError(f"{count} images but {len(labels)} labels")
        self.name = name
        self.split = split
        self.classnames: tuple[str, ...] = tuple(classnames)
        self.labels: list[int] = [int(y) for y in labels]
        self.paths: list[Path] | None = list(paths) if paths is not None else None
        self._pixels = pixels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        label = self.labels[index]
        if self.paths is not None:
            with Image.open(self.paths[index]) as image:
                return image.convert("RGB"), label
        return Image.fromarray(np.ascontiguousarray(self._pixels[index])).convert("RGB"), label

    def __repr__(self) -> str:
        return f"LabeledImages({self.name!r}, {self.split!r}, {len(self)} images, {len(self.classnames)} classes)"


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found for one dataset."""

    name: str
    status: str  # "found" | "missing" | "broken"
    counts: dict[str, int]  # images per split that could be listed
    folder: str  # torchvision's folder, relative to the data root
    expected_layout: str
    how_to_get: str
    detail: str  # why it is missing / broken; for found, a note when counts differ from the full release


# --------------------------------------------------------------------------------------------- reading helpers


@dataclass
class _Read:
    labels: list[int]
    paths: list[Path] | None = None
    pixels: np.ndarray | None = None
    class_names: dict[int, str] = field(default_factory=dict)  # label -> the dataset's own name for it
    complete: bool = False  # class_names is the dataset's full class list, so its length must match the catalog


def _need(path: Path) -> Path:
    if not path.exists():
        raise _Corrupt(f"{path} does not exist")
    return path


def _lines(path: Path) -> list[str]:
    text = _need(path).read_text(encoding="utf-8")
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _subdirs(path: Path) -> list[str]:
    # Plain sorted(): case-sensitive, as torchvision's sorted(os.listdir(...)), so "Faces" sorts before "accordion".
    return sorted(p.name for p in _need(path).iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    """Image files of one class folder, unordered (the seeded split sorts all pairs itself)."""
    if not folder.is_dir():
        raise _Corrupt(f"class folder {folder} does not exist")
    return [p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")]


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(_need(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Corrupt(f"cannot parse {path}: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise _Corrupt(f"{path} is not a mapping of class name -> list of images")
    return data


def _load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(_need(path), squeeze_me=True)
    except Exception as e:  # scipy raises several unrelated types (ValueError, TypeError, MatReadError) on bad files
        raise _Corrupt(f"cannot read {path}: {e}") from e
    if key not in mat:
        raise _Corrupt(f"{path} has no {key!r} entry")
    return np.atleast_1d(mat[key])  # squeeze_me turns a 1-element array into a scalar


def _load_pickle(path: Path) -> dict:
    try:
        with _need(path).open("rb") as f:
            data = pickle.load(f, encoding="latin1")  # the CIFAR pickles were written by Python 2
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise _Corrupt(f"cannot unpickle {path}: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict):
        raise _Corrupt(f"{path} does not hold a dict")
    return data


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An uncompressed IDX file of uint8 (type code 0x08) with ``ndim`` dimensions, as in MNIST/raw."""
    data = _need(path).read_bytes()
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise _Corrupt(f"{path} is not a {ndim}-d uint8 IDX file")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    body = np.frombuffer(data, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(dims)):
        raise _Corrupt(f"{path} holds {body.size} bytes of data, its header promises {int(np.prod(dims))}")
    return body.reshape(dims)


def _seeded_split(base: Path, pairs: list[tuple[Path, int]], split: str, classes: list[str]) -> _Read:
    pairs = sorted(pairs, key=lambda pair: (pair[0].relative_to(base).as_posix(), pair[1]))
    n = len(pairs)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_train = 4 * n // 5  # floor(0.8 n) in integer arithmetic
    chosen = sorted(perm[:n_train] if split == "train" else perm[n_train:])
    return _Read(
        labels=[pairs[i][1] for i in chosen],
        paths=[pairs[i][0] for i in chosen],
        class_names=dict(enumerate(classes)),
        complete=True,
    )


# --------------------------------------------------------------------------------------------- one reader each


def _read_aircraft(base: Path, split: str) -> _Read:
    data = base / "data"
    classes = _lines(data / "variants.txt")
    index = {c: i for i, c in enumerate(classes)}
    split_file = data / f"images_variant_{split}.txt"
    labels, paths = [], []
    for line in _lines(split_file):
        image_id, _, variant = line.partition(" ")  # variants contain spaces ("Cessna 172")
        if variant not in index:
            raise _Corrupt(f"{split_file}: variant {variant!r} is not in variants.txt")
        labels.append(index[variant])
        paths.append(data / "images" / f"{image_id}.jpg")
    return _Read(labels, paths=paths, class_names=dict(enumerate(classes)), complete=True)


def _read_caltech101(base: Path, split: str) -> _Read:
    classes = [c for c in _subdirs(base) if c != "BACKGROUND_Google"]  # not a real class
    pairs = [(p, label) for label, c in enumerate(classes) for p in _images_in(base / c)]
    return _seeded_split(base, pairs, split, classes)


def _read_cifar100(base: Path, split: str) -> _Read:
    meta = _load_pickle(base / "meta")
    batch = _load_pickle(base / split)
    if "fine_label_names" not in meta or "data" not in batch or "fine_labels" not in batch:
        raise _Corrupt(f"expected keys meta['fine_label_names'], {split}['data'] and {split}['fine_labels']")
    data = np.asarray(batch["data"])
    labels = [int(y) for y in batch["fine_labels"]]
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise _Corrupt(f"{base / split}: data {data.dtype} {data.shape} with {len(labels)} labels, expected N x 3072 uint8")
    pixels = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R, G, B planes -> N x H x W x C
    return _Read(labels, pixels=pixels, class_names=dict(enumerate(map(str, meta["fine_label_names"]))), complete=True)


def _read_dtd(base: Path, split: str) -> _Read:
    # Classes from the image folders (all 47 in every partition), so train and test agree even on a partial copy.
    classes = _subdirs(base / "images")
    index = {c: i for i, c in enumerate(classes)}
    split_file = base / "labels" / f"{split}1.txt"
    labels, paths = [], []
    for line in _lines(split_file):
        cls, _, _ = line.partition("/")
        if cls not in index:
            raise _Corrupt(f"{split_file}: class {cls!r} has no folder in {base / 'images'}")
        labels.append(index[cls])
        paths.append(base / "images" / line)
    return _Read(labels, paths=paths, class_names=dict(enumerate(classes)), complete=True)


def _read_eurosat(base: Path, split: str) -> _Read:
    classes = _subdirs(base)  # ImageFolder order
    pairs = [(p, label) for label, c in enumerate(classes) for p in _images_in(base / c)]
    return _seeded_split(base, pairs, split, classes)


def _read_flowers(base: Path, split: str) -> _Read:
    ids = _load_mat(base / "setid.mat", {"train": "trnid", "test": "tstid"}[split]).astype(np.int64).tolist()
    labels_1 = _load_mat(base / "imagelabels.mat", "labels").astype(np.int64).tolist()  # 1-based, by image id
    bad = [i for i in ids if not 1 <= i <= len(labels_1)]
    if bad:
        raise _Corrupt(f"setid.mat lists image id {bad[0]} but imagelabels.mat has {len(labels_1)} labels")
    labels = [labels_1[i - 1] - 1 for i in ids]
    return _Read(labels, paths=[base / "jpg" / f"image_{i:05d}.jpg" for i in ids])


def _read_food(base: Path, split: str) -> _Read:
    classes = sorted(_load_json(base / "meta" / "train.json"))
    index = {c: i for i, c in enumerate(classes)}
    labels, paths = [], []
    for cls, rel_paths in _load_json(base / "meta" / f"{split}.json").items():
        if cls not in index:
            raise _Corrupt(f"meta/{split}.json: class {cls!r} is not in meta/train.json")
        labels += [index[cls]] * len(rel_paths)
        paths += [base / "images" / f"{rel}.jpg" for rel in rel_paths]
    return _Read(labels, paths=paths, class_names=dict(enumerate(classes)), complete=True)


def _read_mnist(base: Path, split: str) -> _Read:
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(base / f"{prefix}-images-idx3-ubyte", ndim=3)
    labels = _read_idx(base / f"{prefix}-labels-idx1-ubyte", ndim=1)
    if len(images) != len(labels):
        raise _Corrupt(f"{prefix}: {len(images)} images but {len(labels)} labels")
    return _Read(labels.astype(np.int64).tolist(), pixels=images)


def _read_pet(base: Path, split: str) -> _Read:
    split_file = base / "annotations" / ("trainval.txt" if split == "train" else "test.txt")
    labels, paths, names = [], [], {}
    for line in _lines(split_file):
        fields = line.split()  # "<image id> <class id 1..37> <species> <breed id>"
        if len(fields) < 2 or not fields[1].isdigit():
            raise _Corrupt(f"{split_file}: cannot parse line {line!r}")
        label = int(fields[1]) - 1
        labels.append(label)
        paths.append(base / "images" / f"{fields[0]}.jpg")
        names[label] = fields[0].rsplit("_", 1)[0]  # "american_bulldog_10" -> "american_bulldog"
    return _Read(labels, paths=paths, class_names=names)


def _read_cars(base: Path, split: str) -> _Read:
    classes = [str(c) for c in _load_mat(base / "devkit" / "cars_meta.mat", "class_names")]
    if split == "train":
        annos_path, images = base / "devkit" / "cars_train_annos.mat", base / "cars_train"
    else:
        annos_path, images = base / "cars_test_annos_withlabels.mat", base / "cars_test"
    labels, paths = [], []
    try:
        for annotation in _load_mat(annos_path, "annotations"):
            labels.append(int(annotation["class"]) - 1)  # 1-based in the devkit
            paths.append(images / str(annotation["fname"]))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise _Corrupt(f"{annos_path}: annotations need 'fname' and 'class' fields ({e})") from e
    return _Read(labels, paths=paths, class_names=dict(enumerate(classes)), complete=True)


def _read_sun397(base: Path, split: str) -> _Read:
    rel_dirs = [line.strip("/") for line in _lines(base / "ClassName.txt")]  # "/a/abbey" -> "a/abbey"
    classes = [rel.split("/", 1)[-1] for rel in rel_dirs]  # "a/apartment_building/outdoor" -> "apartment_building/outdoor"
    pairs = [(p, label) for label, rel in enumerate(rel_dirs) for p in _images_in(base / rel)]
    return _seeded_split(base, pairs, split, classes)


# --------------------------------------------------------------------------------------------- the registry


def _as_is(raw: str) -> str:
    return raw


def _spaced(raw: str) -> str:
    return raw.replace("_", " ")


_EUROSAT_NAMES = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}


@dataclass(frozen=True)
class _Source:
    folder: str  # torchvision's folder, relative to the data root
    read: Callable[[Path, str], _Read]
    to_catalog: Callable[[str], str | None] | None  # the dataset's class name -> catalog name; None: not comparable
    official: tuple[int, int] | None  # (train, test) images of the complete release
    layout: str
    how_to_get: str


_SOURCES: dict[str, _Source] = {
    "aircraft": _Source(
        "fgvc-aircraft-2013b", _read_aircraft, _as_is, (3334, 3333),
        "fgvc-aircraft-2013b/\n  data/\n    variants.txt\n    images_variant_train.txt\n    images_variant_test.txt\n"
        "    images/<image id>.jpg",
        "Download https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz and extract it "
        "in the data root (it unpacks to fgvc-aircraft-2013b/), or run torchvision.datasets.FGVCAircraft(ROOT, "
        "download=True) once.",
    ),
    "caltech101": _Source(
        "caltech101/101_ObjectCategories", _read_caltech101, None, (6941, 1736),
        "caltech101/\n  101_ObjectCategories/\n    Faces/image_0001.jpg\n    Faces_easy/...\n"
        "    ... (101 class folders; BACKGROUND_Google is ignored)",
        "Download caltech-101.zip from https://data.caltech.edu/records/mzrjq-6wc02 , unzip it and extract "
        "caltech-101/101_ObjectCategories.tar.gz into ROOT/caltech101/. torchvision's Caltech101(download=True) is "
        "broken on some versions: older releases point at Google Drive files that no longer exist "
        "(https://github.com/pytorch/vision/issues/9097), so fetch the archive by hand from the Caltech data "
        "repository above.",
    ),
    "cifar100": _Source(
        "cifar-100-python", _read_cifar100, _spaced, (50000, 10000),
        "cifar-100-python/\n  train   (pickle: data N x 3072 uint8, fine_labels)\n  test\n  meta    (pickle: fine_label_names)",
        "Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it in the data root, or run "
        "torchvision.datasets.CIFAR100(ROOT, download=True) once.",
    ),
    "dtd": _Source(
        "dtd/dtd", _read_dtd, _as_is, (1880, 1880),
        "dtd/\n  dtd/\n    images/<class>/<class>_0001.jpg   (47 class folders)\n    labels/train1.txt\n"
        "    labels/test1.txt",
        "Download https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz and extract it into ROOT/dtd/ "
        "(the archive unpacks to dtd/, giving ROOT/dtd/dtd/images), or run torchvision.datasets.DTD(ROOT, "
        "download=True) once.",
    ),
    "eurosat": _Source(
        "eurosat/2750", _read_eurosat, _EUROSAT_NAMES.get, (21600, 5400),
        "eurosat/\n  2750/\n    AnnualCrop/AnnualCrop_1.jpg\n    ... (10 class folders: AnnualCrop, Forest, "
        "HerbaceousVegetation,\n         Highway, Industrial, Pasture, PermanentCrop, Residential, River, SeaLake)",
        "Download EuroSAT.zip (the RGB version) from https://huggingface.co/datasets/torchgeo/eurosat (the file "
        "torchvision uses) and unzip it into ROOT/eurosat/, giving ROOT/eurosat/2750/<class>/; or run "
        "torchvision.datasets.EuroSAT(ROOT, download=True) once.",
    ),
    "flowers": _Source(
        "flowers-102", _read_flowers, None, (1020, 6149),
        "flowers-102/\n  jpg/image_00001.jpg ... image_08189.jpg\n  imagelabels.mat   (labels, 1-based)\n"
        "  setid.mat         (trnid, valid, tstid)",
        "Download 102flowers.tgz, imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ "
        "into ROOT/flowers-102/ and extract the .tgz there (it gives jpg/), or run torchvision.datasets.Flowers102(ROOT, "
        "download=True) once.",
    ),
    "food": _Source(
        "food-101", _read_food, _spaced, (75750, 25250),
        "food-101/\n  meta/train.json\n  meta/test.json\n  images/<class>/<id>.jpg",
        "Download http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz and extract it in the data root (it unpacks to "
        "food-101/), or run torchvision.datasets.Food101(ROOT, download=True) once.",
    ),
    "mnist": _Source(
        "MNIST/raw", _read_mnist, None, (60000, 10000),
        "MNIST/\n  raw/\n    train-images-idx3-ubyte\n    train-labels-idx1-ubyte\n    t10k-images-idx3-ubyte\n"
        "    t10k-labels-idx1-ubyte",
        "Run torchvision.datasets.MNIST(ROOT, download=True) once (it writes MNIST/raw/), or download the four "
        "*-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ into ROOT/MNIST/raw/ and gunzip them "
        "(the uncompressed files are read).",
    ),
    "oxford_pet": _Source(
        "oxford-iiit-pet", _read_pet, _spaced, (3680, 3669),
        "oxford-iiit-pet/\n  annotations/trainval.txt\n  annotations/test.txt\n  images/<Breed_name>_<n>.jpg",
        "Download https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz and "
        "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz and extract both into "
        "ROOT/oxford-iiit-pet/, or run torchvision.datasets.OxfordIIITPet(ROOT, download=True) once.",
    ),
    "cars": _Source(
        "stanford_cars", _read_cars, _as_is, (8144, 8041),
        "stanford_cars/\n  devkit/cars_meta.mat\n  devkit/cars_train_annos.mat\n  cars_train/00001.jpg ...\n"
        "  cars_test/00001.jpg ...\n  cars_test_annos_withlabels.mat",
        "No automatic download: the original host (ai.stanford.edu/~jkrause/cars) is gone, and "
        "torchvision.datasets.StanfordCars(download=True) fails (HTTP 404 on older versions, an explicit error on newer "
        "ones; see https://github.com/pytorch/vision/issues/7545). Fetch it by hand from a Kaggle mirror of Stanford "
        "Cars (cars_train, cars_test, devkit) plus cars_test_annos_withlabels.mat (the test labels, linked from that "
        "issue), and arrange the files in the layout above. Some mirrors nest the images one level deeper "
        "(cars_train/cars_train/*.jpg): move them up.",
    ),
    "sun397": _Source(
        "SUN397", _read_sun397, _spaced, (87003, 21751),
        "SUN397/\n  ClassName.txt   (one class a line, e.g. /a/abbey)\n  a/abbey/sun_*.jpg\n"
        "  a/apartment_building/outdoor/sun_*.jpg\n  ... (397 class folders)",
        "Download http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz and extract it in the data root (it "
        "unpacks to SUN397/), or run torchvision.datasets.SUN397(ROOT, download=True) once. There is no official "
        "split here: a seeded 80/20 split over the sorted file list is used.",
    ),
}


def _source(name: str) -> _Source:
    if name not in _SOURCES:
        raise ValueError(f"unknown MTIL dataset {name!r}; valid names: {', '.join(MTIL_DATASETS)}")
    return _SOURCES[name]


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def _validate(read: _Read, catalog: Sequence[str], to_catalog: Callable[[str], str | None] | None) -> None:
    n = len(catalog)
    if read.complete and len(read.class_names) != n:
        raise _Corrupt(f"found {len(read.class_names)} classes, expected {n} (partial download or extraction?)")
    bad = next((y for y in read.labels if not 0 <= y < n), None)
    if bad is not None:
        raise _Corrupt(f"label {bad} is outside 0..{n - 1}")
    if to_catalog is None:
        return
    for label, raw in sorted(read.class_names.items()):
        mapped = to_catalog(raw)
        if mapped is None or _norm(mapped) != _norm(catalog[label]):
            raise _Corrupt(
                f"class {label} is {raw!r} here but {catalog[label]!r} in the catalog: the class order differs "
                "from the reference"
            )


# --------------------------------------------------------------------------------------------- public entry points


def load_split(name: str, root: str | Path, split: str) -> LabeledImages:
    """One split (``"train"`` or ``"test"``) of an MTIL dataset under ``root``; images are opened lazily.

    Raises :class:`DatasetMissingError` when the dataset's folder is absent, :class:`DatasetBrokenError` when its
    files are incomplete or disagree with the catalog, and ``ValueError`` for an unknown name or split. Images listed
    by split files are not stat-ed here (see :func:`check`).
    """
    source = _source(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    task = get_task(name)
    base = Path(root).expanduser() / source.folder
    if not base.is_dir():
        raise DatasetMissingError(name, base, source.layout, source.how_to_get)
    try:
        read = source.read(base, split)
        _validate(read, task.classnames, source.to_catalog)
    except _Corrupt as e:
        raise DatasetBrokenError(name, base, str(e), source.layout) from None
    except OSError as e:  # e.g. a permission error on a split file
        raise DatasetBrokenError(name, base, f"{type(e).__name__}: {e}", source.layout) from None
    return LabeledImages(name, split, task.classnames, read.labels, paths=read.paths, pixels=read.pixels)


def _unusable(images: LabeledImages) -> str | None:
    """Why a loaded split cannot be used (no images, listed files absent, first image undecodable), or None."""
    if len(images) == 0:
        return f"{images.split}: no images"
    if images.paths is not None:
        absent = [p for p in images.paths if not p.is_file()]
        if absent:
            return f"{images.split}: {len(absent)} of {len(images)} listed images do not exist, e.g. {absent[0]}"
    try:
        images[0]
    except Exception as e:  # any decoder error means the files are not what they should be
        return f"{images.split}: cannot decode the first image: {type(e).__name__}: {e}"
    return None


def check_one(name: str, root: Path, source, load: Callable[[str, Path, str], LabeledImages]) -> CheckResult:
    """Found / missing / broken for one dataset: ``load(name, root, split)`` for every split, then each split checked
    as usable. ``source`` gives the folder, layout, how to obtain it and the official (train, test) counts; shared by
    the MTIL and CIL readers."""

    def result(status: str, counts: dict[str, int], detail: str) -> CheckResult:
        return CheckResult(name, status, counts, source.folder, source.layout, source.how_to_get, detail)

    counts: dict[str, int] = {}
    problems: list[str] = []
    for split in SPLITS:
        try:
            images = load(name, root, split)
        except DatasetMissingError as e:
            return result("missing", {}, f"{e.path} does not exist")
        except DatasetBrokenError as e:
            problems.append(e.problem)  # usually names its file; the same problem in both splits is reported once
            continue
        except Exception as e:  # a diagnostic reports any unreadable file instead of crashing on it
            problems.append(f"{split}: {type(e).__name__}: {e}")
            continue
        counts[split] = len(images)
        problem = _unusable(images)
        if problem:
            problems.append(problem)
    if problems:
        return result("broken", counts, "; ".join(dict.fromkeys(problems)))
    return result("found", counts, _count_note(source.official, counts))


def _count_note(official: tuple[int, int] | None, counts: dict[str, int]) -> str:
    if official is None or tuple(counts[split] for split in SPLITS) == official:
        return ""
    expected = ", ".join(f"{split} {n}" for split, n in zip(SPLITS, official, strict=True))
    return f"counts differ from the complete release ({expected})"


def folder(name: str) -> str:
    """The dataset's folder under the data root (torchvision's)."""
    return _source(name).folder


def official_counts(name: str) -> tuple[int, int] | None:
    """(train, test) images of the dataset's complete release (None where there is no official split)."""
    return _source(name).official


def check(root: str | Path, names: Sequence[str] = MTIL_DATASETS) -> list[CheckResult]:
    """Inspect every MTIL dataset (or those of ``names``) under ``root``: found / missing / broken, with image counts
    per split.

    Broken covers unreadable or inconsistent metadata (bad pickle/.mat/json, label out of range, class list not the
    catalog's), listed images that do not exist, empty splits, and a first image per split that cannot be decoded.
    """
    root = Path(root).expanduser()
    return [check_one(name, root, _SOURCES[name], load_split) for name in names]
