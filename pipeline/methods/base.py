"""The hook contract between the training loop and a method.

``check(config)`` runs before anything is created (missing reference data fails early). Per task:
``begin_task`` (build teachers, anchors, static importances), ``replay_stream`` (what is replayed: by
default the task's synthetic draw), then every step:

    terms = replay_terms(ctx, replay.next())   # loss terms on the replayed batch (may be empty)
    sum(terms).backward()                      # backward 1 (skipped when empty)
    after_replay_backward(ctx)                 # read this step's replay gradients (AWC's Fisher)
    CE(real batch).backward()                  # backward 2, accumulating into the same .grad
    adjust_gradients(ctx) -> penalties         # analytic penalty gradients added to .grad (l2, AWC)
    optimizer.step(); after_step(ctx, step)    # weight ensembles

and ``end_task`` after the last step (weight averaging, exemplar selection). A method is one small class in
its own file, registered in ``methods/__init__.py``.

A method that does not fine-tune CLIP at all names another ``loop`` (CLTS: ``task-heads``, task heads and a router on
frozen features; ``pipeline.training.train.LOOPS`` maps it to its runner), and every method says what memory of the
tasks' data a finished run keeps (``kept``: exemplars, captions, nothing), which ``gift table`` shows beside its row,
and the learned parameters it keeps beyond CLIP (``extra``).

A method that adds modules to CLIP or trains part of it (MoE-Adapter) uses the model hooks: ``prepare_model`` (its
modules, before a checkpoint is loaded, so they are saved and resumed with CLIP), ``trained_parameters`` (what a task
trains), ``lr_for`` (a task's base lr), ``schedule`` (steps run vs the steps the lr schedule spans) and ``evaluator``
(its own encoding of test batches). The defaults fine-tune all of CLIP as the other methods do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from pipeline.datasets import catalog
from pipeline.datasets.catalog import Task
from pipeline.dist import Dist
from pipeline.models import ClipFeatures
from pipeline.replay.streams import SynthBatch  # the batch type of every stream (re-exported)


@dataclass
class TaskContext:
    """What a method may use during task ``index`` of the order.

    Under torchrun every rank holds a share of each batch. Loss terms that couple samples (B×B contrastive
    matrices) are computed on the whole batch: ``features`` runs the student's forward (through
    DistributedDataParallel, so the gradients are averaged) and ``gather`` concatenates every rank's rows,
    differentiably. On one process both are plain calls, so a method is written once for both.
    """

    index: int
    task: str
    student: nn.Module  # the bare model (state_dict, teachers); train through ``features``
    initial_state: dict[str, torch.Tensor]  # the original CLIP, on CPU
    config: object  # TrainConfig
    device: torch.device
    params: list[torch.Tensor] = field(default_factory=list)  # trained parameters, in a fixed order
    anchors: list[torch.Tensor] = field(default_factory=list)  # θ(t−1): their values at the task's start
    dist: Dist = field(default_factory=Dist)
    forward: Callable[[torch.Tensor | None, torch.Tensor | None], tuple] | None = None
    synthetic: object | None = None  # the task's synthetic draw (SyntheticBatchSource) for synthetic methods
    datasets: dict = field(default_factory=dict)  # train split of every task of the order: (PIL image, label)
    replay_seed: int = 0  # seed of the replay stream (drawn from the task's generator)
    image_size: int = 224
    run_dir: Path | None = None
    workers: int = 0  # data-loader processes for image streams this task (resolved: train.loader_workers)
    # a task (or CIL step) of the run by name: class names + training template; the protocol's own, so that a CIL
    # step of another class order (--class-order) is its classes, not the setting's default ones
    lookup: Callable[[str], Task] = catalog.get_task

    def features(self, images: torch.Tensor | None, tokens: torch.Tensor | None = None):
        """Student image and text features (L2-normalised; None for a missing input) of the whole batch, from
        this rank's share."""
        img, txt = self.local_features(images, tokens)
        return (None if img is None else self.gather(img)), (None if txt is None else self.gather(txt))

    def local_features(self, images: torch.Tensor | None, tokens: torch.Tensor | None = None):
        """The same for this rank's share only (CE on the real batch, whose mean DDP averages over ranks)."""
        return self.forward(images, tokens) if self.forward else ClipFeatures(self.student)(images, tokens)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return self.dist.gather(x)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher: a copy of ``model`` in eval mode with no gradients."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def student_features(module: nn.Module, images: torch.Tensor | None, tokens: torch.Tensor | None):
    """(image features [b,D] | None, text features [n,D] | None) through ``module``: a ``models.ClipFeatures``
    or a DistributedDataParallel / ``torch.compile`` wrapper of one (text ids of any width up to 77). A bare
    open_clip CLIP also works, on ids of the full 77 columns (its forward returns the logit scale third)."""
    out = module(images, tokens)
    return out[0], out[1]


@dataclass(frozen=True)
class Kept:
    """The memory of the tasks' data a run keeps: ``bytes`` (None where it cannot be counted: images of no fixed
    size) and what they are, e.g. "2,000 exemplars, 32×32×3 uint8", "100 captions, UTF-8", "nothing"."""

    bytes: int | None
    what: str


@dataclass(frozen=True)
class Extra:
    """Learned parameters a run keeps beyond the one CLIP every method has (task heads, a router, adapters,
    autoencoders; exemplars are data and stay under ``Kept``): ``count`` parameters taking ``bytes`` as stored, and
    what they are, e.g. "10 heads + router", "none"."""

    count: int
    bytes: int
    what: str


class Method:
    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True  # False: evaluate only
    uses_synthetic: ClassVar[bool] = False
    uses_anchor: ClassVar[bool] = False  # needs θ(t−1) copied at the task's start
    loop: ClassVar[str] = "finetune"  # the fine-tuning loop of pipeline/training/train.py (else LOOPS[loop])
    # what it replays, for reports and tables; a method replaying pool sets says so from the run's replay.json instead
    replays: ClassVar[str] = "nothing"

    def __init__(self, config) -> None:
        self.config = config

    @classmethod
    def check(cls, config) -> None:
        """Validate the method's own inputs and options before the run starts (raise ValueError)."""

    @classmethod
    def kept(cls, run_dir: Path, cfg: dict, state: dict) -> Kept:
        """The memory of task data the run in ``run_dir`` (its config.json ``cfg`` and state.json ``state``) keeps
        after its finished tasks. By default nothing: the model alone, and data that is not the tasks' own."""
        return Kept(0, "nothing")

    @classmethod
    def extra(cls, run_dir: Path, cfg: dict, state: dict) -> Extra:
        """The learned parameters beyond CLIP that the run in ``run_dir`` keeps after its finished tasks, counted
        from what it saved (not typed in). By default none."""
        return Extra(0, 0, "none")

    # Hooks of methods that add modules to CLIP or train part of it (MoE-Adapter); the defaults fine-tune all of it.
    def prepare_model(self, model: nn.Module, protocol) -> None:
        """Add the method's own modules to ``model`` (the CLIP, on its device) before a checkpoint is loaded into it:
        they are saved in every checkpoint and resumed from it. By default none."""

    def trained_parameters(self, model: nn.Module, index: int) -> list[torch.Tensor]:
        """The parameters task ``index`` trains, in a fixed order (the optimiser's, fresh each task). By default every
        parameter that requires a gradient."""
        return [p for p in model.parameters() if p.requires_grad]

    def lr_for(self, task: str) -> float:
        """The base learning rate of ``task``."""
        return self.config.lr_for(task)

    def schedule(self, steps: int) -> tuple[int, int]:
        """(steps run, steps the lr schedule spans) of a task that the config gives ``steps``. By default both
        ``steps``; a method may run one more at the schedule's end (lr 0) for parity with its released code."""
        return steps, steps

    def evaluator(self, protocol, tests, tokenizer, device: torch.device, amp: torch.dtype | None, dist: Dist):
        """The evaluation after each task, ``(model, index) -> StepResult``, for a method that encodes test batches
        its own way (MoE-Adapter's per-batch choice of router); None: the protocol's."""
        return None

    def begin_task(self, ctx: TaskContext) -> None: ...

    def replay_stream(self, ctx: TaskContext):
        """What this method replays each step (an object with ``next() -> SynthBatch``), or None."""
        if ctx.synthetic is None:
            return None
        from pipeline.replay.streams import SyntheticStream

        return SyntheticStream(ctx.synthetic, self.config.synthetic_batch, ctx.replay_seed, ctx.dist, ctx.device)

    def replay_terms(self, ctx: TaskContext, synth: SynthBatch) -> dict[str, torch.Tensor]:
        return {}

    def after_replay_backward(self, ctx: TaskContext) -> None: ...

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        return {}

    def after_step(self, ctx: TaskContext, step: int) -> None:
        """After the optimiser's update of ``step`` (0-based)."""

    def end_task(self, ctx: TaskContext) -> None: ...
