"""Process-group plumbing shared by both stages: one process per GPU under ``torchrun`` (gloo on CPU), on one
node or several (``torchrun --nnodes N --rdzv_backend c10d``: RANK is global, LOCAL_RANK picks the GPU).

Nothing here is needed by a single process: every helper is the identity when ``world == 1``.

Ranks stop together. A rank that raised alone would leave the others in their next collective until gloo reports
a closed connection deep inside a traceback; :meth:`Dist.agree` gathers every rank's verdict first, so all of them
stop with one line naming the ranks at fault, and :meth:`Dist.check_shared` uses it to refuse, before any work, a
directory that not every node sees (an OUT or --runs that is not on a shared filesystem).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as td

# The marker rank 0 writes into a directory every rank must see; named like the `.*.tmp-*` temporaries that
# shard sets clean up when they are reopened, so one left by a killed run is removed there.
SHARED_MARK = ".shared-check.tmp-"
SEE_TRIES, SEE_WAIT_S = 10, 0.2  # a few seconds for a network filesystem to show a file another node just wrote


class RankStoppedError(ValueError):
    """Some ranks cannot go on; every rank raises it together, with one message naming those ranks."""


class PeerLostError(RuntimeError):
    """A collective failed because another process of the run stopped (its own error is in its output)."""


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

    @contextmanager
    def _peers(self, what: str):
        """A collective whose failure means another process stopped: say so in one line, not gloo's traceback."""
        try:
            yield
        except RuntimeError as e:  # gloo: "Connection closed by peer"; NCCL: a timeout
            raise PeerLostError(
                f"rank {self.rank}: another process of this run stopped or stalled ({type(e).__name__} in {what}); "
                "its own error is in its output (on its node); re-run the same command on every node to resume"
            ) from e

    def barrier(self) -> None:
        if self.world > 1:
            with self._peers("a barrier"):
                td.barrier()

    def agree(self, error: str | None, advice: str = "") -> None:
        """Stop every rank together when any rank has an ``error`` (``None``: this rank can go on).

        Every rank must call it at the same point (it is also a barrier). Raises :class:`RankStoppedError` on every
        rank, with the same message: each failed rank, its host and its error, then ``advice`` (what to change).
        """
        if self.world == 1:
            verdicts = [(error, socket.gethostname())]
        else:
            verdicts = [None] * self.world
            with self._peers("a check all ranks make"):
                td.all_gather_object(verdicts, (error, socket.gethostname()))
        failed = [f"rank {r} (on {host}) stopped: {e.rstrip('.')}" for r, (e, host) in enumerate(verdicts) if e]
        if failed:
            raise RankStoppedError("; ".join(failed) + (f". {advice}" if advice else ""))

    def check_shared(self, directory: Path, option: str, consequence: str = "") -> None:
        """Refuse a ``directory`` that some rank does not see as rank 0 made it, before any work is done.

        Rank 0 creates ``directory`` and writes a marker with a fresh nonce into it; every rank then reads the
        marker back through its own path. A node whose ``option`` (e.g. ``OUT``) is a local directory sees no
        marker (or a stale copy without this nonce), and every rank stops with one line saying that ``option``
        must be on a filesystem all nodes share. The marker is removed afterwards.
        """
        if self.world == 1:
            return
        directory = Path(directory)
        token = [secrets.token_hex(8), socket.gethostname(), None] if self.main else [None, None, None]
        mark = None
        if self.main:
            mark = directory / f"{SHARED_MARK}{token[0]}"
            try:
                directory.mkdir(parents=True, exist_ok=True)
                mark.write_text(token[0])
            except OSError as e:  # told to every rank, so none waits for a marker that never comes
                token[2] = f"it cannot write into {directory}: {e}"
        with self._peers("a check all ranks make"):
            td.broadcast_object_list(token, src=0)
        nonce, host0, failed0 = token
        if self.main:
            error = failed0
        else:
            error = None if failed0 or _sees(directory / f"{SHARED_MARK}{nonce}", nonce) else (
                f"it does not see {directory}, which rank 0 created on {host0}")
        try:
            self.agree(error, f"{option} must be on a filesystem all nodes share (the same path on every node)"
                       + (f"; {consequence}" if consequence else ""))
        finally:
            if mark is not None:
                mark.unlink(missing_ok=True)

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


def _sees(mark: Path, nonce: str) -> bool:
    """True when ``mark`` holds ``nonce``; retried briefly, as a network filesystem may show it late."""
    for attempt in range(SEE_TRIES):
        try:
            if mark.read_text() == nonce:
                return True
        except OSError:
            pass
        if attempt + 1 < SEE_TRIES:
            time.sleep(SEE_WAIT_S)
    return False
