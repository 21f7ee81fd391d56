import pytest

from pipeline.datasets import catalog


def test_counts_match_the_benchmark():
    counts = {name: catalog.get_task(name).num_classes for name in catalog.mtil_task_names()}
    assert sum(counts.values()) == 1201
    assert counts["aircraft"] == 100 and counts["sun397"] == 397 and counts["caltech101"] == 101
    assert catalog.get_task("imagenet").num_classes == 1000
    assert catalog.task_names()[-1] == "imagenet"


def test_prompt_is_the_first_template():
    assert catalog.get_task("aircraft").prompt(0) == "a photo of a 707-320, a type of aircraft."
    assert catalog.get_task("mnist").prompt(0) == 'a photo of the number: "0 - zero".'
    assert catalog.get_task("imagenet").prompt(0) == "a photo of a tench."
    # "/" in class names is kept (Cars, SUN397)
    assert any("/" in c for c in catalog.get_task("cars").classnames)


def test_unknown_task_lists_valid_ones():
    with pytest.raises(catalog.UnknownTaskError, match="valid tasks: aircraft, caltech101.*imagenet"):
        catalog.get_task("aircarft")


def test_expected_draws_by_hand():
    # Order I: task t's pool is ImageNet (1000) + tasks 1..t-1; 1000 draws per task.
    pools = [1000, 1100, 1201, 1301, 1348, 1358, 1460, 1561, 1571, 1608, 1804]
    order = catalog.orders()["I"]
    assert catalog.expected_draws("imagenet", order) == pytest.approx(sum(1000 / p for p in pools))
    assert catalog.expected_draws("aircraft", order) == pytest.approx(sum(1000 / p for p in pools[1:]))
    assert catalog.expected_draws("sun397", order) == 0.0  # last task of Order I is never replayed
    assert catalog.expected_draws("cars", order) == pytest.approx(1000 / 1804)


def test_default_per_class_covers_both_orders():
    # imagenet: 8.13 draws (Order I) -> 9; cifar100: 5.39 (I; it is last in II) -> 6; eurosat 3.87 (I) -> 4.
    assert catalog.default_per_class("imagenet") == 9
    assert catalog.default_per_class("cifar100") == 6
    assert catalog.default_per_class("eurosat") == 4
    assert catalog.default_per_class("sun397") == 3  # 2.50 in Order II
    total = sum(catalog.default_per_class(t) * catalog.get_task(t).num_classes for t in catalog.task_names())
    assert total == 15157  # the total stated in docs/generation.md


def test_package_data_is_what_its_provenance_note_describes():
    """pipeline/data/README.md says where every list comes from and gives each file's sha256: a list that changes
    without its note, or a data file the note does not describe, fails here."""
    import hashlib
    import re
    from pathlib import Path

    data = Path(catalog.__file__).resolve().parents[1] / "data"
    listed = dict(re.findall(r"^\| `([\w.-]+\.json)` \|.*\| `([0-9a-f]{64})` \|$", (data / "README.md").read_text(), re.M))
    assert listed.keys() == {p.name for p in data.glob("*.json")}
    for name, digest in listed.items():
        assert hashlib.sha256((data / name).read_bytes()).hexdigest() == digest, name
    # facts the note states about the lists
    food, caltech = catalog.get_task("food").classnames, catalog.get_task("caltech101").classnames
    assert list(food[16:18]) == ["cheese plate", "cheesecake"] and {"off-center face", "centered face"} <= set(caltech)
    imagenet = catalog.get_task("imagenet").classnames
    assert len(set(imagenet)) == 998 and imagenet[657] == imagenet[744] == "missile"
    assert "apartment building/outdoor" in catalog.get_task("sun397").classnames
