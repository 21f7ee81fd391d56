"""GIFT: CE on the real batch + contrastive distillation (CD) and image-text alignment (ITA) on replayed
synthetic image-text pairs + adaptive weight consolidation (AWC) with this step's Fisher.

Ablation switches (TrainConfig): ``cd``/``ita``/``awc`` on or off, ``beta`` (ITA scale), ``teacher`` =
last | initial | wise:x, ``distill`` = contrastive | feature | image-only | text-only, ``ita_target`` =
code (smoothed with the run's ``label_smoothing``, as the released step smooths ITA with its `args.ls`: 0.2 on MTIL
and CIFAR100, 0 on TinyImageNet CIL; shared positives for duplicate prompts) | paper (identity, no smoothing),
``fisher_norm`` (per-tensor normalisation of F, in the code only). The distillation ablations follow the
released code (docs/protocol.md, "Losses"): ``image-only`` / ``text-only`` distil and align on the mixed matrix,
``feature`` is a mean squared error over all B·D elements, and AWC gives F = 1e-6 to a trained tensor the
distillation backward does not reach.
"""

from __future__ import annotations

import torch

from pipeline.losses import (
    add_awc_gradient,
    add_l2_gradient,
    alignment_targets,
    contrastive_distillation,
    feature_distillation,
    image_text_alignment,
)

from . import frozen
from .base import Kept, Method, SynthBatch, TaskContext, frozen_copy
from .clts import caption_kept
from .frozen import prompt_index

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


def gift_terms(cfg, s_img: torch.Tensor | None, s_txt: torch.Tensor | None, t_img: torch.Tensor,
               t_txt: torch.Tensor, prompt_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """GIFT's replay terms from the whole batch's features [B, D]: ``cd`` = α·distillation, ``ita`` = β·(CE(S, Y) +
    CE(Sᵀ, Y)); ``prompt_ids`` [B] (equal ids = equal prompts) give ITA's targets.

    ``contrastive``: S = 100·s_img·s_txtᵀ against S′ = 100·t_img·t_txtᵀ. ``image-only`` / ``text-only`` (the
    released code): the student's matrix is S_mix = 100·s_img·t_txtᵀ (or 100·t_img·s_txtᵀ) for CD *and* ITA, and
    the unused student side may be None. ``feature``: mean squared error over all B·D elements of the image and
    the text features, ITA on S.
    """
    t_img, t_txt = t_img.detach(), t_txt.detach()  # the teacher's side never receives a gradient
    own_img, own_txt = cfg.distill != "text-only", cfg.distill != "image-only"
    img, txt = (s_img if own_img else t_img), (s_txt if own_txt else t_txt)
    terms = {}
    if cfg.cd:
        if cfg.distill == "feature":
            cd = feature_distillation(s_img, s_txt, t_img, t_txt)
        else:
            cd = contrastive_distillation(img, txt, t_img, t_txt, T=cfg.temperature)
        terms["cd"] = cfg.alpha * cd
    if cfg.ita and cfg.beta > 0:
        dtype = torch.float64 if img.dtype == torch.float64 else torch.float32  # soft targets stay fp32 under bf16
        if cfg.ita_target == "paper":
            targets, smoothing = torch.eye(len(img), device=img.device, dtype=dtype), 0.0
        else:
            targets, smoothing = alignment_targets(prompt_ids).to(dtype), cfg.label_smoothing
        a, b = image_text_alignment(img, txt, targets, smoothing)
        terms["ita"] = cfg.beta * (a + b)
    return terms


class Gift(Method):
    name = "gift"
    replays = "pool sets (not recorded)"  # runs record theirs in replay.json (replay.synthetic.replayed)
    uses_synthetic = True
    uses_anchor = True

    @classmethod
    def kept(cls, run_dir, cfg: dict, state: dict) -> Kept:
        """Nothing of the tasks' data (its replay is rendered from class names); with ``--replay-captions`` the
        captions of the classes seen, as CLTS."""
        if cfg.get("replay_captions"):
            return caption_kept(run_dir, cfg, state)
        return Kept(0, "nothing (renders of class names)")

    def begin_task(self, ctx: TaskContext) -> None:
        """Build the teacher, then its features of the task's whole synthetic draw (fixed: decoded once, resize +
        centre crop, no augmentation) and of the draw's distinct prompts, once, in batches; the teacher itself is
        not kept. Steps look rows up (``teacher_features``): 1,000 teacher image forwards per task, not 64,000."""
        teacher = self.make_teacher(ctx)
        source = ctx.synthetic
        ids, first = prompt_index(source.prompts)
        self.prompt_ids = ids.to(ctx.device)
        self.t_img = frozen.image_features(teacher, source.images, ctx.device, ctx.dist)
        self.t_txt = frozen.text_features(teacher, source.tokens[first], ctx.device, ctx.dist)[self.prompt_ids]
        self.fisher_grads: list[torch.Tensor | None] | None = None

    def make_teacher(self, ctx: TaskContext):
        cfg = self.config
        if cfg.distill not in DISTILL:
            raise ValueError(f"unknown distillation {cfg.distill!r}; choose one of {', '.join(DISTILL)}")
        previous = {k: v.detach().clone() for k, v in ctx.student.state_dict().items()}
        teacher = frozen_copy(ctx.student)
        teacher.load_state_dict(teacher_state(cfg.teacher, ctx.initial_state, previous))
        return teacher

    def teacher_features(self, ctx: TaskContext, synth: SynthBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's (image, text) features [B, D] of the whole batch: rows of the task's cache."""
        if synth.index is None:
            raise ValueError("a GIFT replay batch must carry its rows of the task's draw (SynthBatch.index)")
        return self.t_img[synth.index], self.t_txt[synth.index]

    def replay_terms(self, ctx: TaskContext, synth: SynthBatch) -> dict[str, torch.Tensor]:
        cfg = self.config
        if not (cfg.cd or (cfg.ita and cfg.beta > 0)):
            return {}
        t_img, t_txt = self.teacher_features(ctx, synth)
        # image-only / text-only: the other student tower is not run on this batch (it gets no gradient from it)
        s_img, s_txt = ctx.features(synth.images if cfg.distill != "text-only" else None,
                                    synth.tokens if cfg.distill != "image-only" else None)
        return gift_terms(cfg, s_img, s_txt, t_img, t_txt, self.prompt_ids[synth.index])

    def after_replay_backward(self, ctx: TaskContext) -> None:
        if self.config.awc:  # this step's ∇(α·CD + β·ITA), kept for F before CE's backward accumulates;
            # None marks a tensor that backward did not reach (F = 1e-6 there, as in the released code)
            self.fisher_grads = [p.grad.detach().clone() if p.grad is not None else None for p in ctx.params]

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        if not self.config.awc:
            if self.config.l2_without_awc:  # the released code's "without AWC" rows run with --l2 1
                return {"l2": add_l2_gradient(ctx.params, ctx.anchors, self.config.l2_weight)}
            return {}
        if self.fisher_grads is None:
            return {}
        penalty = add_awc_gradient(ctx.params, ctx.anchors, self.fisher_grads, self.config.lam,
                                   normalize=self.config.fisher_norm)
        self.fisher_grads = None
        return {"awc": penalty}

    def end_task(self, ctx: TaskContext) -> None:
        del self.t_img, self.t_txt, self.prompt_ids
