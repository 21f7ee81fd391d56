"""CLTS's trained parts on frozen CLIP features: a linear head per task, a task router, and their predictions.

* Head t: ``nn.Linear(D, n_t)`` over task t's classes (labels 0..n_t-1 in class order), trained once, on task t's real
  training images, and never touched again.
* Router: a 2-layer MLP ``D -> hidden -> k+1`` (ReLU), re-initialised and trained after every task k on the renders
  of the captions of tasks 0..k, labels = task index, balanced per task (every task contributes as many samples per
  epoch as the largest one: its renders cycled in seeded permutations).
* Prediction, no task id: hard routing takes t̂ = argmax router(x), then task t̂'s head's argmax; soft routing takes
  the argmax over every seen class of p(t|x)·p(c|x,t). The oracle (task-aware) prediction gives each image its own
  task's head.

Training is plain AdamW on cross-entropy over seeded index streams (a pure function of the seed), constant rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

ROUTINGS = ("hard", "soft")


class Router(nn.Sequential):
    """Image features [n, D] -> task logits [n, tasks]: Linear(D, hidden), ReLU, Linear(hidden, tasks)."""

    def __init__(self, dim: int, hidden: int, tasks: int):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, tasks))


class CltsModel(nn.Module):
    """The heads so far and the current router (None until a second task exists: with one task every image goes to
    its head). Its ``state_dict`` is what a run checkpoints after each task."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.heads = nn.ModuleList()
        self.router: Router | None = None

    def add_head(self, classes: int) -> nn.Linear:
        self.heads.append(nn.Linear(self.dim, classes))
        return self.heads[-1]

    def new_router(self, tasks: int) -> Router:
        self.router = Router(self.dim, self.hidden, tasks)
        return self.router

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], dim: int, hidden: int) -> CltsModel:
        """The model a checkpoint holds: as many heads as it has, each of its size, and its router."""
        model = cls(dim, hidden)
        tasks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("heads."))
        for t in range(tasks):
            model.add_head(state[f"heads.{t}.weight"].shape[0])
        if "router.2.weight" in state:
            model.new_router(state["router.2.weight"].shape[0])
        model.load_state_dict(state)
        return model


def cycled(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``length`` indices of 0..n-1: seeded permutations one after the other (every index once per pass)."""
    passes = math.ceil(length / n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[:length]


def balanced(groups: Sequence[torch.Tensor], epochs: float, generator: torch.Generator) -> torch.Tensor:
    """An index stream over ``groups`` (each a tensor of sample indices, one per task) in which every group weighs the
    same: each epoch takes max(len) samples of every group (its members cycled), shuffled together; ``epochs`` of
    them (a fraction cuts the last)."""
    most = max(len(g) for g in groups)
    epoch = len(groups) * most
    whole = math.ceil(epochs)
    per = [cycled(len(g), whole * most, generator) for g in groups]
    stream = []
    for e in range(whole):
        chunk = torch.cat([g[p[e * most : (e + 1) * most]] for g, p in zip(groups, per, strict=True)])
        stream.append(chunk[torch.randperm(len(chunk), generator=generator)])
    return torch.cat(stream)[: max(1, math.ceil(epochs * epoch))]


def fit(module: nn.Module, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, *, batch: int, lr: float,
        weight_decay: float = 0.0, label_smoothing: float = 0.0,
        on_step: Callable[[int, int, torch.Tensor], None] = lambda step, steps, loss: None) -> None:
    """AdamW on CE over ``x`` [N, D] / ``y`` [N] in the sample order ``order`` (indices into them), ``batch`` at a
    time (the last batch may be short); ``on_step(step, steps, loss)`` after each update (loss on the device)."""
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(len(order) / batch)
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch].to(x.device)
        loss = nn.functional.cross_entropy(module(x[idx]), y[idx], label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        on_step(step, steps, loss.detach())
    module.eval()


@torch.no_grad()
def route(model: CltsModel, x: torch.Tensor) -> torch.Tensor:
    """p(t|x) [n, tasks so far] (one task: all ones)."""
    if model.router is None:
        return torch.ones(len(x), len(model.heads), device=x.device)
    return model.router(x).softmax(dim=1)


@torch.no_grad()
def predict(model: CltsModel, x: torch.Tensor, classes: Sequence[Sequence[int]], routing: str = "hard"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted original labels [n], routed task [n]) of features ``x`` [n, D]; ``classes[t]`` = task t's
    original labels in head order (the setting's steps)."""
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; choose {' or '.join(ROUTINGS)}")
    p_task = route(model, x)
    routed = p_task.argmax(dim=1)
    labels = [torch.tensor(list(c), device=x.device) for c in classes]
    if routing == "soft":  # every seen class scored by p(t|x)·p(c|x,t), in task-then-head order
        joint = torch.cat([p_task[:, t : t + 1] * head(x).softmax(dim=1) for t, head in enumerate(model.heads)], dim=1)
        return torch.cat(labels)[joint.argmax(dim=1)], routed
    predicted = torch.empty(len(x), dtype=torch.long, device=x.device)
    for t, head in enumerate(model.heads):
        mine = routed == t
        if mine.any():
            predicted[mine] = labels[t][head(x[mine]).argmax(dim=1)]
    return predicted, routed


@torch.no_grad()
def predict_oracle(model: CltsModel, x: torch.Tensor, tasks: torch.Tensor, classes: Sequence[Sequence[int]]) -> torch.Tensor:
    """Predicted original labels [n] when each image is given its own task ``tasks`` [n] (task-aware accuracy)."""
    predicted = torch.empty(len(x), dtype=torch.long, device=x.device)
    for t, head in enumerate(model.heads):
        mine = tasks == t
        if mine.any():
            predicted[mine] = torch.tensor(list(classes[t]), device=x.device)[head(x[mine]).argmax(dim=1)]
    return predicted
