"""CIL datasets read from tiny fixtures in their real on-disk layouts, and the CIL settings built on them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.data_cmd import data_app
from pipeline.datasets import catalog, cil
from pipeline.datasets.mtil import DatasetBrokenError, DatasetMissingError
from pipeline.datasets.splits import dataset_split, step_dataset, task_dataset
from tests.test_mtil_data import make_cifar100

WNIDS = catalog._load("cil.json")["tinyimagenet_wnids"]


def make_cifar10(root: Path, train=(0, 9, 3, 3, 7), test=(5, 0)) -> None:
    """Five data batches (one image each but the first, which holds the rest) and a test batch; image i of a
    batch has a flat red plane 30·i."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": list(catalog.cil_dataset_classnames("cifar10"))}))
    parts = {"data_batch_1": train[:1], **{f"data_batch_{i}": train[i - 1 : i] for i in range(2, 5)},
             "data_batch_5": train[4:], "test_batch": test}
    for name, labels in parts.items():
        data = np.stack([np.concatenate([np.full(1024, 30 * i), np.full(1024, 1), np.full(1024, 200)])
                         for i in range(len(labels))]).astype(np.uint8)
        (base / name).write_bytes(pickle.dumps({"data": data, "labels": list(labels)}))


def make_tinyimagenet(root: Path, per_class: int = 1, val=tuple((label, 1) for label in range(200))) -> Path:
    """wnids.txt in the release's order, ``per_class`` 8x8 JPEGs under train/<wnid>/images, and val images of
    (label, count) annotated in val_annotations.txt. Returns the folder."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for label, wnid in enumerate(WNIDS):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (label, i, 7)).save(folder / f"{wnid}_{i}.JPEG", "JPEG")
    lines, n = [], 0
    for label, count in val:
        for _ in range(count):
            Image.new("RGB", (8, 8), (label, 0, 0)).save(base / "val" / "images" / f"val_{n}.JPEG", "JPEG")
            lines.append(f"val_{n}.JPEG\t{WNIDS[label]}\t0\t0\t8\t8")
            n += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def make_cifar100_full(root: Path, train_per_class: int = 1, test_per_class: int = 1) -> None:
    """cifar-100-python/ with every class: image i of a split has a flat red plane (7·label + i) % 256."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    names = list(catalog.cil_dataset_classnames("cifar100"))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["x"] * 20}))
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = [y for y in range(100) for _ in range(per_class)]
        data = np.stack([np.concatenate([np.full(1024, (7 * y + i) % 256), np.full(1024, 1), np.full(1024, 200)])
                         for i, y in enumerate(labels)]).astype(np.uint8)
        (base / split).write_bytes(pickle.dumps({"data": data, "fine_labels": labels}))


@pytest.fixture(scope="module")
def cil_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cil")
    make_cifar10(root)
    make_cifar100(root)
    make_tinyimagenet(root, val=((0, 2), (199, 1), (5, 1)))
    return root


# --------------------------------------------------------------------------- readers


def test_cifar10_reads_the_five_batches_in_order(cil_root):
    train, test = (cil.load_split("cifar10", cil_root, s) for s in ("train", "test"))
    assert train.labels == [0, 9, 3, 3, 7] and test.labels == [5, 0]
    assert train.classnames[9] == "truck"
    # data_batch_5 holds train[4:] as its image 0 (red 0); data_batch_1's image 0 is red 0 too, test image 1 red 30
    assert np.asarray(test[1][0])[0, 0].tolist() == [30, 1, 200]
    assert test[1][0].mode == "RGB" and test[1][0].size == (32, 32)


def test_tinyimagenet_labels_are_wnids_txt_line_numbers_and_val_is_the_test_split(cil_root):
    train = cil.load_split("tinyimagenet", cil_root, "train")
    assert len(train) == 200 and train.labels == list(range(200))
    assert train.paths[7].parent.parent.name == WNIDS[7]  # train/<wnid>/images/<file>
    test = cil.load_split("tinyimagenet", cil_root, "test")
    assert test.labels == [0, 0, 199, 5]
    assert np.asarray(test[2][0])[0, 0, 0] in range(196, 203)  # val_2 was written with red = its label, 199 (JPEG)
    # names are CLIP's ImageNet names of the wnids, in wnids.txt order
    assert train.classnames[0] == "Egyptian Mau" and len(train.classnames) == 200


def test_cifar100_keeps_the_harness_names_and_original_labels(cil_root):
    train = dataset_split(catalog.get_setting("cifar100-10"), "train", str(cil_root))
    assert train.labels == [0, 99, 47, 3, 3] and train.classnames[1] == "aquarium_fish"


def test_missing_and_broken_datasets_say_what_and_how(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        cil.load_split("tinyimagenet", tmp_path, "train")
    assert str(tmp_path / "tiny-imagenet-200") in str(e.value) and "tiny-imagenet-200.zip" in str(e.value)
    assert "val/val_annotations.txt" in str(e.value)
    base = make_tinyimagenet(tmp_path)
    (base / "wnids.txt").write_text("\n".join(WNIDS[:150]) + "\n")  # a partial copy
    with pytest.raises(DatasetBrokenError, match="found 150 classes, expected 200"):
        cil.load_split("tinyimagenet", tmp_path, "train")
    swapped = [WNIDS[1], WNIDS[0], *WNIDS[2:]]  # another wnid order: the class order would name other classes
    (base / "wnids.txt").write_text("\n".join(swapped) + "\n")
    with pytest.raises(DatasetBrokenError, match=f"class 0 is '{WNIDS[1]}' in wnids.txt but '{WNIDS[0]}'"):
        cil.load_split("tinyimagenet", tmp_path, "test")
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t8\t8\n")
    with pytest.raises(DatasetBrokenError, match="wnid 'n99999999' is not in wnids.txt"):
        cil.load_split("tinyimagenet", tmp_path, "test")
    for f in (base / "train" / WNIDS[3] / "images").iterdir():
        f.unlink()
    (base / "train" / WNIDS[3] / "images").rmdir()
    with pytest.raises(DatasetBrokenError, match=f"class folder .*{WNIDS[3]}/images does not exist"):
        cil.load_split("tinyimagenet", tmp_path, "train")


def test_data_check_covers_the_cil_datasets(cil_root, tmp_path):
    runner = CliRunner()
    result = runner.invoke(data_app, ["check", "--data-root", str(cil_root), "--benchmark", "cil"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.count("found") == 3 and "counts differ" in result.output
    make_cifar10(tmp_path)
    result = runner.invoke(data_app, ["check", "--data-root", str(tmp_path), "--benchmark", "cil"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "tinyimagenet: missing" in out and "tiny-imagenet-200.zip" in out and "cifar100: missing" in out


# --------------------------------------------------------------------------- settings


def test_settings_cut_the_class_order_into_steps():
    s = catalog.get_setting("cifar100-10")
    order = catalog._load("cil.json")["cifar100_class_order"]
    assert s.steps[0] == tuple(order[:10]) and s.steps[9] == tuple(order[90:])
    assert catalog.get_order("cifar100-50")[-1] == "cifar100-50/50"
    tiny = catalog.get_setting("tinyimagenet-10")
    assert tiny.sizes == (100,) + (10,) * 10 and len(tiny.step_names) == 11
    assert catalog.get_setting("seq-cifar10").steps == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert catalog.get_setting("seq-tinyimg").steps[1] == tuple(range(20, 40))
    step = catalog.get_task("cifar100-10/01")
    assert step.prompt(1) == "a bad photo of a apple." and step.num_classes == 10  # order[1] = 0 = apple
    assert catalog.get_task("cifar100-10/02").classnames[0] == catalog.cil_dataset_classnames("cifar100")[order[10]]
    assert catalog.is_cil("tinyimagenet-20") and not catalog.is_cil("II")


def test_unknown_setting_and_step_list_the_valid_ones():
    with pytest.raises(catalog.UnknownTaskError, match="cifar100-10, cifar100-20, cifar100-50, tinyimagenet-5"):
        catalog.get_order("cifar100-7")
    with pytest.raises(catalog.UnknownTaskError, match="has steps 01..10"):
        catalog.get_task("cifar100-10/11")


def test_a_class_order_must_be_a_permutation_of_the_dataset_labels():
    s = catalog.get_setting("seq-cifar10", "class_order: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]")  # the harness's YAML
    assert s.steps[0] == (9, 8) and not s.natural
    with pytest.raises(catalog.CilSettingError, match="lists 9 labels, the dataset has 10 classes.*missing labels: 9"):
        catalog.get_setting("seq-cifar10", "0 1 2 3 4 5 6 7 8")
    with pytest.raises(catalog.CilSettingError, match="labels outside 0..9: 10; repeated labels: 1"):
        catalog.get_setting("seq-cifar10", "[0, 1, 1, 3, 4, 5, 6, 7, 8, 10]")


def test_step_splits_renumber_labels_in_class_order(cil_root):
    s = catalog.get_setting("seq-cifar10", "9 8 7 6 5 4 3 2 1 0")
    first = step_dataset(s, 0, "train", str(cil_root))  # classes 9, 8: one image of 9
    assert len(first) == 1 and first[0][1] == 0
    third = step_dataset(s, 3, "train", str(cil_root))  # classes 3, 2: two images of 3
    assert third.labels == [0, 0] and third.indices == [2, 3]
    # the entry point of every task: a step of a setting's own order, renumbered
    natural = task_dataset("seq-cifar10/05", "train", str(cil_root))  # classes 8, 9 -> image of 9 is label 1
    assert [natural[i][1] for i in range(len(natural))] == [1]
    with pytest.raises(ValueError, match="needs --data-root"):
        task_dataset("cifar100-10/01", "train", None)


def test_pool_draws_by_hand_and_default_images_per_class():
    s = catalog.get_setting("cifar100-10")
    # step k (1-based) draws 1000 from 100 base names + 10 (k-1) classes
    assert catalog.cil_expected_draws("cil-base", s) == pytest.approx(sum(1000 / (100 + 10 * k) for k in range(10)))
    assert catalog.cil_expected_draws("cil-cifar100", s) == pytest.approx(
        sum(1000 / (100 + 10 * k) for k in range(1, 10)))
    assert catalog.cil_expected_draws("cil-tinyimagenet", s) == 0.0
    tiny = catalog.get_setting("tinyimagenet-10")  # base step: 100 names; then 100 + 100 + 10 (k-2)
    assert catalog.cil_expected_draws("cil-base", tiny) == pytest.approx(
        10 + sum(1000 / (200 + 10 * k) for k in range(10)))
    assert catalog.cil_pool(s, 2)[-1] == ("cil-cifar100", s.steps[1][-1]) and len(catalog.cil_pool(s, 2)) == 120
    # sized by the settings of at most 10 incremental steps: 71.9 (cifar100-10), 61.9, 48.4 (seq-tinyimg), 38.1
    per_class = {t: catalog.default_per_class(t) for t in ("cil-base", "cil-cifar100", "cil-tinyimagenet", "cil-cifar10")}
    assert per_class == {"cil-base": 72, "cil-cifar100": 62, "cil-tinyimagenet": 49, "cil-cifar10": 39}
    assert sum(n * catalog.get_task(t).num_classes for t, n in per_class.items()) == 23590  # stated in docs/cil.md
    assert catalog.get_task("cil-tinyimagenet").prompt(0) == "a photo of a Egyptian Mau."
    assert catalog.get_task("cil-cifar100").prompt(1) == "a photo of a aquarium fish."


def test_stage_one_renders_the_cil_sets_with_the_existing_machinery():
    import torch

    from pipeline.generation.generate import plan, resolve_spec

    spec = resolve_spec("cil-tinyimagenet", model="tiny", device=torch.device("cpu"))
    assert spec.per_class == 49
    rows = plan(spec)
    assert len(rows) == 200 * 49 and rows[0].prompt == "a photo of a Egyptian Mau." and rows[49].class_index == 1
    base = plan(resolve_spec("cil-base", model="tiny", per_class=1, device=torch.device("cpu")))
    assert [r.prompt for r in base[:2]] == ["a photo of a tench.", "a photo of a junco."]
