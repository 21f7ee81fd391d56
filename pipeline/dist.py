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
        """In place, and returned: the sum (or mean, or max) of ``tensor`` over ranks."""
        if self.world > 1:
            td.all_reduce(tensor, op=td.ReduceOp.MAX if op == "max" else td.ReduceOp.SUM)
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

    @torch.no_grad()
    def gather_shards(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's ``x`` = its rows ``shard(n)`` of an [n, ...] result -> the whole [n, ...] on every rank
        (not differentiable): what each rank computes once for a share of a fixed set (teacher features)."""
        if self.world == 1:
            return x
        rows = -(-n // self.world)  # shares differ by at most one row: pad each to the largest
        padded = x.new_zeros((rows, *x.shape[1:]))
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        td.all_gather(parts, padded)
        sizes = [len(range(n)[Dist(r, self.world).shard(n)]) for r in range(self.world)]
        return torch.cat([p[:k] for p, k in zip(parts, sizes, strict=True)])

    def all_true(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """Whether ``flag`` holds on every rank (one small all-reduce; every rank gets the same answer)."""
        if self.world == 1:
            return flag
        t = torch.tensor([0 if flag else 1], device=device)
        return self.all_reduce(t).item() == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)
