"""GIFT: CE on the real batch + contrastive distillation (CD) and image-text alignment (ITA) on replayed
synthetic image-text pairs + adaptive weight consolidation (AWC) with this step's Fisher.

Ablation switches (TrainConfig): ``cd``/``ita``/``awc`` on or off, ``beta`` (ITA scale), ``teacher`` =
last | initial | wise:x, ``distill`` = contrastive | feature | image-only | text-only, ``ita_target`` =
code (smoothing 0.2, shared positives for duplicate prompts) | paper (identity, no smoothing),
``fisher_norm`` (per-tensor normalisation of F, in the code only).
"""

from __future__ import annotations

import torch

from pipeline.models import encode_images, encode_texts
from pipeline.training.losses import (
    LABEL_SMOOTHING,
    add_awc_gradient,
    add_l2_gradient,
    alignment_targets,
    contrastive_distillation,
    feature_distillation,
    fisher_scales,
    image_text_alignment,
)

from .base import Method, SynthBatch, TaskContext, frozen_copy

DISTILL = ("contrastive", "feature", "image-only", "text-only")


def teacher_state(kind: str, initial: dict[str, torch.Tensor], previous: dict[str, torch.Tensor]) -> dict:
    """Weights of the teacher: ``last`` = θ(t−1), ``initial`` = θ0, ``wise:x`` = x·θ0 + (1−x)·θ(t−1)."""
    if kind == "last":
        return previous
    if kind == "initial":
        return initial
    if kind.startswith("wise:"):
        x = float(kind.removeprefix("wise:"))
        return {k: x * initial[k].to(v) + (1 - x) * v if v.is_floating_point() else v for k, v in previous.items()}
    raise ValueError(f"unknown teacher {kind!r}; choose last, initial or wise:x (e.g. wise:0.2)")


class Gift(Method):
    name = "gift"
    uses_synthetic = True
    uses_anchor = True

    def begin_task(self, ctx: TaskContext) -> None:
        cfg = self.config
        if cfg.distill not in DISTILL:
            raise ValueError(f"unknown distillation {cfg.distill!r}; choose one of {', '.join(DISTILL)}")
        previous = {k: v.detach().clone() for k, v in ctx.student.state_dict().items()}
        self.teacher = frozen_copy(ctx.student)
        self.teacher.load_state_dict(teacher_state(cfg.teacher, ctx.initial_state, previous))
        self.fisher_grads: list[torch.Tensor] | None = None

    def replay_terms(self, ctx: TaskContext, synth: SynthBatch) -> dict[str, torch.Tensor]:
        cfg = self.config
        with torch.no_grad():
            t_img = ctx.gather(encode_images(self.teacher, synth.images))
            t_txt = ctx.gather(encode_texts(self.teacher, synth.tokens))
        s_img, s_txt = ctx.features(synth.images, synth.tokens)
        terms = {}
        if cfg.cd:
            if cfg.distill == "feature":
                cd = feature_distillation(s_img, s_txt, t_img, t_txt)
            else:  # image-only / text-only: the other student encoder is replaced by the teacher's
                img = t_img if cfg.distill == "text-only" else s_img
                txt = t_txt if cfg.distill == "image-only" else s_txt
                cd = contrastive_distillation(img, txt, t_img, t_txt, T=cfg.temperature)
            terms["cd"] = cfg.alpha * cd
        if cfg.ita and cfg.beta > 0:
            if cfg.ita_target == "paper":
                targets, smoothing = torch.eye(len(synth.prompts), device=s_img.device), 0.0
            else:
                targets, smoothing = alignment_targets(synth.prompts, s_img.device), LABEL_SMOOTHING
            a, b = image_text_alignment(s_img, s_txt, targets, smoothing)
            terms["ita"] = cfg.beta * (a + b)
        return terms

    def after_replay_backward(self, ctx: TaskContext) -> None:
        if self.config.awc:  # this step's ∇(α·CD + β·ITA), kept for F before CE's backward accumulates
            self.fisher_grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                                 for p in ctx.params]

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        if not self.config.awc:
            if self.config.l2_without_awc:  # the released code's "without AWC" rows run with --l2 1
                return {"l2": add_l2_gradient(ctx.params, ctx.anchors, self.config.l2_weight)}
            return {}
        if self.fisher_grads is None:
            return {}
        scales = fisher_scales(self.fisher_grads, normalize=self.config.fisher_norm)
        penalty = add_awc_gradient(ctx.params, ctx.anchors, self.fisher_grads, scales, self.config.lam)
        self.fisher_grads = None
        return {"awc": penalty}

    def end_task(self, ctx: TaskContext) -> None:
        del self.teacher
