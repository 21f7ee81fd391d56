"""The benchmark's facts: tasks, class names, prompt templates and task orders.

Everything here is read from JSON shipped inside the package (``pipeline/data``), copied from the
reference code's lists (see that folder's provenance in the README). Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

IMAGENET = "imagenet"
IMAGENET_TEMPLATE = "a photo of a {}."
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The `mini` benchmark: small tasks of real images that ship inside scikit-learn (pipeline/mini.py), for
# the demo and the integration tests. `mini-base` stands in for ImageNet as the base replay pool.
MINI_TASKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mini-base": (DIGIT_WORDS + ("temple", "flower"), (IMAGENET_TEMPLATE,)),
    "mini-a": (DIGIT_WORDS[:5], ('a photo of the number: "{}".', "a handwritten {}.")),
    "mini-b": (DIGIT_WORDS[5:], ('a photo of the number: "{}".', "a handwritten {}.")),
    "mini-c": (("temple", "flower"), ("a photo of a {}.", "a close-up photo of a {}.")),
}
MINI_ORDER = ["mini-a", "mini-b", "mini-c"]
# The base pool of each order: what stands in for CLIP's pre-training data in the synthetic replay.
BASE_POOL = {"I": IMAGENET, "II": IMAGENET, "mini": "mini-base"}
# The per-task synthetic budget of the reference code (images drawn per task from the pool).
SYNTHETIC_BUDGET = 1000


class UnknownTaskError(ValueError):
    """A task name that is neither an MTIL dataset nor ``imagenet``."""


@cache
def _load(name: str) -> dict | list:
    return json.loads(resources.files("pipeline.data").joinpath(name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Task:
    """One dataset as the benchmark sees it: ordered class names and zero-shot templates."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def prompt_template(self) -> str:
        """The training / generation template: the dataset's *first* template (REFERENCE.md)."""
        return self.templates[0]

    def prompt(self, class_index: int) -> str:
        return self.prompt_template.format(self.classnames[class_index])


def mtil_task_names() -> list[str]:
    """The 11 MTIL datasets in the order of ``mtil_classnames.json`` (Order I)."""
    return list(_load("mtil_classnames.json"))


def task_names(mini: bool = False) -> list[str]:
    """Every task this project can render: the 11 MTIL datasets, then ``imagenet`` (then the mini tasks)."""
    return [*mtil_task_names(), IMAGENET, *(MINI_TASKS if mini else ())]


def get_task(name: str) -> Task:
    """Look a task up by name; an unknown name raises an error that lists the valid ones."""
    if name == IMAGENET:
        return Task(IMAGENET, tuple(_load("imagenet_classnames.json")), (IMAGENET_TEMPLATE,))
    if name in MINI_TASKS:
        return Task(name, *MINI_TASKS[name])
    classnames = _load("mtil_classnames.json")
    if name not in classnames:
        raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(task_names(mini=True))}")
    return Task(name, tuple(classnames[name]), tuple(_load("mtil_templates.json")[name]))


def orders(mini: bool = False) -> dict[str, list[str]]:
    """Task orders: MTIL ``{"I": [...11 tasks], "II": [...]}`` (plus ``"mini"``)."""
    out = {k: list(v) for k, v in _load("mtil_orders.json").items()}
    return {**out, "mini": list(MINI_ORDER)} if mini else out


def get_order(name: str) -> list[str]:
    all_orders = orders(mini=True)
    if name not in all_orders:
        raise UnknownTaskError(f"unknown order {name!r}; valid orders: {', '.join(all_orders)}")
    return all_orders[name]


def expected_draws(task: str, order: list[str], budget: int = SYNTHETIC_BUDGET, base: str = IMAGENET) -> float:
    """Expected number of times one class of ``task`` is drawn as a synthetic prompt over ``order``.

    Task t draws ``budget`` classes uniformly with replacement from the pool ImageNet + tasks 1..t-1,
    so a class in a pool of P classes is drawn budget/P times in expectation at that task.
    """
    pool = [base]
    draws = 0.0
    for current in order:
        if task in pool:
            draws += budget / sum(get_task(name).num_classes for name in pool)
        pool.append(current)
    return draws


def default_per_class(task: str) -> int:
    """Images per class so that one MTIL order draws each rendered image about once.

    The maximum over the published orders of :func:`expected_draws`, rounded up: ImageNet 9,
    aircraft 8, cars 7, ... (15,157 images for everything both orders need).
    """
    get_task(task)  # validate the name
    if task in MINI_TASKS:
        return max(1, math.ceil(expected_draws(task, MINI_ORDER, base="mini-base")))
    return max(1, math.ceil(max(expected_draws(task, order) for order in orders().values())))
