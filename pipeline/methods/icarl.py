"""iCaRL as the MTIL baseline: a memory of real exemplars (``memory_size`` = 10,000 over all classes seen so
far, chosen by herding on the model's image features after each task), replayed with distillation against
the previous model: logits = 100·image features × teacher text features of every seen class, rows and
columns, T = 2, weighted ``alpha`` (1 in MTIL; 5 in CIL, the harness's `5 * loss + 5 * loss_2`).

The memory holds file references, (task, sample index) pairs, never decoded images: exemplars are loaded by
the data loader like any other image, and the memory after task t is saved beside the checkpoints
(``icarl-memory-taskNN.json``) so a resumed run replays the same exemplars.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.datasets import catalog
from pipeline.evaluation.evaluate import Transformed
from pipeline.models import encode_images, eval_resize, normalize_uint8
from pipeline.models import tokenizer as clip_tokenizer
from shards.layout import atomic_write_bytes

from . import frozen
from .base import Kept, Method, SynthBatch, TaskContext, frozen_copy
from .lwf import distill_on_teacher_texts


def herding(features: torch.Tensor, m: int) -> list[int]:
    """iCaRL's herding: p_k = argmin_i ‖μ − (φ(x_i) + Σ_{j<k} φ(p_j))/k‖ over not yet chosen i; [n, D] -> ≤ m ids."""
    mu = features.mean(dim=0)
    running = torch.zeros_like(mu)
    taken = torch.zeros(len(features), dtype=torch.bool)
    chosen: list[int] = []
    for k in range(1, min(m, len(features)) + 1):
        dist = ((mu - (running + features) / k) ** 2).sum(dim=1)
        dist[taken] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        taken[i] = True
        running += features[i]
    return chosen


class Memory(Dataset):
    """Exemplars as (task, index) references into the tasks' training sets: {task: {class: [index, ...]}}."""

    def __init__(self, entries: dict[str, dict[int, list[int]]], datasets: dict):
        self.entries, self.datasets = entries, datasets
        self.refs = [(t, i) for t, by_class in entries.items() for ids in by_class.values() for i in ids]

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, k: int):
        task, i = self.refs[k]
        return self.datasets[task][i]


def memory_file(run_dir: Path, tasks_done: int) -> Path:
    return Path(run_dir) / f"icarl-memory-task{tasks_done:02d}.json"


class ICaRL(Method):
    name = "icarl"
    replays = "exemplars (real images)"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.entries: dict[str, dict[int, list[int]]] | None = None

    @classmethod
    def kept(cls, run_dir: Path, cfg: dict, state: dict) -> Kept:
        """The exemplars after the last finished task, as raw uint8 images of the CIL dataset's native size (MTIL's
        images have no fixed size: counted, not sized)."""
        path = memory_file(run_dir, state.get("finished", 0))
        if not path.exists():
            return Kept(0, "nothing yet")
        count = sum(len(ids) for by_class in json.loads(path.read_text()).values() for ids in by_class.values())
        order = str(cfg.get("order"))
        if not catalog.is_cil(order):
            return Kept(None, f"{count:,} exemplars (real images)")
        h, w, c = catalog.native_shape(catalog.get_setting(order).dataset)
        return Kept(count * h * w * c, f"{count:,} exemplars, {h}×{w}×{c} uint8")

    def begin_task(self, ctx: TaskContext) -> None:
        if self.entries is None:  # a fresh or resumed run: the memory after the tasks already done
            path = memory_file(ctx.run_dir, ctx.index) if ctx.run_dir is not None else None
            raw = json.loads(path.read_text()) if ctx.index and path and path.exists() else {}
            self.entries = {t: {int(c): ids for c, ids in by_class.items()} for t, by_class in raw.items()}
        self.teacher = frozen_copy(ctx.student)
        prompts = [ctx.lookup(t).prompt(c) for t in self.entries for c in range(ctx.lookup(t).num_classes)]
        self.texts = frozen.text_features(self.teacher, clip_tokenizer()(prompts), ctx.device,
                                          ctx.dist) if prompts else None

    def replay_stream(self, ctx: TaskContext):
        if not self.entries:
            return None  # the first task: nothing remembered yet
        from pipeline.replay.streams import ImageStream

        return ImageStream(Memory(self.entries, ctx.datasets), eval_resize(ctx.image_size),
                           self.config.synthetic_batch, ctx.replay_seed, ctx.dist, ctx.device, workers=ctx.workers)

    def replay_terms(self, ctx: TaskContext, batch: SynthBatch) -> dict[str, torch.Tensor]:
        return {"icarl": self.config.alpha * distill_on_teacher_texts(ctx, self.teacher, batch.images, self.texts,
                                                                      self.config.temperature)}

    @torch.no_grad()
    def end_task(self, ctx: TaskContext) -> None:
        del self.teacher, self.texts
        dataset = ctx.datasets[ctx.task]
        loader = DataLoader(Transformed(dataset, eval_resize(ctx.image_size)), batch_size=256,
                            num_workers=ctx.workers)
        was_training = ctx.student.training
        ctx.student.eval()
        feats, labels = [], []
        for images, y in loader:
            feats.append(encode_images(ctx.student, normalize_uint8(images.to(ctx.device))).float().cpu())
            labels.append(y)
        ctx.student.train(was_training)
        feats, labels = torch.cat(feats), torch.cat(labels)
        seen = sum(len(c) for c in self.entries.values()) + ctx.lookup(ctx.task).num_classes
        per_class = self.config.memory_size // max(1, seen)
        # herding order is prefix-consistent: shrinking an old class keeps its first exemplars
        self.entries = {t: {c: ids[:per_class] for c, ids in by_class.items()} for t, by_class in self.entries.items()}
        self.entries[ctx.task] = {}
        for c in labels.unique().tolist():
            members = (labels == c).nonzero().flatten()
            self.entries[ctx.task][c] = [int(members[i]) for i in herding(feats[members], per_class)]
        if ctx.dist.main and ctx.run_dir is not None:
            atomic_write_bytes(memory_file(ctx.run_dir, ctx.index + 1), json.dumps(self.entries).encode())
