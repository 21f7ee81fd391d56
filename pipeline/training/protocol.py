"""What the training loop asks of an order, so that MTIL and CIL run through one loop, run directory, resume, DDP and
report code.

A protocol names the steps (each a :class:`~pipeline.datasets.catalog.Task`: class names + training template),
gives each step's training data, the replay pool of every step (stage-1 sets and classes), the evaluation after each
step, and writes the report from the run's state:

* :class:`MtilProtocol`: an order of datasets; after each task every dataset of the order is evaluated with its
  zero-shot head (all templates) -> one row of the T x T accuracy matrix; the pool is the base set + earlier tasks.
* :class:`CilProtocol`: a setting's steps over one dataset; after step k the test images of every class seen so far
  with one head over their prompts -> acc_k, and row k of the step matrix; the pool is the 100 CIL base names + the
  classes of earlier steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.datasets import catalog
from pipeline.datasets.catalog import Task
from pipeline.datasets.splits import dataset_split, step_dataset, task_dataset
from pipeline.dist import Dist
from pipeline.evaluation.cil import SeenClassEvaluation, StepResult
from pipeline.evaluation.cil_report import curves_figure as cil_curves_figure
from pipeline.evaluation.cil_report import step_heatmap_figure, write_cil_report
from pipeline.evaluation.evaluate import TestSet, evaluate_order
from pipeline.evaluation.metrics import summarize, summarize_cil
from pipeline.evaluation.report import curves_figure, heatmap_figure, write_report
from pipeline.methods.facts import fact_lines
from pipeline.models import eval_resize
from shards.layout import spec_hash

from .config import TrainConfig, loader_workers
from .paper_setting import comparable

Evaluator = Callable[[torch.nn.Module, int], StepResult]


def test_cache(config: TrainConfig, task: str, size: int, n: int) -> Path | None:
    """Where a task's decoded test split is cached: shared by the runs under --runs, keyed by what defines it."""
    if task in catalog.MINI_TASKS:
        return None  # small; decoded in memory
    key = {"task": task, "size": size, "n": n, "root": str(Path(config.data_root).resolve())}
    return Path(config.runs) / ".cache" / "test" / f"{task}-{size}-{spec_hash(key)[:12]}.npy"


class Protocol:
    """The interface of both protocols (see the module docstring)."""

    name: str
    steps: list[str]  # task names in training order (matrix rows; the MTIL matrix's columns too)
    pool_sets: list[str]  # the stage-1 sets whose images the replay draws
    in_memory: bool = False  # the mini benchmarks: a few hundred images, loaded without worker processes

    def __init__(self, config: TrainConfig):
        self.config = config

    def task(self, step: str) -> Task:
        """Class names and training template of a step (CE prompts; LwF's and iCaRL's texts)."""
        raise NotImplementedError

    def train_sets(self) -> dict[str, Dataset]:
        """Every step's training split: (PIL image, label in 0..n-1 over the step's classes)."""
        raise NotImplementedError

    def pools(self) -> list[list[tuple[str, int]]]:
        """Per step, the (stage-1 set, class index) pairs its synthetic draw picks from, uniformly."""
        raise NotImplementedError

    def test_sets(self, size: int) -> list[TestSet]:
        """The test splits the evaluation reads (decoded once; cached on disk when large)."""
        raise NotImplementedError

    def evaluator(self, tests: list[TestSet], tokenizer, device: torch.device, amp: torch.dtype | None, dist: Dist,
                  frozen: bool) -> Evaluator:
        """``(model, step index) -> StepResult``; ``frozen``: the model never changes (the zero-shot baseline)."""
        raise NotImplementedError

    def write_report(self, run_dir: Path, state: dict) -> None:
        """results.md, matrix files and figures from ``state`` (finished steps' rows and extras)."""
        raise NotImplementedError

    def tracked(self, state: dict, index: int) -> tuple[dict[str, float], dict[str, float], dict[str, object]]:
        """What ``--report-to`` logs after step ``index`` from ``state`` (rows 0..index at least): (values, summary
        totals, matplotlib figures by name)."""
        raise NotImplementedError

    def _title(self, index: int) -> str:
        return f"{self.config.method}, {self.name}" + (f" ({index + 1} of {len(self.steps)} steps done)"
                                                       if index + 1 < len(self.steps) else "")

    def _test_set(self, dataset: Dataset, task: str, size: int) -> TestSet:
        return TestSet(dataset, eval_resize(size), workers=loader_workers(self.config),
                       cache=test_cache(self.config, task, size, len(dataset)))


class MtilProtocol(Protocol):
    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.name = config.order
        self.steps = catalog.get_order(config.order)
        self.base = catalog.BASE_POOL[config.order]
        self.pool_sets = catalog.pool_tasks(config.order)
        self.in_memory = all(t in catalog.MINI_TASKS for t in self.steps)

    def task(self, step: str) -> Task:
        return catalog.get_task(step)

    def train_sets(self) -> dict[str, Dataset]:
        return {t: task_dataset(t, "train", self.config.data_root) for t in self.steps}

    def pools(self) -> list[list[tuple[str, int]]]:
        pools, pool = [], [self.base]
        for task in self.steps:
            pools.append([(t, c) for t in pool for c in range(catalog.get_task(t).num_classes)])
            pool.append(task)
        return pools

    def test_sets(self, size: int) -> list[TestSet]:
        return [self._test_set(task_dataset(t, "test", self.config.data_root), t, size) for t in self.steps]

    def evaluator(self, tests, tokenizer, device, amp, dist, frozen) -> Evaluator:
        tasks = [self.task(t) for t in self.steps]
        return lambda model, k: StepResult(evaluate_order(model, tasks, tests, tokenizer, device, amp, dist))

    def write_report(self, run_dir: Path, state: dict) -> None:
        write_report(run_dir, names=self.steps, acc=np.array(state["acc"]), method=self.config.method,
                     order=self.config.order, comparable=comparable(asdict(self.config)),
                     facts=fact_lines(run_dir, asdict(self.config), state))

    def tracked(self, state: dict, index: int):
        matrix = np.asarray(state["acc"][: index + 1], dtype=float)
        summary = summarize(matrix, self.steps)
        values = {f"accuracy/{name}": value for name, value in zip(self.steps, matrix[index], strict=True)}
        values["accuracy/mean"] = float(matrix[index].mean())
        title = self._title(index)
        return (values, {"transfer": summary.transfer, "avg": summary.avg, "last": summary.last},
                {"acc_matrix": heatmap_figure(matrix, self.steps, title), "curves": curves_figure(matrix, self.steps, title)})


class CilProtocol(Protocol):
    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.setting = catalog.get_setting(config.order, config.class_order)
        self.name = self.setting.name
        self.steps = self.setting.step_names
        self.pool_sets = catalog.pool_tasks(config.order)  # base and pool set do not depend on the class order
        self._tasks = {name: self.setting.task(k) for k, name in enumerate(self.steps)}
        self.in_memory = self.setting.dataset in catalog.MINI_TASKS

    def task(self, step: str) -> Task:
        return self._tasks[step]

    def train_sets(self) -> dict[str, Dataset]:
        whole = dataset_split(self.setting, "train", self.config.data_root)
        out = {name: step_dataset(self.setting, k, "train", None, whole) for k, name in enumerate(self.steps)}
        empty = [name for name, data in out.items() if len(data) == 0]
        if empty:
            names = ", ".join(self._tasks[empty[0]].classnames[:5])
            raise ValueError(f"{self.setting.dataset} has no training images for step {empty[0]} (classes {names}, "
                             f"...) under --data-root {self.config.data_root}: a partial copy? (`gift data check`)")
        return out

    def pools(self) -> list[list[tuple[str, int]]]:
        return [catalog.cil_pool(self.setting, k) for k in range(len(self.steps))]

    def test_sets(self, size: int) -> list[TestSet]:
        # the whole test split in original labels: one decode, shared with every setting (and MTIL's CIFAR100)
        return [self._test_set(dataset_split(self.setting, "test", self.config.data_root), self.setting.dataset, size)]

    def evaluator(self, tests, tokenizer, device, amp, dist, frozen) -> Evaluator:
        return SeenClassEvaluation(self.setting, tests[0], tokenizer, device, amp, dist, frozen=frozen)

    def write_report(self, run_dir: Path, state: dict) -> None:
        acc = np.array([[math.nan if v is None else v for v in row] for row in state["acc"]], dtype=float)
        write_cil_report(run_dir, setting=self.setting, acc=acc, seen=state["seen"], method=self.config.method,
                         comparable=comparable(asdict(self.config)), facts=fact_lines(run_dir, asdict(self.config), state))

    def tracked(self, state: dict, index: int):
        acc = np.array([[math.nan if v is None else v for v in row] for row in state["acc"][: index + 1]], dtype=float)
        seen = state["seen"][: index + 1]
        summary = summarize_cil(seen, acc)
        values = {"accuracy/seen": seen[index],
                  **{f"accuracy/{name}": acc[index, j] for j, name in enumerate(self.steps[: index + 1])}}
        totals = {"avg": summary.avg, "last": summary.last,
                  **({"forgetting": summary.forgetting} if index else {})}
        title = self._title(index)
        return (values, totals, {"acc_matrix": step_heatmap_figure(acc, self.steps, title),
                                 "curves": cil_curves_figure(acc, seen, self.setting, title)})


def protocol_for(config: TrainConfig) -> Protocol:
    """The protocol of ``config.order``: a CIL setting's, or MTIL's (any other order, mini included)."""
    return CilProtocol(config) if catalog.is_cil(config.order) else MtilProtocol(config)
