"""GIFT's loss terms and penalties, as the reference code computes them (REFERENCE.md, "Losses").

Shapes: B = synthetic batch, N = real batch, C = classes of the current task, D = embedding width. All
features are L2-normalised; logits are ``LOGIT_SCALE`` (100) times cosine similarities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pipeline.models import LOGIT_SCALE

LABEL_SMOOTHING = 0.2
TEMPERATURE = 2.0


def classification_loss(img: torch.Tensor, class_txt: torch.Tensor, labels: torch.Tensor,
                        smoothing: float = LABEL_SMOOTHING) -> torch.Tensor:
    """CE on the real batch: logits = 100·img [N,D] · class_txt [C,D]ᵀ, labels [N]; mean over N."""
    return F.cross_entropy(LOGIT_SCALE * img @ class_txt.T, labels, label_smoothing=smoothing)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """H(softmax(teacher/T), log_softmax(student/T)) per row [B,K], averaged over the B rows (teacher detached)."""
    target = F.softmax(teacher_logits.detach() / T, dim=1)
    return -(target * F.log_softmax(student_logits / T, dim=1)).sum(dim=1).mean()


def contrastive_distillation(s_img: torch.Tensor, s_txt: torch.Tensor, t_img: torch.Tensor, t_txt: torch.Tensor,
                             T: float = TEMPERATURE) -> torch.Tensor:
    """CD = T²·[H(S′/T rows, S/T rows) + H(S′ᵀ/T rows, Sᵀ/T rows)], S = 100·s_img·s_txtᵀ, S′ = 100·t_img·t_txtᵀ.

    Inputs [B,D]; returns a scalar. Equals T²·(KL + teacher entropy), so its gradient is the KL's.
    """
    S, S_t = LOGIT_SCALE * s_img @ s_txt.T, LOGIT_SCALE * t_img @ t_txt.T
    return T * T * (soft_cross_entropy(S, S_t, T) + soft_cross_entropy(S.T, S_t.T, T))


def feature_distillation(s_img: torch.Tensor, s_txt: torch.Tensor, t_img: torch.Tensor, t_txt: torch.Tensor) -> torch.Tensor:
    """The paper's "feature distance" ablation: Σ_d (s−t)² per sample, averaged over B, image + text."""
    return (s_img - t_img.detach()).pow(2).sum(1).mean() + (s_txt - t_txt.detach()).pow(2).sum(1).mean()


def alignment_targets(prompts: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    """Y[i,j] = 1[prompt_i = prompt_j] / #{k: prompt_k = prompt_i}  [B,B]; the identity when prompts differ."""
    ids = {p: k for k, p in enumerate(dict.fromkeys(prompts))}
    index = torch.tensor([ids[p] for p in prompts], device=device)
    same = (index[:, None] == index[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def image_text_alignment(s_img: torch.Tensor, s_txt: torch.Tensor, targets: torch.Tensor,
                         smoothing: float = LABEL_SMOOTHING) -> tuple[torch.Tensor, torch.Tensor]:
    """ITA: (CE(S, Y), CE(Sᵀ, Y)) with S = 100·s_img·s_txtᵀ [B,B] and soft targets Y [B,B] (symmetric).

    The reference code uses label smoothing 0.2 and shared positives for duplicate prompts (``code``); the
    paper's variant is identity targets without smoothing (pass ``torch.eye(B)`` and ``smoothing=0``).
    """
    S = LOGIT_SCALE * s_img @ s_txt.T
    return (F.cross_entropy(S, targets, label_smoothing=smoothing),
            F.cross_entropy(S.T, targets.T, label_smoothing=smoothing))


def fisher_scales(grads: list[torch.Tensor], normalize: bool = True) -> list[float]:
    """Per-tensor factor c_i so that F_i = c_i·g_i²: 1 / mean(g_i²) when normalising (the code), else 1.

    One fused norm over all tensors and one host transfer per step, not a Python loop of reductions.
    """
    if not normalize:
        return [1.0] * len(grads)
    norms = torch.stack(torch._foreach_norm(grads)).double()
    numel = torch.tensor([g.numel() for g in grads], dtype=torch.float64, device=norms.device)
    mean_sq = norms.pow(2) / numel
    return torch.where(mean_sq > 0, 1.0 / mean_sq, torch.zeros_like(mean_sq)).tolist()


@torch.no_grad()
def add_awc_gradient(params: list[torch.Tensor], anchors: list[torch.Tensor], fisher_grads: list[torch.Tensor],
                     scales: list[float], lam: float) -> torch.Tensor:
    """Add ∇[λ·Σ F·(θ−θ₀)²] = 2λ·F·(θ−θ₀) to ``param.grad`` in place, F = scale·g² (detached).

    ``fisher_grads`` are the gradients of α·CD + β·ITA from this step (copied before the CE backward).
    Returns the penalty value λ·Σ F·(θ−θ₀)² as a 0-d tensor (for logging). One temporary, u = g·(θ−θ₀):
    grad += 2λ·c·g·u and the penalty is λ·Σ c·‖u‖², all with fused multi-tensor ops.
    """
    u = torch._foreach_sub(params, anchors)
    torch._foreach_mul_(u, fisher_grads)
    torch._foreach_addcmul_([p.grad for p in params], fisher_grads, u, [2.0 * lam * c for c in scales])
    norms = torch.stack(torch._foreach_norm(u)).double()
    return lam * (norms.pow(2) * torch.tensor(scales, dtype=torch.float64, device=norms.device)).sum()


@torch.no_grad()
def add_fisher_gradient(params: list[torch.Tensor], anchors: list[torch.Tensor], fisher: list[torch.Tensor],
                        lam: float) -> torch.Tensor:
    """Add ∇[λ·Σ F·(θ−θ₀)²] = 2λ·F·(θ−θ₀) to ``param.grad`` for a given F; returns the penalty value."""
    diff = torch._foreach_sub(params, anchors)
    weighted = torch._foreach_mul(fisher, diff)  # F·(θ−θ₀)
    torch._foreach_add_([p.grad for p in params], weighted, alpha=2.0 * lam)
    terms = torch._foreach_mul(weighted, diff)  # F·(θ−θ₀)² ≥ 0, so each tensor's sum is its L1 norm
    return lam * torch.stack(torch._foreach_norm(terms, 1)).sum()


@torch.no_grad()
def add_l2_gradient(params: list[torch.Tensor], anchors: list[torch.Tensor], weight: float = 1.0) -> torch.Tensor:
    """Add ∇[w·Σ(θ−θ₀)²] = 2w·(θ−θ₀) to ``param.grad``; returns the penalty value."""
    diff = torch._foreach_sub(params, anchors)
    torch._foreach_add_([p.grad for p in params], diff, alpha=2.0 * weight)
    return weight * torch.stack(torch._foreach_norm(diff)).pow(2).sum()
