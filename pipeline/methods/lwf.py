"""LwF as the reference code runs it (docs/protocol.md, "Baselines"): the teacher is the previous model; the
replayed images are the current task's own training images (evaluation transform); the texts are its class
prompts, encoded once by the teacher. Logits = 100·image features × teacher text features, for the student
(its image features) and the teacher (its own); distillation on rows and columns, T = 2.

``lwf-vr`` replaces the texts by random 10-token "sentences", new ones for every task as the reference draws them, each
task's fixed by the run's seed and the task's index (``task_sentences``), of ids drawn over the whole
vocabulary, 0..49407, as the reference's ``virtual_vocab`` draws them (so a sentence may hold the start or end
id itself; CLIP reads its feature where open_clip does, at the first largest id).
"""

from __future__ import annotations

import torch

from pipeline.losses import contrastive_distillation
from pipeline.models import encode_images, eval_resize
from pipeline.models import tokenizer as clip_tokenizer

from . import frozen
from .base import Method, SynthBatch, TaskContext, frozen_copy

SOT, EOT, VOCAB = 49406, 49407, 49408  # CLIP's BPE: start / end of text, vocabulary size


def distill_on_teacher_texts(ctx: TaskContext, teacher, images: torch.Tensor, texts: torch.Tensor, T: float):
    """CD with the teacher's text features on both sides: S = 100·s_img·textsᵀ, S′ = 100·t_img·textsᵀ."""
    with torch.no_grad():
        t_img = ctx.gather(encode_images(teacher, images))
    s_img, _ = ctx.features(images, None)
    return contrastive_distillation(s_img, texts, t_img, texts, T=T)


def random_sentences(n: int, length: int, seed: int) -> torch.Tensor:
    """``n`` token sequences [n, 77]: start id, ``length`` ids drawn uniformly over the whole vocabulary
    (0..49407, end id included), end id, zeros."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, 77, dtype=torch.long)
    tokens[:, 0] = SOT
    tokens[:, 1 : length + 1] = torch.randint(0, VOCAB, (n, length), generator=g)
    tokens[:, length + 1] = EOT
    return tokens


def task_sentences(n: int, seed: int, index: int) -> torch.Tensor:
    """LwF-VR's ``n`` random sentences of task ``index`` (0-based) of a run of seed ``seed``: a fresh draw per task
    (the harness draws new ones at every task), seeded as the task's own generator is (``seed·1000 + index``), so two
    runs of one seed replay the same sentences."""
    return random_sentences(n, 10, seed * 1000 + index)


class LwF(Method):
    name = "lwf"
    replays = "the current task's images (real)"

    def begin_task(self, ctx: TaskContext) -> None:
        self.teacher = frozen_copy(ctx.student)
        self.texts = frozen.text_features(self.teacher, self.text_tokens(ctx), ctx.device, ctx.dist)  # once per task

    def text_tokens(self, ctx: TaskContext) -> torch.Tensor:
        spec = ctx.lookup(ctx.task)
        return clip_tokenizer()([spec.prompt(c) for c in range(spec.num_classes)])

    def replay_stream(self, ctx: TaskContext):
        from pipeline.replay.streams import ImageStream

        return ImageStream(ctx.datasets[ctx.task], eval_resize(ctx.image_size), self.config.synthetic_batch,
                           ctx.replay_seed, ctx.dist, ctx.device, workers=ctx.workers)

    def replay_terms(self, ctx: TaskContext, batch: SynthBatch) -> dict[str, torch.Tensor]:
        return {"lwf": self.config.alpha * distill_on_teacher_texts(ctx, self.teacher, batch.images, self.texts,
                                                                    self.config.temperature)}

    def end_task(self, ctx: TaskContext) -> None:
        del self.teacher, self.texts


class LwFVR(LwF):
    name = "lwf-vr"

    def text_tokens(self, ctx: TaskContext) -> torch.Tensor:
        return task_sentences(self.config.random_texts, self.config.seed, ctx.index)

