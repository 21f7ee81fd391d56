"""The benchmarks' facts: tasks, class names, prompt templates, MTIL task orders and CIL settings.

Everything here is read from JSON shipped inside the package (``pipeline/data``), copied from the
reference code's lists (their provenance: pipeline/data/README.md). Nothing is downloaded.

Two kinds of order share one vocabulary: an MTIL order is a list of datasets (each a :class:`Task`); a
class-incremental (CIL) setting (:class:`CilSetting`) cuts one dataset's classes into steps, and each step is
a :class:`Task` too (named ``<setting>/<step>``, e.g. ``cifar100-10/03``, prompted "a bad photo of a {}."),
so ``get_order`` and ``get_task`` answer for both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pipeline.names import unknown_name

IMAGENET = "imagenet"
IMAGENET_TEMPLATE = "a photo of a {}."
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The `mini` benchmark: small tasks of real images that ship inside scikit-learn (pipeline/datasets/mini.py), for
# the demo and the integration tests. `mini-base` stands in for ImageNet as the base replay pool.
MINI_TASKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mini-base": (DIGIT_WORDS + ("temple", "flower"), (IMAGENET_TEMPLATE,)),
    "mini-a": (DIGIT_WORDS[:5], ('a photo of the number: "{}".', "a handwritten {}.")),
    "mini-b": (DIGIT_WORDS[5:], ('a photo of the number: "{}".', "a handwritten {}.")),
    "mini-c": (("temple", "flower"), ("a photo of a {}.", "a close-up photo of a {}.")),
    # the mini CIL setting: all ten digits (its dataset and its replay set), and a base pool that does not
    # overlap them (as cil-base does not overlap CIFAR100 / TinyImageNet)
    "mini-digits": (DIGIT_WORDS, (IMAGENET_TEMPLATE,)),
    "mini-cil-base": (("temple", "flower"), (IMAGENET_TEMPLATE,)),
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
        """The training / generation template: the dataset's *first* template (docs/protocol.md)."""
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
    """Look a task up by name (a dataset, a stage-1 set, or a CIL step ``<setting>/<step>``); an unknown name
    raises an error that lists the valid ones."""
    if name in CIL_POOL_TASKS:
        return Task(name, cil_pool_classnames(name), (IMAGENET_TEMPLATE,))
    if "/" in name and name.rpartition("/")[0] in cil_settings():
        setting, _, step = name.rpartition("/")
        return get_setting(setting).task(_step_index(name, step, get_setting(setting)))
    if name == IMAGENET:
        return Task(IMAGENET, tuple(_load("imagenet_classnames.json")), (IMAGENET_TEMPLATE,))
    if name in MINI_TASKS:
        return Task(name, *MINI_TASKS[name])
    classnames = _load("mtil_classnames.json")
    if name not in classnames:
        raise UnknownTaskError(unknown_name("task", name, [*task_names(mini=True), *CIL_POOL_TASKS],
                                            more=", or a CIL step such as cifar100-10/01"))
    return Task(name, tuple(classnames[name]), tuple(_load("mtil_templates.json")[name]))


def orders(mini: bool = False) -> dict[str, list[str]]:
    """Task orders: MTIL ``{"I": [...11 tasks], "II": [...]}`` (plus ``"mini"``)."""
    out = {k: list(v) for k, v in _load("mtil_orders.json").items()}
    return {**out, "mini": list(MINI_ORDER)} if mini else out


def get_order(name: str) -> list[str]:
    """The tasks of an MTIL order, or the steps of a CIL setting (``cifar100-10/01`` ...)."""
    if name in cil_settings():
        return get_setting(name).step_names
    all_orders = orders(mini=True)
    if name not in all_orders:
        raise UnknownTaskError(unknown_name("order", name, [*all_orders, *cil_settings()],
                                            more=f" (MTIL: {', '.join(all_orders)}; the others are CIL settings)"))
    return all_orders[name]


def is_cil(order: str) -> bool:
    """Whether ``order`` names a class-incremental setting (else an MTIL order)."""
    return order in cil_settings()


def pool_tasks(order: str) -> list[str]:
    """The stage-1 sets whose images the synthetic replay of ``order`` draws: MTIL, the base set (ImageNet, or
    ``mini-base``) and every task but the last (the last task is never replayed); CIL, the setting's base names and
    its dataset's set. Training (``Protocol.pool_sets``) and ``gift generate --order`` both read this list."""
    if is_cil(order):
        setting = get_setting(order)
        return [setting.base, setting.pool_task]
    return [BASE_POOL[order], *get_order(order)[:-1]]


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
    if task in CIL_POOL_TASKS:
        return cil_default_per_class(task)
    if task in MINI_TASKS:
        return max(1, math.ceil(expected_draws(task, MINI_ORDER, base="mini-base")))
    return max(1, math.ceil(max(expected_draws(task, order) for order in orders().values())))


# --------------------------------------------------------------------------- class-incremental (CIL) settings

CIL_TEMPLATE = "a bad photo of a {}."  # the CIL harness's prompt, for training and evaluation
# Stage-1 sets of the CIL replay pool, all prompted "a photo of a {}.": the 100 base names (cil.json's rule) and one
# set per dataset, shared by every setting of that dataset. Class index = the dataset's original label.
CIL_POOL_TASKS = ("cil-base", "cil-cifar10", "cil-cifar100", "cil-tinyimagenet", "mini-cil-base", "mini-digits")
# Settings of at most this many incremental steps size the default images per class (the 10-step ones and shorter).
SIZING_STEPS = 10
# Each CIL dataset's native images, (height, width, channels) of uint8: CLTS downsamples its renders to this size
# before the shared preprocessing, and its memory table counts the raw bytes of images of this shape.
NATIVE_SHAPE: dict[str, tuple[int, int, int]] = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3),
                                                 "tinyimagenet": (64, 64, 3), "mini-digits": (8, 8, 1)}


class CilSettingError(ValueError):
    """A CIL setting that cannot be built: a class order that is not a permutation of the dataset's labels."""


@dataclass(frozen=True)
class CilSetting:
    """One class-incremental setting: a dataset's classes cut, in ``class_order``, into steps of ``sizes``.

    ``class_order[j]`` is the original label (the dataset's own) that becomes the j-th class seen; step k holds
    the next ``sizes[k]`` entries. ``classnames`` are indexed by original label, as the harness prompts them.
    ``base`` and ``pool_task`` are the stage-1 sets GIFT replays (base names + the classes of earlier steps).
    """

    name: str
    dataset: str  # cifar10 | cifar100 | tinyimagenet | mini-digits
    classnames: tuple[str, ...]
    class_order: tuple[int, ...]
    sizes: tuple[int, ...]
    base: str
    pool_task: str
    natural: bool = False  # the class order is 0..C-1 (the split benchmarks)

    @property
    def steps(self) -> tuple[tuple[int, ...], ...]:
        """Original labels of every step, in class order."""
        bounds = [sum(self.sizes[:k]) for k in range(len(self.sizes) + 1)]
        return tuple(self.class_order[a:b] for a, b in zip(bounds, bounds[1:], strict=False))

    @property
    def caption_task(self) -> str:
        """The task a CLTS caption set of this setting is made for: the dataset's stage-1 task (``cil-cifar10``, ...,
        ``mini-digits``), all of its classes by original label, so one caption set (and one render of it) serves every
        setting and class order of the dataset; a step takes its classes' records."""
        return self.pool_task

    @property
    def step_names(self) -> list[str]:
        return [f"{self.name}/{k + 1:02d}" for k in range(len(self.sizes))]

    def task(self, k: int) -> Task:
        """Step k (0-based) as a task: its classes' names and the CIL prompt."""
        return Task(self.step_names[k], tuple(self.classnames[label] for label in self.steps[k]), (CIL_TEMPLATE,))

    def seen(self, k: int) -> tuple[int, ...]:
        """Original labels of steps 0..k, in class order."""
        return self.class_order[: sum(self.sizes[: k + 1])]

    def with_order(self, order: str | None) -> CilSetting:
        """This setting with another class order (``--class-order``: the integers of a text, e.g. a harness YAML
        ``class_order: [87, 0, ...]``, a JSON list or one label a line); ``None`` keeps the setting's own."""
        if order is None:
            return self
        labels = parse_class_order(order)
        n = len(self.classnames)
        problems = []
        if len(labels) != n:
            problems.append(f"it lists {len(labels)} labels, the dataset has {n} classes")
        outside = sorted({x for x in labels if not 0 <= x < n})
        if outside:
            problems.append(f"labels outside 0..{n - 1}: {', '.join(map(str, outside[:5]))}")
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            problems.append(f"repeated labels: {', '.join(map(str, repeated[:5]))}")
        missing = sorted(set(range(n)) - set(labels))
        if missing:
            problems.append(f"missing labels: {', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}")
        if problems:
            raise CilSettingError(f"the class order does not match {self.dataset} ({n} classes, labels 0..{n - 1}) "
                                  f"for setting {self.name}: {'; '.join(problems)}. A class order lists every original "
                                  "label once, e.g. the harness's class_order: [87, 0, 52, ...]")
        return dataclasses.replace(self, class_order=labels, natural=labels == tuple(range(n)))


def parse_class_order(text: str) -> tuple[int, ...]:
    """The labels of a class-order file, in order: a JSON list, the harness's YAML ``class_order: [87, 0, ...]`` (or
    its ``- 87`` block list), or labels one a line / comma-separated; ``#`` starts a comment.

    Anything else is a :class:`CilSettingError` naming the line: a word that is not a label, another YAML key, a
    ``[`` never closed or a ``]`` never opened."""
    labels: list[int] = []
    opened = None  # the line of an open '['
    for number, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        key = re.match(r"([A-Za-z_][\w-]*)\s*:(?!\S)", body)  # a YAML key (not a `- 87` item)
        if key:
            if key.group(1) != "class_order":
                raise CilSettingError(f"line {number}: {key.group(1)!r} is not class_order (the file lists labels, "
                                      "e.g. class_order: [87, 0, 52, ...])")
            body = body[key.end():]
        for token in re.findall(r"[\[\]]|[^\s,\[\]]+", body):
            if token == "[":
                if opened is not None:
                    raise CilSettingError(f"line {number}: a list inside the list opened on line {opened}")
                opened = number
            elif token == "]":
                if opened is None:
                    raise CilSettingError(f"line {number}: ']' closes no list")
                opened = None
            elif token != "-":  # a YAML block item
                if not re.fullmatch(r"-?\d+", token):
                    whole = f" in {line.strip()!r}" if line.strip() != token else ""
                    raise CilSettingError(f"line {number}: {token!r}{whole} is not a class label (a whole number)")
                labels.append(int(token))
    if opened is not None:
        raise CilSettingError(f"line {opened}: the list opened with '[' is never closed")
    return tuple(labels)


def cil_dataset_classnames(dataset: str) -> tuple[str, ...]:
    """A CIL dataset's class names by original label, as the harness prompts them (CIFAR100 keeps underscores)."""
    if dataset == "mini-digits":
        return DIGIT_WORDS
    return tuple(_load("cil.json")[f"{dataset}_classnames"])


def native_shape(dataset: str) -> tuple[int, int, int]:
    """(height, width, channels) of a CIL dataset's images (``NATIVE_SHAPE``); an unknown name lists the known ones."""
    if dataset not in NATIVE_SHAPE:
        raise UnknownTaskError(f"no native image size for {dataset!r}; known: {', '.join(NATIVE_SHAPE)}")
    return NATIVE_SHAPE[dataset]


def cil_pool_dataset(task: str) -> str | None:
    """The dataset whose images a CIL stage-1 set's classes are (``cil-cifar10`` -> ``cifar10``, ``mini-digits`` itself);
    None for the base names (``cil-base``, ``mini-cil-base``: no dataset of theirs is a CIL dataset)."""
    if task in ("cil-base", "mini-cil-base"):
        return None
    return task if task in MINI_TASKS else task.removeprefix("cil-")


def cil_pool_classnames(task: str) -> tuple[str, ...]:
    """Class names of a CIL stage-1 set, by the dataset's original label (names as SD is prompted)."""
    if task in MINI_TASKS:
        return MINI_TASKS[task][0]
    if task == "cil-base":
        return tuple(_load("cil.json")["cil_base_pool"]["classnames"])
    if task == "cil-cifar100":  # spaced, as MTIL's CIFAR100 prompts (the harness's underscores are for its CE)
        return tuple(_load("mtil_classnames.json")["cifar100"])
    return cil_dataset_classnames(task.removeprefix("cil-"))


@cache
def cil_settings() -> dict[str, CilSetting]:
    """Every CIL setting: GIFT's six (Tables 7 / 8), the split benchmarks ``seq-*`` (natural order; CLTS) and
    ``mini-cil`` (scikit-learn's digits, 5 steps of 2; demo and tests)."""
    data = _load("cil.json")
    raw = {**data["settings"], **data["seq_settings"],
           "mini-cil": {"dataset": "mini-digits", "initial_increment": 2, "increment": 2, "tasks": 5,
                        "class_order": "natural"}}
    out = {}
    for name, s in raw.items():
        names = cil_dataset_classnames(s["dataset"])
        natural = s.get("class_order") == "natural"
        order = tuple(range(len(names))) if natural else tuple(data[f"{s['dataset']}_class_order"])
        sizes = (s["initial_increment"],) + (s["increment"],) * (s["tasks"] - 1)
        if sum(sizes) != len(names):
            raise ValueError(f"setting {name}: steps of {sizes} do not cover {len(names)} classes")
        mini = s["dataset"] == "mini-digits"
        out[name] = CilSetting(name, s["dataset"], names, order, sizes, "mini-cil-base" if mini else "cil-base",
                               "mini-digits" if mini else f"cil-{s['dataset']}", natural)
    return out


def get_setting(name: str, class_order: str | None = None) -> CilSetting:
    """A CIL setting by name (with ``class_order`` replacing its own); an unknown name lists the valid ones."""
    settings = cil_settings()
    if name not in settings:
        raise UnknownTaskError(unknown_name("CIL setting", name, settings))
    return settings[name].with_order(class_order)


def _step_index(task: str, step: str, setting: CilSetting) -> int:
    if not step.isdigit() or not 1 <= int(step) <= len(setting.sizes):
        raise UnknownTaskError(f"unknown task {task!r}: {setting.name} has steps 01..{len(setting.sizes):02d}")
    return int(step) - 1


def cil_pool(setting: CilSetting, k: int) -> list[tuple[str, int]]:
    """GIFT's replay pool at step k (0-based): (stage-1 set, class) for the base names + the classes of steps < k."""
    base = [(setting.base, c) for c in range(len(cil_pool_classnames(setting.base)))]
    return base + [(setting.pool_task, label) for step in setting.steps[:k] for label in step]


def cil_expected_draws(task: str, setting: CilSetting, budget: int = SYNTHETIC_BUDGET) -> float:
    """Expected draws of the most drawn class of stage-1 set ``task`` over ``setting`` (0 if it is not in its pool).

    Step k draws ``budget`` classes uniformly with replacement from :func:`cil_pool`; the classes of step 1 (and
    the base names) are in every later pool, so they are the most drawn.
    """
    pools = [cil_pool(setting, k) for k in range(len(setting.sizes))]
    first = next(((t, c) for pool in pools for t, c in pool if t == task), None)
    return sum(budget / len(pool) for pool in pools if first in pool) if first else 0.0


def cil_default_per_class(task: str) -> int:
    """Images per class of a CIL stage-1 set: the settings of at most ``SIZING_STEPS`` incremental steps draw each
    rendered image about once (the maximum of :func:`cil_expected_draws` over them, rounded up)."""
    sizing = [s for s in cil_settings().values() if len(s.sizes) - 1 <= SIZING_STEPS]
    return max(1, math.ceil(max(cil_expected_draws(task, s) for s in sizing)))
