"""ZSCL as the reference code runs it: the teacher is the initial CLIP; every step distils a batch of real
reference images (an ImageFolder; ImageNet train in the paper) against **all** reference captions (a text file,
one per line; ≈13-16k Conceptual Captions lines in the paper), with the teacher's text features on both sides:
logits B × N, rows and columns, T = 2; plus the l2 penalty towards θ(t−1) (weight ``l2_weight``: 1 in MTIL, 0 in CIL,
where the harness's configs set `l2: 0` or leave it out); and a weight ensemble: ens ← (ens·n + θ)/(n+1) over the
weights at the task's start and after every update whose 0-based step is a multiple of ``ensemble_every``, the first
update included (the reference's `iteration % avg_freq == 0` in both benchmarks: after updates 1, 1 + every, ...).
The ensemble is the model kept at the task's end.

The reference re-encodes all N captions at every step; they are the same every step of every task (the teacher
never changes), so here they are encoded once per run and kept on the device and in the run directory.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from pipeline.losses import add_l2_gradient
from pipeline.models import eval_resize
from pipeline.models import tokenizer as clip_tokenizer
from shards.layout import atomic_write_bytes, spec_hash

from . import frozen
from .base import Method, SynthBatch, TaskContext, frozen_copy
from .lwf import distill_on_teacher_texts

log = logging.getLogger("gift.zscl")


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


def ensemble_step(step: int, every: int) -> bool:
    """Whether the weights after update ``step`` (0-based) join the ensemble: the reference's `iteration % every ==
    0`, its iteration being the 0-based step, so the first update is a member (MTIL, every 100: after updates 1, 101,
    ..., 901 of the 1,000 run here; CIL, every 10: 1, 11, 21, ...)."""
    return step % every == 0


CACHE_FORMAT = "gift-zscl-captions/1"


def text_tower_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of every text-tower tensor of a CLIP state dict (names, dtypes, shapes, bytes): what, besides the
    captions, defines their features."""
    h = hashlib.sha256()
    for name in sorted(state):
        if name.startswith(("visual.", "logit_")):
            continue
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.flatten().view(torch.uint8).numpy())
    return h.hexdigest()


def caption_features(teacher: torch.nn.Module, teacher_state: dict[str, torch.Tensor], path: str,
                     ctx: TaskContext) -> torch.Tensor:
    """The teacher's L2-normalised features [N, D] of every reference caption, on the device, computed once per
    run: in batches without gradients (each rank a share, gathered), then kept in the run directory under a name
    keyed by the caption file's sha256 and the teacher's text tower, written under a temporary name and renamed
    (by rank 0), so a resumed run reads them back instead of encoding again. Every rank holds the whole matrix.
    """
    raw = Path(path).expanduser().read_bytes()
    key = {"format": CACHE_FORMAT, "captions_sha256": hashlib.sha256(raw).hexdigest(),
           "text_tower_sha256": text_tower_digest(teacher_state)}
    cache = Path(ctx.run_dir) / f"zscl-captions-{spec_hash(key)[:16]}.safetensors" if ctx.run_dir else None
    captions = read_captions(path)
    if cache is not None and ctx.dist.all_true(cache.is_file(), ctx.device):  # every rank reads the same file
        with safe_open(str(cache), "pt") as f:
            texts = f.get_tensor("texts") if f.metadata() == {k: str(v) for k, v in key.items()} else None
        if texts is not None and len(texts) == len(captions):
            log.info("zscl: the teacher's features of %d captions read from %s", len(texts), cache)
            return texts.to(ctx.device)
    log.info("zscl: encoding %d reference captions with the initial CLIP (once per run)", len(captions))
    texts = frozen.text_features(teacher, clip_tokenizer()(captions), ctx.device, ctx.dist)
    if cache is not None and ctx.dist.main:
        atomic_write_bytes(cache, save({"texts": texts.float().cpu().contiguous()},
                                       metadata={k: str(v) for k, v in key.items()}))
    return texts


class ZSCL(Method):
    name = "zscl"
    replays = "reference images (real)"
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
        if not hasattr(self, "reference"):  # once per run, not per task: the teacher is always the initial CLIP
            self.reference = reference_folder(self.config.reference_images)
            self.texts = caption_features(self.teacher, ctx.initial_state, self.config.reference_texts, ctx)
        self.ensemble = Ensemble(ctx.params)

    def replay_stream(self, ctx: TaskContext):
        from pipeline.replay.streams import ImageStream

        return ImageStream(self.reference, eval_resize(ctx.image_size),
                           self.config.synthetic_batch, ctx.replay_seed, ctx.dist, ctx.device, workers=ctx.workers)

    def replay_terms(self, ctx: TaskContext, batch: SynthBatch) -> dict[str, torch.Tensor]:
        """Logits 100·image features × every caption's teacher feature, [B, N]: rows (each image over all
        captions) and columns (each caption over the B images), T = 2."""
        return {"zscl": self.config.alpha * distill_on_teacher_texts(ctx, self.teacher, batch.images, self.texts,
                                                                     self.config.temperature)}

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        if not self.config.l2_weight:  # the reference adds l2 only when its weight is > 0 (CIL: never)
            return {}
        return {"l2": add_l2_gradient(ctx.params, ctx.anchors, self.config.l2_weight)}

    def after_step(self, ctx: TaskContext, step: int) -> None:
        if ensemble_step(step, self.config.ensemble_every):
            self.ensemble.add(ctx.params)

    def end_task(self, ctx: TaskContext) -> None:
        self.ensemble.copy_to(ctx.params)
        del self.teacher, self.ensemble
