"""One training step: the hook contract of ``methods/base.py`` in order, shared by the loop and the benchmark; and
the loss log, which reads losses back to the host only at the steps it logs."""

from __future__ import annotations

import torch

from pipeline.losses import classification_loss
from pipeline.methods import TaskContext

LOG_EVERY = 10  # steps between two reads of the losses (and the last step of a task)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the run stops and keeps its last good checkpoint."""


def run_step(ctx: TaskContext, method, replay_batch, real_batch, class_tokens: torch.Tensor, optimizer, autocast, *,
             mark=None, update: bool = True) -> dict[str, torch.Tensor]:
    """One training step, the hook contract of ``methods/base.py``; returns this rank's loss terms as detached
    0-d tensors on the device: nothing is read back here (``LossLog`` does that when a step is logged).

    ``mark(phase)`` is called after each phase (replay, awc, ce, awc, optimizer) for the benchmark's timings;
    ``update=False`` skips the optimiser (FLOP counting).
    """
    mark = mark or (lambda phase: None)
    optimizer.zero_grad(set_to_none=True)
    terms: dict[str, torch.Tensor] = {}
    if replay_batch is not None:
        with autocast:
            terms = method.replay_terms(ctx, replay_batch)
        if terms:
            sum(terms.values()).backward()
    mark("replay")  # student forward/backward on the replayed batch (teacher features: cached rows)
    method.after_replay_backward(ctx)
    mark("awc")
    with autocast:
        img, txt = ctx.local_features(real_batch.images, class_tokens)
        ce = classification_loss(img, txt, real_batch.labels, ctx.config.label_smoothing)
    ce.backward()
    for p in ctx.params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    mark("ce")  # student forward/backward on the real batch and the task's class texts
    penalties = method.adjust_gradients(ctx)
    mark("awc")
    if update:
        optimizer.step()
    mark("optimizer")
    return {k: v.detach() for k, v in {"ce": ce, **terms, **penalties}.items()}


class LossLog:
    """The loss terms of a task's steps, kept on the device until a logged step reads them.

    Every step, ``add`` folds the terms' finiteness into a per-term "first non-finite step" with device ops only
    (no synchronisation); ``read`` (every ``LOG_EVERY`` steps and the last) averages the latest terms over the
    ranks, and raises ``NonFiniteLossError`` naming every term that was NaN or inf at any step so far and the
    first such step, so a non-finite loss between two reads still stops the run, on every rank at the same step.
    """

    _NONE = 2**40  # encodes "never" so that a max over ranks finds the earliest bad step

    def __init__(self, ctx: TaskContext):
        self.index, self.task, self.dist = ctx.index, ctx.task, ctx.dist
        self.latest: dict[str, torch.Tensor] = {}
        self.first_bad: dict[str, torch.Tensor] = {}

    @staticmethod
    def due(step: int, steps: int) -> bool:
        return step % LOG_EVERY == 0 or step == steps - 1

    def add(self, step: int, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            seen = self.first_bad.get(k)
            if seen is None:
                seen = torch.zeros((), dtype=torch.float64, device=v.device)
            # _NONE − step of the first bad step, 0 while every step was finite
            self.first_bad[k] = torch.where((seen == 0) & ~torch.isfinite(v), float(self._NONE - step), seen)
        self.latest = values

    def read(self, step: int) -> dict[str, float]:
        """The latest terms averaged over ranks, as floats (one host transfer); raises on a non-finite term."""
        keys = list(self.latest)
        values = self.dist.all_reduce(torch.stack([self.latest[k].detach().double() for k in keys]), op="mean")
        bad = self.dist.all_reduce(torch.stack([self.first_bad[k] for k in keys]), op="max")
        values, bad = values.tolist(), bad.tolist()
        named = [(k, self._NONE - int(b)) for k, b in zip(keys, bad, strict=True) if b > 0]
        if named:
            first = min(s for _, s in named)
            raise NonFiniteLossError(
                f"{', '.join(k for k, _ in named)} became non-finite at task {self.index + 1} ({self.task}), step "
                f"{first} (detected at step {step}); the run stopped and keeps its last finished task's checkpoint")
        return dict(zip(keys, values, strict=True))

