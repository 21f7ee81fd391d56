"""GIFT's loss terms and penalties, as the reference code computes them (docs/protocol.md, "Losses").

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
    """The paper's "feature distance" ablation as the released code runs it: the mean squared difference over
    all B·D elements of the image features plus the same for the text features (``F.mse_loss``), [B,D] each."""
    return F.mse_loss(s_img, t_img.detach()) + F.mse_loss(s_txt, t_txt.detach())


def alignment_targets(prompts: Sequence[str] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Y[i,j] = 1[prompt_i = prompt_j] / #{k: prompt_k = prompt_i}  [B,B]; the identity when prompts differ.

    ``prompts`` are strings, or one integer id per prompt [B] (equal ids = equal prompts), which may already be
    on the device: then nothing travels from the host.
    """
    if isinstance(prompts, torch.Tensor):
        index = prompts
    else:
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


UNREACHED_FISHER = 1e-6  # F of a trained tensor the distillation backward does not reach (the released code)


def fisher_scales(grads: list[torch.Tensor], normalize: bool = True) -> torch.Tensor:
    """Per-tensor factors c [n] (float64, on the gradients' device) so that F_i = c_i·g_i²: 1 / mean(g_i²) when
    normalising (the code; 0 for an all-zero gradient), else 1.

    One fused norm over all tensors; nothing is read back to the host.
    """
    device = grads[0].device if grads else None
    if not normalize:
        return torch.ones(len(grads), dtype=torch.float64, device=device)
    mean_sq = torch.stack(torch._foreach_norm(grads)).double().pow(2)
    torch._foreach_div_(list(mean_sq.unbind()), [float(g.numel()) for g in grads])  # host numbers: no transfer
    return torch.where(mean_sq > 0, 1.0 / mean_sq, torch.zeros_like(mean_sq))


@torch.no_grad()
def add_awc_gradient(params: list[torch.Tensor], anchors: list[torch.Tensor],
                     fisher_grads: list[torch.Tensor | None], lam: float, normalize: bool = True) -> torch.Tensor:
    """Add ∇[λ·Σ F·(θ−θ₀)²] = 2λ·F·(θ−θ₀) to ``param.grad`` in place; returns λ·Σ F·(θ−θ₀)² as a 0-d tensor.

    ``fisher_grads`` are this step's gradients g of α·CD + β·ITA (copied before the CE backward), None for a
    tensor that backward did not reach. Reached tensors: F = c·g² (``fisher_scales``, detached); one temporary
    u = g·(θ−θ₀), the penalty λ·Σ c·‖u‖², then grad += 2λ·g·(c·u), all fused multi-tensor ops with the scales
    kept on the device. Unreached tensors: F = ``UNREACHED_FISHER`` everywhere, as in the released code.
    """
    reached = [i for i, g in enumerate(fisher_grads) if g is not None]
    unreached = [i for i, g in enumerate(fisher_grads) if g is None]
    penalty = torch.zeros((), dtype=torch.float64, device=params[0].device)
    if reached:
        ps, grads = [params[i] for i in reached], [fisher_grads[i] for i in reached]
        scales = fisher_scales(grads, normalize)
        u = torch._foreach_sub(ps, [anchors[i] for i in reached])
        torch._foreach_mul_(u, grads)
        penalty = penalty + lam * (torch.stack(torch._foreach_norm(u)).double().pow(2) * scales).sum()
        torch._foreach_mul_(u, list(scales.to(u[0].dtype).unbind()))  # 0-d device tensors, broadcast per tensor
        torch._foreach_addcmul_([p.grad for p in ps], grads, u, value=2.0 * lam)
    if unreached:
        penalty = penalty + add_l2_gradient([params[i] for i in unreached], [anchors[i] for i in unreached],
                                            lam * UNREACHED_FISHER).double()
    return penalty


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
