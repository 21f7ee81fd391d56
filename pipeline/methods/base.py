"""The hook contract between the training loop and a method.

Per task: ``begin_task`` (build teachers, anchors), then every step:

    terms = replay_terms(ctx, synth)      # loss terms on the synthetic batch (may be empty)
    sum(terms).backward()                 # backward 1 (skipped when empty)
    after_replay_backward(ctx)            # read this step's replay gradients (AWC's Fisher)
    CE(real batch).backward()             # backward 2, accumulating into the same .grad
    adjust_gradients(ctx) -> penalties    # analytic penalty gradients added to .grad (l2, AWC)
    optimizer.step()

and ``end_task`` after the last step (weight averaging, ...). A method is one small class in its own file,
registered in ``methods/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


@dataclass
class TaskContext:
    """What a method may use during task ``index`` of the order."""

    index: int
    task: str
    student: nn.Module
    initial_state: dict[str, torch.Tensor]  # the original CLIP, on CPU
    config: object  # TrainConfig
    device: torch.device
    params: list[torch.Tensor] = field(default_factory=list)  # trained parameters, in a fixed order
    anchors: list[torch.Tensor] = field(default_factory=list)  # θ(t−1): their values at the task's start


@dataclass
class SynthBatch:
    images: torch.Tensor  # normalised [B,3,S,S]
    tokens: torch.Tensor  # [B,77]
    prompts: list[str]


class Method:
    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True  # False: evaluate only
    uses_synthetic: ClassVar[bool] = False
    uses_anchor: ClassVar[bool] = False  # needs θ(t−1) copied at the task's start

    def __init__(self, config) -> None:
        self.config = config

    def begin_task(self, ctx: TaskContext) -> None: ...

    def replay_terms(self, ctx: TaskContext, synth: SynthBatch) -> dict[str, torch.Tensor]:
        return {}

    def after_replay_backward(self, ctx: TaskContext) -> None: ...

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        return {}

    def end_task(self, ctx: TaskContext) -> None: ...
