"""One training step: the hook contract of ``methods/base.py`` in order, shared by the loop and the benchmark."""

from __future__ import annotations

import math

import torch

from pipeline.methods import TaskContext

from .losses import classification_loss


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the run stops and keeps its last good checkpoint."""


def run_step(ctx: TaskContext, method, replay_batch, real_batch, class_tokens: torch.Tensor, optimizer, autocast, *,
             step: int = 0, mark=None, update: bool = True) -> dict[str, float]:
    """One training step, the hook contract of ``methods/base.py``; returns the losses (mean over ranks).

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
    mark("replay")  # teacher forward + student forward/backward on the replayed batch
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
    values = {"ce": ce, **terms, **penalties}
    losses = {}
    if update:
        # one small all-reduce: every rank sees the same (mean) losses, so all stop together when one is bad
        stacked = ctx.dist.all_reduce(torch.stack([v.detach().float() for v in values.values()]), op="mean")
        if not torch.isfinite(stacked).all():
            bad = [k for k, v in zip(values, stacked.tolist(), strict=True) if not math.isfinite(v)]
            raise NonFiniteLossError(f"{', '.join(bad)} became non-finite at task {ctx.index + 1} ({ctx.task}), "
                                     f"step {step}; the run stopped and keeps its last finished task's checkpoint")
        optimizer.step()
        losses = dict(zip(values, stacked.tolist(), strict=True))
    mark("optimizer")
    return losses
