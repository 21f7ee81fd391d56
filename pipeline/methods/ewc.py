"""The paper's EWC variant (Table 6): GIFT's CD + ITA with a *static* Fisher instead of AWC. Before each task,
F = mean over ⌈ewc_samples / B⌉ synthetic batches of the squared gradient of α·CD + β·ITA (per-tensor
normalised like AWC), then fixed for the whole task: penalty λ·Σ F·(θ − θ(t−1))². The teacher's features of the
draw come from GIFT's once-per-task cache, so the Fisher batches run no teacher forward.
"""

from __future__ import annotations

import math

import torch

from pipeline.losses import add_fisher_gradient
from pipeline.replay.streams import SyntheticStream

from .base import TaskContext
from .gift import Gift


@torch.no_grad()
def normalise_(fisher: list[torch.Tensor]) -> None:
    """F_i ← F_i / mean(F_i) per tensor (all-zero tensors stay zero)."""
    means = torch.stack(torch._foreach_norm(fisher, 1))  # F ≥ 0: the L1 norm is the sum
    torch._foreach_div_(list(means.unbind()), [float(f.numel()) for f in fisher])
    torch._foreach_mul_(fisher, list(torch.where(means > 0, 1.0 / means, torch.zeros_like(means)).unbind()))


class EWC(Gift):
    name = "ewc"

    @classmethod
    def check(cls, config) -> None:
        if config.ewc_samples <= 0:
            raise ValueError(f"--ewc-samples must be positive, got {config.ewc_samples}")

    def begin_task(self, ctx: TaskContext) -> None:
        super().begin_task(ctx)
        stream = SyntheticStream(ctx.synthetic, self.config.synthetic_batch, ctx.replay_seed + 1, ctx.dist,
                                 ctx.device)
        batches = math.ceil(self.config.ewc_samples / self.config.synthetic_batch)
        fisher = [torch.zeros_like(p) for p in ctx.params]
        for _ in range(batches):
            for p in ctx.params:
                p.grad = None
            terms = self.replay_terms(ctx, stream.next())
            if terms:
                sum(terms.values()).backward()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ctx.params]
            torch._foreach_addcmul_(fisher, grads, grads, value=1.0 / batches)
        for p in ctx.params:
            p.grad = None
        if self.config.fisher_norm:
            normalise_(fisher)
        self.fisher = fisher

    def after_replay_backward(self, ctx: TaskContext) -> None:
        pass  # the Fisher is static: nothing read from this step's gradients

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        return {"ewc": add_fisher_gradient(ctx.params, ctx.anchors, self.fisher, self.config.lam)}

    def end_task(self, ctx: TaskContext) -> None:
        super().end_task(ctx)
        del self.fisher
