"""Noisy top-k gating (Shazeer et al. 2017) as the released MoE blocks compute it (``mtil/clip/model.py``,
``noisy_top_k_gating``), and the sparse mixture of the experts' outputs.

    clean  = h0 @ W_g                                        h0: [B, d], one gate vector per sample
    logits = clean + ε · (softplus(h0 @ W_n) + 0.01)         ε ~ N(0, 1), only while noisy
    gates  = softmax over the k largest logits, scattered into zeros [B, E]

The balance loss the code computes beside it is dropped there (its weight is effectively 0), so it is not computed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NOISE_EPSILON = 0.01


def noisy_top_k_gates(h0: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, k: int, noisy: bool,
                      eps: torch.Tensor | None = None) -> torch.Tensor:
    """Gates [B, E] (k non-zero per row, summing to 1) for router inputs ``h0`` [B, d]; ``eps`` injects the noise
    (tests), otherwise it is drawn from the global RNG."""
    clean = h0 @ w_gate
    if noisy:
        std = F.softplus(h0 @ w_noise) + NOISE_EPSILON
        logits = clean + (torch.randn_like(clean) if eps is None else eps) * std
    else:
        logits = clean
    experts = logits.shape[1]
    # the code takes the top k+1 (for its load estimate) and keeps the first k: same indices as topk(k)
    top_logits, top_indices = logits.topk(min(k + 1, experts), dim=1)
    top_k_logits, top_k_indices = top_logits[:, :k], top_indices[:, :k]
    return torch.zeros_like(logits).scatter(1, top_k_indices, F.softmax(top_k_logits, dim=1))


def mix_experts(experts: nn.ModuleList, x: torch.Tensor, gates: torch.Tensor, top_k: int) -> torch.Tensor:
    """Σ_e gates[b, e] · E_e(x_b) for x [B, L, d], each expert run only on the samples that gate it (the released
    SparseDispatcher: dispatch, run, weight by the gate, add back by sample index); ``top_k``: the non-zero gates
    per row (the meta device cannot read them)."""
    if x.device.type == "meta":  # FLOP counting (shapes only): the k·B sample-expert pairs, as k experts on all B
        return sum(expert(x) * gates[:, e].view(-1, 1, 1) for e, expert in enumerate(list(experts)[:top_k]))
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows = torch.nonzero(gates[:, e] > 0).flatten()
        if rows.numel() == 0:
            continue
        y = expert(x.index_select(0, rows)) * gates.index_select(0, rows)[:, e].view(-1, 1, 1).to(x.dtype)
        out = out.index_add(0, rows, y)
    return out
