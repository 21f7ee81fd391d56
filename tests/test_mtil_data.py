"""MTIL dataset readers on tiny fixtures written in each dataset's real on-disk layout (torchvision's folders)."""

from __future__ import annotations

import json
import pickle
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.data_cmd import data_app
from pipeline.datasets.catalog import get_task, mtil_task_names
from pipeline.datasets.mtil import (
    MTIL_DATASETS,
    CheckResult,
    DatasetBrokenError,
    DatasetMissingError,
    LabeledImages,
    check,
    load_split,
)

Expected = dict[str, list[tuple[str, int]]]  # split -> [(image path relative to the dataset folder, or "#index"), label]

# Caltech101's real category folders (BACKGROUND_Google aside), in sorted() order.
CALTECH_FOLDERS = [
    "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes", "anchor", "ant", "barrel", "bass",
    "beaver", "binocular", "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side",
    "ceiling_fan", "cellphone", "chair", "chandelier", "cougar_body", "cougar_face", "crab", "crayfish", "crocodile",
    "crocodile_head", "cup", "dalmatian", "dollar_bill", "dolphin", "dragonfly", "electric_guitar", "elephant", "emu",
    "euphonium", "ewer", "ferry", "flamingo", "flamingo_head", "garfield", "gerenuk", "gramophone", "grand_piano",
    "hawksbill", "headphone", "hedgehog", "helicopter", "ibis", "inline_skate", "joshua_tree", "kangaroo", "ketch",
    "lamp", "laptop", "llama", "lobster", "lotus", "mandolin", "mayfly", "menorah", "metronome", "minaret", "nautilus",
    "octopus", "okapi", "pagoda", "panda", "pigeon", "pizza", "platypus", "pyramid", "revolver", "rhino", "rooster",
    "saxophone", "schooner", "scissors", "scorpion", "sea_horse", "snoopy", "soccer_ball", "stapler", "starfish",
    "stegosaurus", "stop_sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella", "watch", "water_lilly",
    "wheelchair", "wild_cat", "windsor_chair", "wrench", "yin_yang",
]
EUROSAT_FOLDERS = [
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
]


def names(task: str) -> tuple[str, ...]:
    return get_task(task).classnames


def image(path: Path, value: int = 128, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, (8, 6), color).save(path, "JPEG" if path.suffix == ".jpg" else "PNG")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def seeded_expectation(pairs: list[tuple[str, int]]) -> Expected:
    """The documented rule, recomputed here: sorted pairs, randperm(seed 42), first int(0.8 n) are train."""
    pairs = sorted(pairs)
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(42)).tolist()
    k = int(0.8 * len(pairs))
    return {"train": sorted(pairs[i] for i in perm[:k]), "test": sorted(pairs[i] for i in perm[k:])}


# ------------------------------------------------------------------------------------------ fixture builders


def make_aircraft(root: Path) -> Expected:
    data = root / "fgvc-aircraft-2013b" / "data"
    classes = names("aircraft")
    write(data / "variants.txt", "\n".join(classes) + "\n")
    rows = {
        "train": [("1000001", "707-320"), ("1000002", "Cessna 172"), ("1000003", "F/A-18"), ("1000004", "Yak-42")],
        "test": [("2000001", "A380"), ("2000002", "Cessna 172")],
    }
    expected: Expected = {}
    for split, items in rows.items():
        write(data / f"images_variant_{split}.txt", "".join(f"{i} {v}\n" for i, v in items))
        for i, _ in items:
            image(data / "images" / f"{i}.jpg")
        expected[split] = [(f"data/images/{i}.jpg", classes.index(v)) for i, v in items]
    write(data / "images_variant_val.txt", "3000001 A380\n")  # another split: must not leak in
    return expected


def make_caltech101(root: Path, seed: int = 0) -> Expected:
    base = root / "caltech101" / "101_ObjectCategories"
    counts = {"Faces": 2, "Faces_easy": 2, "car_side": 3, "yin_yang": 2, "water_lilly": 1}
    files = [f"{c}/image_{k:04d}.jpg" for c, n in counts.items() for k in range(1, n + 1)]
    files += ["BACKGROUND_Google/image_0001.jpg", "BACKGROUND_Google/image_0002.jpg"]
    folders = [*CALTECH_FOLDERS, "BACKGROUND_Google"]
    rng = random.Random(seed)  # creation order varies with the seed; the split must not
    rng.shuffle(folders)
    rng.shuffle(files)
    for folder in folders:
        (base / folder).mkdir(parents=True, exist_ok=True)
    for k, rel in enumerate(files):
        image(base / rel, mode="L" if k % 2 else "RGB")  # Caltech101 has grayscale JPEGs too
    pairs = [(f, CALTECH_FOLDERS.index(f.split("/")[0])) for f in files if not f.startswith("BACKGROUND")]
    return seeded_expectation(pairs)


def make_cifar100(root: Path) -> Expected:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    meta = {"fine_label_names": [n.replace(" ", "_") for n in names("cifar100")], "coarse_label_names": ["x"] * 20}
    (base / "meta").write_bytes(pickle.dumps(meta))
    expected: Expected = {}
    for split, labels in {"train": [0, 99, 47, 3, 3], "test": [5, 0]}.items():
        # Image i: flat red plane 40*i, green plane 1, blue plane 200 (rows are R, G, B planes of 1024 bytes).
        data = np.stack([np.concatenate([np.full(1024, 40 * i), np.full(1024, 1), np.full(1024, 200)])
                         for i in range(len(labels))]).astype(np.uint8)
        batch = {"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels), "filenames": ["f"] * len(labels)}
        (base / split).write_bytes(pickle.dumps(batch))
        expected[split] = [(f"#{i}", y) for i, y in enumerate(labels)]
    return expected


def make_dtd(root: Path) -> Expected:
    base = root / "dtd" / "dtd"
    for cls in names("dtd"):
        (base / "images" / cls).mkdir(parents=True)
    rows = {
        "train1": ["banded/banded_0001.jpg", "polka-dotted/polka-dotted_0003.jpg", "zigzagged/zigzagged_0002.jpg"],
        "test1": ["banded/banded_0002.jpg", "woven/woven_0001.jpg"],
        "val1": ["banded/banded_0009.jpg"],
        "train2": ["woven/woven_0001.jpg"],
    }
    for split, files in rows.items():
        write(base / "labels" / f"{split}.txt", "\n".join(files) + "\n")
        for f in files:
            image(base / "images" / f)
    classes = list(names("dtd"))
    return {split: [(f"images/{f}", classes.index(f.split("/")[0])) for f in rows[f"{split}1"]] for split in ("train", "test")}


def make_eurosat(root: Path, seed: int = 0) -> Expected:
    base = root / "eurosat" / "2750"
    files = [f"{c}/{c}_{k}.jpg" for c, n in {"AnnualCrop": 3, "SeaLake": 4, "Highway": 3}.items() for k in range(1, n + 1)]
    folders = list(EUROSAT_FOLDERS)
    rng = random.Random(seed)
    rng.shuffle(folders)
    rng.shuffle(files)
    for folder in folders:
        (base / folder).mkdir(parents=True, exist_ok=True)
    for rel in files:
        image(base / rel)
    return seeded_expectation([(f, EUROSAT_FOLDERS.index(f.split("/")[0])) for f in files])


FLOWER_LABELS_1_BASED = [3, 1, 102, 3, 50, 1, 2, 77]  # of image_00001 .. image_00008


def make_flowers(root: Path, labels_1_based: list[int] = FLOWER_LABELS_1_BASED) -> Expected:
    base = root / "flowers-102"
    base.mkdir(parents=True)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([labels_1_based], dtype=np.float64)})
    ids = {"trnid": [1, 2, 3], "tstid": [4, 5, 6, 7], "valid": [8]}
    scipy.io.savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    for i in range(1, len(labels_1_based) + 1):
        image(base / "jpg" / f"image_{i:05d}.jpg")
    return {split: [(f"jpg/image_{i:05d}.jpg", labels_1_based[i - 1] - 1) for i in ids[key]]
            for split, key in (("train", "trnid"), ("test", "tstid"))}


def make_food(root: Path) -> Expected:
    base = root / "food-101"
    raw = [n.replace(" ", "_") for n in names("food")]
    listed = {
        "train": {"apple_pie": ["apple_pie/1001", "apple_pie/1002"], "waffles": ["waffles/7"],
                  "macaroni_and_cheese": ["macaroni_and_cheese/42"]},
        "test": {"apple_pie": ["apple_pie/2001"], "waffles": ["waffles/8", "waffles/9"]},
    }
    expected: Expected = {}
    for split, files in listed.items():
        # Keys in reverse order: the classes are the *sorted* keys of train.json, not their file order.
        meta = {c: files.get(c, []) for c in reversed(raw)} if split == "train" else files
        write(base / "meta" / f"{split}.json", json.dumps(meta))
        for rel_paths in files.values():
            for rel in rel_paths:
                image(base / "images" / f"{rel}.jpg")
        expected[split] = [(f"images/{rel}.jpg", raw.index(c)) for c in meta for rel in meta[c]]
    return expected


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path) -> Expected:
    base = root / "MNIST" / "raw"
    base.mkdir(parents=True)
    expected: Expected = {}
    for prefix, split, labels in (("train", "train", [5, 0, 4, 1, 9]), ("t10k", "test", [7, 2, 1])):
        pixels = np.stack([np.full((28, 28), 50 * i) for i in range(len(labels))])
        pixels[:, 0, 0] = 255  # a corner that differs from the rest, to check orientation is kept
        write_idx(base / f"{prefix}-images-idx3-ubyte", pixels)
        write_idx(base / f"{prefix}-labels-idx1-ubyte", np.array(labels))
        expected[split] = [(f"#{i}", y) for i, y in enumerate(labels)]
    return expected


def make_oxford_pet(root: Path) -> Expected:
    base = root / "oxford-iiit-pet"
    rows = {
        "trainval": [("Abyssinian_1", 1, 1, 1), ("american_bulldog_10", 2, 2, 1), ("yorkshire_terrier_5", 37, 2, 25),
                     ("great_pyrenees_3", 16, 2, 13)],
        "test": [("Abyssinian_2", 1, 1, 1), ("Bengal_7", 6, 1, 2)],
    }
    for split, items in rows.items():
        write(base / "annotations" / f"{split}.txt", "".join(f"{i} {c} {s} {b}\n" for i, c, s, b in items))
        for i, *_ in items:
            image(base / "images" / f"{i}.jpg")
    return {split: [(f"images/{i}.jpg", c - 1) for i, c, *_ in rows[key]]
            for split, key in (("train", "trainval"), ("test", "test"))}


def cars_annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    return np.array([(np.uint8(1), np.uint8(2), np.uint16(30), np.uint16(40), np.uint8(c), f) for f, c in rows],
                    dtype=[(f, "O") for f in fields])


def make_cars(root: Path, class_names: list[str] | None = None) -> Expected:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    class_names = list(names("cars")) if class_names is None else class_names
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(class_names, dtype=object)})
    rows = {"train": [("00001.jpg", 1), ("00002.jpg", 196), ("00003.jpg", 14)], "test": [("00001.jpg", 3), ("00002.jpg", 1)]}
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": cars_annotations(rows["train"])})
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": cars_annotations(rows["test"])})
    for split, items in rows.items():
        for f, _ in items:
            image(base / f"cars_{split}" / f)
    return {split: [(f"cars_{split}/{f}", c - 1) for f, c in items] for split, items in rows.items()}


def sun397_dir(name: str) -> str:
    raw = name.replace(" ", "_")
    return f"{raw[0]}/{raw}"


def make_sun397(root: Path, seed: int = 0) -> Expected:
    base = root / "SUN397"
    classes = names("sun397")
    write(base / "ClassName.txt", "".join(f"/{sun397_dir(c)}\n" for c in classes))
    for c in classes:
        (base / sun397_dir(c)).mkdir(parents=True, exist_ok=True)
    picked = {0: 3, classes.index("apartment building/outdoor"): 4, len(classes) - 1: 5}  # 12: 0.8 n is not whole
    files = [(f"{sun397_dir(classes[y])}/sun_{y:03d}{k}.jpg", y) for y, n in picked.items() for k in range(n)]
    random.Random(seed).shuffle(files)
    for rel, _ in files:
        image(base / rel)
    return seeded_expectation(files)


BUILDERS: dict[str, Callable[[Path], Expected]] = {
    "aircraft": make_aircraft, "caltech101": make_caltech101, "cifar100": make_cifar100, "dtd": make_dtd,
    "eurosat": make_eurosat, "flowers": make_flowers, "food": make_food, "mnist": make_mnist,
    "oxford_pet": make_oxford_pet, "cars": make_cars, "sun397": make_sun397,
}
FOLDERS = {
    "aircraft": "fgvc-aircraft-2013b", "caltech101": "caltech101/101_ObjectCategories", "cifar100": "cifar-100-python",
    "dtd": "dtd/dtd", "eurosat": "eurosat/2750", "flowers": "flowers-102", "food": "food-101", "mnist": "MNIST/raw",
    "oxford_pet": "oxford-iiit-pet", "cars": "stanford_cars", "sun397": "SUN397",
}


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> tuple[Path, dict[str, Expected]]:
    root = tmp_path_factory.mktemp("mtil")
    return root, {name: build(root) for name, build in BUILDERS.items()}


def items(ds: LabeledImages, base: Path) -> list[tuple[str, int]]:
    ids = [p.relative_to(base).as_posix() for p in ds.paths] if ds.paths is not None else [f"#{i}" for i in range(len(ds))]
    return list(zip(ids, ds.labels, strict=True))


# ------------------------------------------------------------------------------------------ tests


def test_dataset_keys_follow_the_catalog():
    assert MTIL_DATASETS == tuple(mtil_task_names())
    assert set(BUILDERS) == set(MTIL_DATASETS)
    # The fixtures' own facts: the real Caltech101 folders are 101 and already in sorted() order.
    assert len(CALTECH_FOLDERS) == 101 and sorted(CALTECH_FOLDERS) == CALTECH_FOLDERS
    assert sorted(EUROSAT_FOLDERS) == EUROSAT_FOLDERS


@pytest.mark.parametrize("name", list(BUILDERS))
def test_load_split_reads_each_dataset_in_torchvision_layout(full_root, name):
    root, expected = full_root
    for split in ("train", "test"):
        ds = load_split(name, str(root), split)  # str roots work as well as Paths
        assert items(ds, root / FOLDERS[name]) == expected[name][split]
        assert ds.classnames == names(name)
        for k in range(len(ds)):
            img, label = ds[k]
            assert isinstance(img, Image.Image) and img.mode == "RGB"
            assert label == ds.labels[k] and 0 <= label < len(names(name))


def test_labels_are_zero_based_and_match_catalog_names(full_root):
    root, _ = full_root

    def named(name: str, split: str) -> dict[str, str]:
        ds = load_split(name, root, split)
        return {key: ds.classnames[y] for key, y in items(ds, root / FOLDERS[name])}

    flowers = load_split("flowers", root, "train")
    assert flowers.labels[0] == 2 and flowers.classnames[2] == "canterbury bells"  # 1-based label 3 in the .mat
    assert named("flowers", "train")["jpg/image_00003.jpg"] == names("flowers")[101]
    caltech = {**named("caltech101", "train"), **named("caltech101", "test")}
    assert caltech["Faces/image_0001.jpg"] == "off-center face"
    assert caltech["Faces_easy/image_0002.jpg"] == "centered face"
    assert caltech["car_side/image_0003.jpg"] == "side of a car"
    assert caltech["yin_yang/image_0001.jpg"] == "yin and yang symbol"
    assert not any(k.startswith("BACKGROUND_Google") for k in caltech)
    eurosat = {**named("eurosat", "train"), **named("eurosat", "test")}
    assert eurosat["SeaLake/SeaLake_1.jpg"] == "lake or sea" and eurosat["AnnualCrop/AnnualCrop_2.jpg"] == "annual crop land"
    assert eurosat["Highway/Highway_3.jpg"] == "highway or road"
    assert named("aircraft", "train")["data/images/1000003.jpg"] == "F/A-18"
    assert named("oxford_pet", "train")["images/american_bulldog_10.jpg"] == "American Bulldog"
    assert named("cars", "train")["cars_train/00002.jpg"] == names("cars")[195]
    assert named("food", "train")["images/macaroni_and_cheese/42.jpg"] == "macaroni and cheese"
    assert named("dtd", "train")["images/polka-dotted/polka-dotted_0003.jpg"] == "polka-dotted"
    sun = {**named("sun397", "train"), **named("sun397", "test")}
    assert {v for k, v in sun.items() if k.startswith("a/apartment_building/outdoor/")} == {"apartment building/outdoor"}
    assert load_split("mnist", root, "train").labels == [5, 0, 4, 1, 9]
    assert load_split("cifar100", root, "train").labels == [0, 99, 47, 3, 3]


def test_official_splits_only(full_root):
    root, _ = full_root
    dtd = {p.name for split in ("train", "test") for p in load_split("dtd", root, split).paths}
    assert "banded_0009.jpg" not in dtd  # val1 is not part of train
    assert len(load_split("dtd", root, "train")) == 3  # partition 1, not train2
    assert len(load_split("aircraft", root, "train")) == 4  # images_variant_val.txt not added
    assert [len(load_split("flowers", root, s)) for s in ("train", "test")] == [3, 4]  # valid (image 8) left out


def test_array_datasets_decode_to_rgb(full_root):
    root, _ = full_root
    img, _ = load_split("cifar100", root, "train")[1]
    assert img.size == (32, 32) and img.getpixel((5, 5)) == (40, 1, 200)  # R, G, B planes land in the right channels
    img, label = load_split("mnist", root, "test")[2]
    assert (img.mode, img.size, label) == ("RGB", (28, 28), 1)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((3, 1)) == (100, 100, 100)


@pytest.mark.parametrize("name", ["caltech101", "eurosat", "sun397"])
def test_seeded_split_is_deterministic_sorted_disjoint_and_complete(tmp_path, monkeypatch, name):
    build = BUILDERS[name]
    roots = [tmp_path / "a", tmp_path / "b"]
    expected = [build(roots[0], seed=1), build(roots[1], seed=2)]  # files created in different orders
    assert expected[0] == expected[1]
    base = roots[1] / FOLDERS[name]

    def split_of(root: Path) -> Expected:
        return {s: sorted(items(load_split(name, root, s), root / FOLDERS[name])) for s in ("train", "test")}

    first = split_of(roots[0])
    assert first == expected[0]  # the documented rule: sorted pairs, randperm(seed 42), first int(0.8 n) are train
    assert split_of(roots[1]) == first and split_of(roots[0]) == first
    # Listing order must not matter either: serve every directory listing in reverse.
    listing = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self), reverse=True)))
    assert split_of(roots[1]) == first
    train, test = ({key for key, _ in first[s]} for s in ("train", "test"))
    all_files = {p.relative_to(base).as_posix() for p in base.rglob("*.jpg") if not p.parent.name.startswith("BACKGROUND")}
    assert not train & test and train | test == all_files
    assert (len(train), len(test)) == {"caltech101": (8, 2), "eurosat": (8, 2), "sun397": (9, 3)}[name]


def test_unknown_name_or_split_and_missing_dataset(tmp_path):
    with pytest.raises(ValueError, match="valid names: aircraft, caltech101.*sun397"):
        load_split("imagenet", tmp_path, "train")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_split("mnist", tmp_path, "val")
    with pytest.raises(DatasetMissingError) as err:
        load_split("cars", tmp_path, "train")
    message = str(err.value)
    assert "cars" in message and str(tmp_path / "stanford_cars") in message
    assert "cars_test_annos_withlabels.mat" in message and "Kaggle" in message and "issues/7545" in message
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DatasetMissingError, match=r"data\.caltech\.edu"):
        load_split("caltech101", tmp_path, "test")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def swap_first_two_cars(root: Path) -> None:
    swapped = list(names("cars"))
    swapped[0], swapped[1] = swapped[1], swapped[0]
    make_cars(root, class_names=swapped)


BROKEN = {
    "truncated pickle": ("cifar100", make_cifar100, lambda r: truncate(r / "cifar-100-python" / "train"), "cannot unpickle"),
    "truncated idx": ("mnist", make_mnist, lambda r: truncate(r / "MNIST/raw/train-images-idx3-ubyte"), "header promises"),
    "label out of range": ("flowers", lambda r: make_flowers(r, [3, 1, 103, 3, 50, 1, 2, 77]), None, "label 102 is outside"),
    "class order differs": ("cars", swap_first_two_cars, None, "class order differs"),
    "class folder missing": ("dtd", make_dtd, lambda r: (r / "dtd/dtd/images/veined").rmdir(), "found 46 classes"),
    "unreadable mat": ("flowers", make_flowers, lambda r: write(r / "flowers-102" / "setid.mat", "not a mat file"), "cannot read"),
    "split file missing": ("food", make_food, lambda r: (r / "food-101/meta/test.json").unlink(), "test.json does not exist"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_datasets_raise_and_check_reports_them(tmp_path, case):
    name, build, corrupt, message = BROKEN[case]
    build(tmp_path)
    if corrupt:
        corrupt(tmp_path)
    with pytest.raises(DatasetBrokenError, match=message) as err:
        for split in ("train", "test"):
            load_split(name, tmp_path, split)
    assert isinstance(err.value, ValueError) and err.value.dataset == name
    result = next(r for r in check(tmp_path) if r.name == name)
    assert result.status == "broken" and message in result.detail


@pytest.fixture
def partial_root(tmp_path) -> Path:
    make_mnist(tmp_path)
    make_flowers(tmp_path)
    make_food(tmp_path)
    make_aircraft(tmp_path)
    (tmp_path / "fgvc-aircraft-2013b/data/images/1000002.jpg").unlink()  # listed in the split file, not on disk
    make_cifar100(tmp_path)
    truncate(tmp_path / "cifar-100-python" / "train")
    return tmp_path


def test_check_reports_found_missing_and_broken_with_counts(partial_root):
    results = {r.name: r for r in check(partial_root)}
    assert list(results) == list(MTIL_DATASETS)
    assert all(isinstance(r, CheckResult) for r in results.values())
    assert {n for n, r in results.items() if r.status == "found"} == {"mnist", "flowers", "food"}
    assert {n for n, r in results.items() if r.status == "broken"} == {"aircraft", "cifar100"}
    assert results["mnist"].counts == {"train": 5, "test": 3}
    assert results["flowers"].counts == {"train": 3, "test": 4}
    assert results["food"].counts == {"train": 4, "test": 3}
    assert "counts differ from the complete release (train 60000, test 10000)" in results["mnist"].detail
    aircraft = results["aircraft"]
    assert aircraft.counts == {"train": 4, "test": 2} and "1 of 4 listed images do not exist" in aircraft.detail
    assert "1000002.jpg" in aircraft.detail
    cifar = results["cifar100"]
    assert cifar.counts == {"test": 2} and "cannot unpickle" in cifar.detail and "train" in cifar.detail
    cars = results["cars"]
    assert (cars.status, cars.counts, cars.folder) == ("missing", {}, "stanford_cars")
    assert str(partial_root / "stanford_cars") in cars.detail
    assert "cars_meta.mat" in cars.expected_layout and "Kaggle" in cars.how_to_get
    assert "data.caltech.edu" in results["caltech101"].how_to_get


def test_check_finds_every_dataset_of_a_complete_root(full_root):
    root, expected = full_root
    results = check(root)
    assert [r.status for r in results] == ["found"] * 11, [(r.name, r.detail) for r in results if r.status != "found"]
    for r in results:
        assert r.counts == {s: len(expected[r.name][s]) for s in ("train", "test")}
        assert r.folder == FOLDERS[r.name]


def test_cli_check_exit_codes_and_how_to(partial_root, full_root):
    runner = CliRunner()
    result = runner.invoke(data_app, ["check", "--data-root", str(partial_root)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    out = result.output
    assert "stanford_cars" in out and "missing" in out and "broken" in out
    assert "cars: missing" in out and "Kaggle" in out and "cars_test_annos_withlabels.mat" in out
    assert "1 of 4 listed images do not exist" in out
    assert "mnist: note: counts differ" in out

    result = runner.invoke(data_app, ["check", "--data-root", str(full_root[0]), "--benchmark", "mtil"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.count("found") == 11 and "how to get it" not in result.output

    assert runner.invoke(data_app, ["check"]).exit_code == 2  # --data-root is required
