"""Features of a frozen model over a fixed set, computed once instead of at every step.

A teacher never changes during a task and the sets it meets are fixed (a task's synthetic draw and its
prompts, ZSCL's reference captions, LwF's class prompts), so their features are computed once, in batches,
without gradients, and every step looks up rows. Under torchrun each rank encodes its contiguous share of the
set and the shares are gathered once, so every rank holds the whole [N, D] matrix on its device and a step
indexes it with the global batch's indices (no per-step communication for teacher features).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.dist import Dist
from pipeline.models import encode_images, encode_text_batches, normalize_uint8


def _empty(model: nn.Module, device: torch.device | str) -> torch.Tensor:
    return torch.zeros(0, model.visual.output_dim, device=device)


@torch.no_grad()
def image_features(model: nn.Module, images: torch.Tensor, device: torch.device | str, dist: Dist = Dist(),
                   batch: int = 256) -> torch.Tensor:
    """L2-normalised image features [N, D] of uint8 images [N, 3, S, S] (host or device), CLIP-normalised on
    ``device`` batch by batch; each rank encodes ``dist.shard(N)`` and every rank gets all N rows."""
    mine = images[dist.shard(len(images))]
    dtype = next(model.parameters()).dtype
    parts = [encode_images(model, normalize_uint8(chunk.to(device)).to(dtype)) for chunk in mine.split(batch)]
    return dist.gather_shards(torch.cat(parts) if parts else _empty(model, device), len(images))


@torch.no_grad()
def text_features(model: nn.Module, tokens: torch.Tensor, device: torch.device | str, dist: Dist = Dist(),
                  batch: int = 256) -> torch.Tensor:
    """L2-normalised text features [N, D] of host token ids [N, L] (each batch trimmed to its longest text);
    each rank encodes ``dist.shard(N)`` and every rank gets all N rows."""
    mine = tokens[dist.shard(len(tokens))]
    local = encode_text_batches(model, mine, device, batch) if len(mine) else _empty(model, device)
    return dist.gather_shards(local, len(tokens))


def prompt_index(prompts: list[str]) -> tuple[torch.Tensor, list[int]]:
    """(id of each prompt [N] with equal ids for equal prompts, the row of each distinct prompt's first
    occurrence): features of the distinct prompts, expanded by the ids, give every row's."""
    first: dict[str, int] = {}
    ids, rows = [], []
    for i, p in enumerate(prompts):
        if p not in first:
            first[p] = len(rows)
            rows.append(i)
        ids.append(first[p])
    return torch.tensor(ids, dtype=torch.long), rows
