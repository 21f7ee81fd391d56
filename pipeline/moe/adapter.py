"""One expert: the bottleneck adapter of MoE-Adapters4CL (``mtil/clip/adapter.py``), as its blocks configure it.

    E(x) = 0.1 · up(dropout(relu(down(x))))        down: d→64, up: 64→d; no layer norm, no residual inside

``down.weight`` keeps nn.Linear's kaiming-uniform init; ``down.bias``, ``up.weight`` and ``up.bias`` start at zero, so
every expert outputs exactly 0 and the model starts as CLIP.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BOTTLENECK = 64  # hard-coded in the released adapter
SCALE = 0.1  # a fixed float (adapter_scalar), not learned
DROPOUT = 0.1


class Adapter(nn.Module):
    def __init__(self, width: int, bottleneck: int = BOTTLENECK, scale: float = SCALE, dropout: float = DROPOUT):
        super().__init__()
        self.scale, self.dropout = scale, dropout
        self.down_proj = nn.Linear(width, bottleneck)  # the released checkpoint's names
        self.up_proj = nn.Linear(bottleneck, width)
        with torch.no_grad():
            self.down_proj.bias.zero_()
            self.up_proj.weight.zero_()
            self.up_proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(F.relu(self.down_proj(x)), p=self.dropout, training=self.training)
        return self.up_proj(hidden) * self.scale


def adapter_params(width: int, bottleneck: int = BOTTLENECK) -> int:
    """Parameters of one expert: 2·64·d + 64 + d (99,136 at d = 768; 66,112 at d = 512)."""
    return 2 * bottleneck * width + bottleneck + width
