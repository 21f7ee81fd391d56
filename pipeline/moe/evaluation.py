"""MTIL evaluation through DDAS: every test batch (128 images of the unshuffled test split) goes to the router its
autoencoders choose, or to plain zero-shot CLIP, and is scored with that route's zero-shot head of the dataset (the
template ensemble, encoded through the same route). One accuracy-matrix row per call, as ``evaluate_order``.

The argmin runs over autoencoder 0 and the trained ones (the released code also lets the untrained, randomly
initialised ones compete); how many batches an untrained one would have won is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from pipeline.datasets.catalog import Task
from pipeline.dist import Dist
from pipeline.evaluation.cil import StepResult
from pipeline.evaluation.evaluate import TestSet, zeroshot_head
from pipeline.models import LOGIT_SCALE, encode_images, normalize_uint8

from .block import set_route
from .ddas import Ddas, choose_task, ddas_input

log = logging.getLogger("gift.moe")


def _rows(images, start: int, stop: int) -> torch.Tensor:
    rows = images[start:stop]
    return rows if isinstance(rows, torch.Tensor) else torch.from_numpy(rows.copy())


class DdasEvaluation:
    """Callable ``(model, index) -> StepResult`` over an MTIL order's test sets; ``extractor``: DDAS's AlexNet."""

    def __init__(self, tasks: Sequence[Task], tests: Sequence[TestSet], tokenizer, device: torch.device,
                 autocast_dtype: torch.dtype | None, dist: Dist, extractor: nn.Module, threshold: float,
                 batch_size: int = 128):
        self.tasks, self.tests, self.tokenizer, self.device = tasks, tests, tokenizer, device
        self.autocast_dtype, self.dist, self.extractor = autocast_dtype, dist, extractor
        self.threshold, self.batch_size = threshold, batch_size

    def route(self, ddas: Ddas, images: torch.Tensor) -> tuple[int, bool]:
        """(task id of the router for this batch of CLIP-normalised images, -1: zero-shot; whether an untrained
        autoencoder would have changed the choice)."""
        losses = ddas.losses(ddas_input(self.extractor, images))
        candidates = [k for k in range(len(losses)) if k == 0 or bool(ddas.trained[k])]
        chosen = choose_task(losses, candidates, self.threshold)
        return chosen, chosen != choose_task(losses, list(range(len(losses))), self.threshold)

    @torch.no_grad()
    def __call__(self, model: nn.Module, index: int) -> StepResult:
        was_training = model.training
        model.eval()
        counts = torch.zeros(2, len(self.tests), dtype=torch.float64)
        routed = torch.zeros(len(model.ddas.trained) + 1, dtype=torch.float64)  # batches per route (-1 first)
        for j, (task, test) in enumerate(zip(self.tasks, self.tests, strict=True)):
            images, labels = test.tensors()
            heads: dict[int, torch.Tensor] = {}
            # whole batches per rank (batch b on rank b mod world): every batch is the one a single process sees
            for b in range(self.dist.rank, math.ceil(len(labels) / self.batch_size), self.dist.world):
                start, stop = b * self.batch_size, min((b + 1) * self.batch_size, len(labels))
                x = normalize_uint8(_rows(images, start, stop).to(self.device))
                task_id, untrained_won = self.route(model.ddas, x)
                set_route(model, task_id)
                if task_id not in heads:
                    heads[task_id] = zeroshot_head(model, task, self.tokenizer, self.device)
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    logits = LOGIT_SCALE * encode_images(model, x) @ heads[task_id].T
                counts[0, j] += (logits.argmax(dim=1).cpu() == labels[start:stop]).sum().item()
                counts[1, j] += stop - start
                routed[task_id + 1] += 1
                routed[-1] += untrained_won  # the last entry: batches an untrained autoencoder would have taken
        model.train(was_training)
        if self.dist.world > 1:
            counts = self.dist.all_reduce(counts.to(self.device)).cpu()
            routed = self.dist.all_reduce(routed.to(self.device)).cpu()
        per_route = ", ".join(f"{'zero-shot' if k == 0 else f'task {k}'} {int(n)}"
                              for k, n in enumerate(routed[:-1].tolist()) if n)
        log.info("DDAS after task %d: batches per route: %s; an untrained autoencoder would have won %d",
                 index + 1, per_route, int(routed[-1]))
        return StepResult((100.0 * counts[0] / counts[1].clamp(min=1)).tolist())
