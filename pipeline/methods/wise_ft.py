"""WiSE-FT as a continual baseline: fine-tune each task with CE, then θ ← α·θ + (1−α)·θ(t−1), α = 0.8."""

from __future__ import annotations

import torch

from .base import Method, TaskContext


@torch.no_grad()
def interpolate_(params: list[torch.Tensor], anchors: list[torch.Tensor], alpha: float) -> None:
    """In place: θ ← α·θ + (1−α)·anchor, for every tensor at once."""
    torch._foreach_mul_(params, alpha)
    torch._foreach_add_(params, anchors, alpha=1.0 - alpha)


class WiseFT(Method):
    name = "wise-ft"
    uses_anchor = True

    def end_task(self, ctx: TaskContext) -> None:
        interpolate_(ctx.params, ctx.anchors, self.config.wise_alpha)
