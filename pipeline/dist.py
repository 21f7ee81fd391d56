"""Process-group plumbing shared by both stages: one process per GPU under ``torchrun`` (gloo on CPU).

Nothing here is needed by a single process: every helper is the identity when ``world == 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as td


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        """The layout torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (one process without them)."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device, timeout: timedelta = timedelta(hours=72)) -> bool:
        """Join the process group (nccl on CUDA, gloo otherwise); True when this call created it."""
        if self.world == 1 or td.is_initialized():
            return False
        td.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        return True

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place, and returned: the sum (or mean) of ``tensor`` over ranks."""
        if self.world > 1:
            td.all_reduce(tensor)
            if op == "mean":
                tensor /= self.world
        return tensor

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``x`` [b, ...] in rank order -> [world·b, ...], differentiably.

        The backward sums the gradient from every rank, so a loss that each rank computes identically on the
        gathered batch, with gradients then averaged by DistributedDataParallel, yields exactly the
        gradient of that loss on one process holding the whole batch.
        """
        if self.world == 1:
            return x
        import torch.distributed.nn.functional as dnn

        return torch.cat(dnn.all_gather(x.contiguous()), dim=0)

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)
