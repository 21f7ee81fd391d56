"""ZSCL as the reference code runs it: the teacher is the initial CLIP; every step distils on a batch of real
reference images (an ImageFolder; ImageNet train in the paper) against a batch of reference captions (a
text file, one per line), with the teacher's text features on both sides, rows and columns, T = 2; plus the
l2 penalty towards θ(t−1); and a weight ensemble: ens ← (ens·n + θ)/(n+1) over the weights at the task's
start and after every ``ensemble_every`` steps. The ensemble is the model kept at the task's end.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.models import encode_texts, eval_resize
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.training.losses import add_l2_gradient

from .base import Method, SynthBatch, TaskContext, frozen_copy
from .lwf import distill_on_teacher_texts


class ReferenceDataError(ValueError):
    """ZSCL's reference images or captions are missing or empty."""


def read_captions(path: str | None) -> list[str]:
    if not path:
        raise ReferenceDataError("zscl needs reference captions: pass --reference-texts FILE (one caption per line, e.g. "
                             "Conceptual Captions)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ReferenceDataError(f"--reference-texts {p} does not exist (a text file, one caption per line)")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ReferenceDataError(f"--reference-texts {p} holds no captions")
    return lines


def reference_folder(path: str | None):
    """The ImageFolder of reference images, with a clear error when it is missing or empty."""
    if not path:
        raise ReferenceDataError("zscl needs reference images: pass --reference-images DIR (an ImageFolder, DIR/<class>/"
                             "*.jpg; ImageNet's train folder in the paper)")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ReferenceDataError(f"--reference-images {p} is not a directory (expected DIR/<class>/*.jpg)")
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(p))
    except (FileNotFoundError, RuntimeError) as e:
        raise ReferenceDataError(f"--reference-images {p}: {e}") from e


class Ensemble:
    """Running mean of weight snapshots: ens ← (ens·n + θ)/(n+1)."""

    def __init__(self, params: list[torch.Tensor]):
        self.mean = [p.detach().clone() for p in params]
        self.n = 1

    @torch.no_grad()
    def add(self, params: list[torch.Tensor]) -> None:
        torch._foreach_mul_(self.mean, self.n / (self.n + 1))
        torch._foreach_add_(self.mean, [p.detach() for p in params], alpha=1.0 / (self.n + 1))
        self.n += 1

    @torch.no_grad()
    def copy_to(self, params: list[torch.Tensor]) -> None:
        torch._foreach_copy_(params, self.mean)


class _Captions:
    """Batches of captions from a seeded stream (same on every rank): the whole batch's token ids, tokenised
    per batch (a caption file can hold millions)."""

    def __init__(self, captions: list[str], batch: int, seed: int):
        from pipeline.training.replay import IndexStream

        self.captions, self.tokenize = captions, clip_tokenizer()
        self.stream = IndexStream(len(captions), batch, torch.Generator().manual_seed(seed))

    def next(self) -> torch.Tensor:
        return self.tokenize([self.captions[i] for i in self.stream.next_global()[0].tolist()])


class ZSCL(Method):
    name = "zscl"
    uses_anchor = True

    @classmethod
    def check(cls, config) -> None:
        read_captions(config.reference_texts)
        reference_folder(config.reference_images)
        if config.ensemble_every <= 0:
            raise ValueError(f"--ensemble-every must be positive, got {config.ensemble_every}")

    def begin_task(self, ctx: TaskContext) -> None:
        self.teacher = frozen_copy(ctx.student)
        self.teacher.load_state_dict(ctx.initial_state)
        if not hasattr(self, "reference"):  # read once per run, not per task
            self.caption_list = read_captions(self.config.reference_texts)
            self.reference = reference_folder(self.config.reference_images)
        self.captions = _Captions(self.caption_list, self.config.synthetic_batch, ctx.replay_seed + 1)
        self.ensemble = Ensemble(ctx.params)

    def replay_stream(self, ctx: TaskContext):
        from pipeline.training.replay import ImageStream

        return ImageStream(self.reference, eval_resize(ctx.image_size),
                           self.config.synthetic_batch, ctx.replay_seed, ctx.dist, ctx.device, workers=ctx.workers)

    def replay_terms(self, ctx: TaskContext, batch: SynthBatch) -> dict[str, torch.Tensor]:
        tokens = self.captions.next()
        with torch.no_grad():  # each rank encodes its share of the captions
            texts = ctx.gather(encode_texts(self.teacher, tokens[ctx.dist.shard(len(tokens))].to(ctx.device)))
        return {"zscl": self.config.alpha * distill_on_teacher_texts(ctx, self.teacher, batch.images, texts,
                                                                     self.config.temperature)}

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        return {"l2": add_l2_gradient(ctx.params, ctx.anchors, self.config.l2_weight)}

    def after_step(self, ctx: TaskContext, step: int) -> None:
        if (step + 1) % self.config.ensemble_every == 0:
            self.ensemble.add(ctx.params)

    def end_task(self, ctx: TaskContext) -> None:
        self.ensemble.copy_to(ctx.params)
        del self.teacher, self.ensemble
