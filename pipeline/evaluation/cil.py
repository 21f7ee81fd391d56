"""Class-incremental evaluation: after step k, the test images of every class seen so far, one head over the prompts of
all seen classes, no task id.

acc_k = top-1 (%) over those images; row k of the step matrix holds, for every step j <= k, the accuracy on step
j's classes' images under that same head (NaN for steps not seen yet), so forgetting can be read per step.

The test split is decoded once (``TestSet``, shared with every run through its cache). A model that never changes
(``frozen``: the zero-shot baseline) has its image features of every test image and the text features of every
class computed once and reused at every step; otherwise each step encodes the seen images and the seen classes'
prompts in one batched pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.datasets.catalog import CilSetting, Task
from pipeline.dist import Dist
from pipeline.models import LOGIT_SCALE, encode_images, normalize_uint8

from .evaluate import TestSet, zeroshot_head


@dataclass
class StepResult:
    """What the evaluation after one step adds to a run: an accuracy-matrix row (NaN where nothing was evaluated)
    and further per-step values kept in ``state.json`` (CIL: ``seen`` = accuracy on all seen classes)."""

    row: list[float]
    extra: dict[str, float] = field(default_factory=dict)


def _step_of(setting: CilSetting, k: int) -> torch.Tensor:
    """[C] long: the step (0..k) of every original label seen by step k, -1 for the others."""
    step_of = torch.full((len(setting.classnames),), -1, dtype=torch.long)
    for j, step in enumerate(setting.steps[: k + 1]):
        step_of[list(step)] = j
    return step_of


def step_counts(predicted: torch.Tensor, truth: torch.Tensor, setting: CilSetting, k: int) -> torch.Tensor:
    """(correct, images) per step 0..k as a [2, k+1] float64 tensor, from predicted original labels ``predicted`` [n]
    of test images whose original labels are ``truth`` [n]; images of classes not seen by step k are ignored.

    Any predictor of the seen classes fits (CLIP's seen-class head here; CLTS's router and task heads)."""
    step = _step_of(setting, k)[truth]
    keep = step >= 0
    counts = torch.zeros(2, k + 1, dtype=torch.float64)
    counts[0].index_add_(0, step[keep], (predicted[keep] == truth[keep]).double())
    counts[1].index_add_(0, step[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    return counts


def step_result(counts: torch.Tensor, setting: CilSetting, k: int) -> StepResult:
    """Counts [2, k+1] (summed over ranks) -> the step-matrix row (NaN for steps after k) and ``seen`` = acc_k."""
    per_step = (100.0 * counts[0] / counts[1].clamp(min=1)).tolist()
    return StepResult(per_step + [math.nan] * (len(setting.sizes) - k - 1),
                      {"seen": 100.0 * float(counts[0].sum()) / max(1.0, float(counts[1].sum()))})


class SeenClassEvaluation:
    """Callable ``(model, k) -> StepResult`` for one CIL setting over its dataset's test split (original labels).

    Under torchrun each rank scores a contiguous share of the seen images and the counts are summed.
    """

    def __init__(self, setting: CilSetting, test: TestSet, tokenizer, device: torch.device,
                 autocast_dtype: torch.dtype | None = None, dist: Dist = Dist(), frozen: bool = False,
                 batch_size: int = 256):
        self.setting, self.test, self.tokenizer, self.device = setting, test, tokenizer, device
        self.autocast_dtype, self.dist, self.frozen, self.batch_size = autocast_dtype, dist, frozen, batch_size
        self._text: torch.Tensor | None = None  # frozen: [C, D] by original label
        self._image: dict[int, torch.Tensor] = {}  # frozen: test index -> [D]

    def _head(self, model: nn.Module, labels: tuple[int, ...]) -> torch.Tensor:
        """Text features [len(labels), D] of the CIL prompt of ``labels`` (one batched pass, or the frozen cache)."""
        names = self.setting.classnames
        if not self.frozen:
            return zeroshot_head(model, Task("seen", tuple(names[y] for y in labels), (self._template,)),
                                 self.tokenizer, self.device)
        if self._text is None:
            self._text = zeroshot_head(model, Task("all", names, (self._template,)), self.tokenizer, self.device)
        return self._text[list(labels)]

    @property
    def _template(self) -> str:
        return self.setting.task(0).prompt_template

    @torch.no_grad()
    def _features(self, model: nn.Module, indices: np.ndarray) -> torch.Tensor:
        """Image features [n, D] of test images ``indices`` (sorted), batch by batch from the decoded split."""
        images, _ = self.test.tensors()
        todo = [i for i in indices.tolist() if i not in self._image] if self.frozen else indices.tolist()
        out = {}
        for b in range(0, len(todo), self.batch_size):
            chunk = todo[b : b + self.batch_size]
            rows = images[chunk] if isinstance(images, torch.Tensor) else torch.from_numpy(images[np.array(chunk)])
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                feats = encode_images(model, normalize_uint8(rows.to(self.device, non_blocking=True)))
            out.update(zip(chunk, feats.float(), strict=True))
        if self.frozen:
            self._image.update(out)
            out = self._image
        if not len(indices):
            return torch.empty(0, 0, device=self.device)
        return torch.stack([out[i] for i in indices.tolist()])

    @torch.no_grad()
    def __call__(self, model: nn.Module, k: int) -> StepResult:
        seen = self.setting.seen(k)
        _, labels = self.test.tensors()
        chosen = torch.nonzero(_step_of(self.setting, k)[labels] >= 0).flatten().numpy()
        mine = chosen[self.dist.shard(len(chosen))]
        was_training = model.training
        model.eval()
        counts = torch.zeros(2, k + 1, dtype=torch.float64)
        if len(mine):
            head = self._head(model, seen)  # [S, D]: seen classes in class order
            logits = LOGIT_SCALE * self._features(model, mine) @ head.float().T
            predicted = torch.tensor(seen)[logits.argmax(dim=1).cpu()]  # back to original labels
            counts = step_counts(predicted, labels[torch.from_numpy(mine)], self.setting, k)
        model.train(was_training)
        if self.dist.world > 1:
            counts = self.dist.all_reduce(counts.to(self.device)).cpu()
        return step_result(counts, self.setting, k)
