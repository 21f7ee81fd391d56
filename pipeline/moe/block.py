"""The MoE block: open_clip's ``ResidualAttentionBlock`` with a mixture of adapters parallel to its MLP.

    h   = x + Attn(LN1(x))
    out = h + MLP(LN2(h)) + Σ_e g_e(h[:, 0]) · E_e(h)

The experts see the whole token sequence of the un-normalised residual stream ``h``; the gates come from token 0
of ``h`` (the CLS token in the image tower, the start-of-text token in the text tower, which under the causal mask is
the same for every prompt: at evaluation a task's text routing is a constant, as in the released code). The block
keeps CLIP's own sub-modules under their own names, so a CLIP checkpoint's keys are unchanged and the adapters add
``adaptmlp_list.{e}``, ``router_list.{t}`` and ``w_noise_list.{t}`` (the released checkpoint's names).

``route`` is the router slot in use (-1: plain CLIP, the zero-shot path); ``noise_at_eval`` keeps the gating noise
on outside training (the CIL code's behaviour). While training, the block counts how often each expert is chosen
(``counts``), which the activate-freeze reads after each task; ``frozen[t]`` marks the experts task t froze.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from .adapter import BOTTLENECK, DROPOUT, SCALE, Adapter
from .gating import mix_experts, noisy_top_k_gates


@dataclass(frozen=True)
class MoeSpec:
    """The mixture in every block: ``experts`` adapters, ``top_k`` of them per sample, ``slots`` routers (one per
    task in MTIL, one for all steps in CIL)."""

    experts: int
    top_k: int
    slots: int
    bottleneck: int = BOTTLENECK
    scale: float = SCALE
    dropout: float = DROPOUT


class MoEBlock(nn.Module):
    def __init__(self, block: ResidualAttentionBlock, spec: MoeSpec):
        super().__init__()
        if hasattr(block, "ln_1_kv") or not block.attn.batch_first:
            raise ValueError("MoE blocks wrap batch-first self-attention blocks (open_clip's CLIP towers)")
        for name in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"):
            setattr(self, name, getattr(block, name))
        width = block.ln_1.normalized_shape[0]
        self.top_k = spec.top_k
        self.adaptmlp_list = nn.ModuleList(Adapter(width, spec.bottleneck, spec.scale, spec.dropout)
                                           for _ in range(spec.experts))
        self.router_list = nn.ParameterList(nn.Parameter(torch.zeros(width, spec.experts)) for _ in range(spec.slots))
        self.w_noise_list = nn.ParameterList(nn.Parameter(torch.zeros(width, spec.experts))
                                             for _ in range(spec.slots))
        self.register_buffer("frozen", torch.zeros(spec.slots, spec.experts, dtype=torch.bool))
        self.register_buffer("counts", torch.zeros(spec.experts, dtype=torch.long), persistent=False)
        self.route = 0
        self.noise_at_eval = False

    def get_weight_dtype(self) -> torch.dtype:  # open_clip's Transformer asks its first block (the cast dtype)
        return ResidualAttentionBlock.get_weight_dtype(self)

    def gates(self, h0: torch.Tensor) -> torch.Tensor:
        """[B, E] gates of router slot ``route`` for router inputs ``h0`` [B, d]."""
        noisy = self.training or self.noise_at_eval
        gates = noisy_top_k_gates(h0, self.router_list[self.route], self.w_noise_list[self.route], self.top_k, noisy)
        if self.training:
            with torch.no_grad():
                self.counts += (gates > 0).sum(dim=0)
        return gates

    def forward(self, q_x: torch.Tensor, k_x: torch.Tensor | None = None, v_x: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = q_x + self.ls_1(ResidualAttentionBlock.attention(self, q_x=self.ln_1(q_x), attn_mask=attn_mask))
        out = h + self.ls_2(self.mlp(self.ln_2(h)))
        if self.route < 0:
            return out
        return out + mix_experts(self.adaptmlp_list, h, self.gates(h[:, 0, :]), self.top_k)


def install(model: nn.Module, spec: MoeSpec) -> None:
    """Replace every block of both towers of an open_clip CLIP by a MoE block around it (in place)."""
    for transformer in (model.visual.transformer, model.transformer):
        for i, block in enumerate(transformer.resblocks):
            if not isinstance(block, MoEBlock):
                transformer.resblocks[i] = MoEBlock(block, spec).to(block.ln_1.weight.device)


def blocks(model: nn.Module) -> Iterator[tuple[str, int, MoEBlock]]:
    """(tower, index, block) of every MoE block: the image tower's, then the text tower's."""
    for tower, transformer in (("image", model.visual.transformer), ("text", model.transformer)):
        for i, block in enumerate(transformer.resblocks):
            if isinstance(block, MoEBlock):
                yield tower, i, block


def set_route(model: nn.Module, slot: int) -> None:
    """Every block uses router ``slot`` (-1: none, the blocks are CLIP's)."""
    for _, _, block in blocks(model):
        block.route = slot


def set_noise_at_eval(model: nn.Module, on: bool) -> None:
    for _, _, block in blocks(model):
        block.noise_at_eval = on


def trainable(model: nn.Module, slot: int, freeze: bool) -> list[nn.Parameter]:
    """Freeze all of CLIP; train router ``slot`` (gate and noise) and every expert not frozen by an earlier task
    (``freeze``: the activate-freeze; without it every expert trains). Returns the trained parameters, in model
    order, with ``requires_grad`` set on exactly those."""
    model.requires_grad_(False)
    params: list[nn.Parameter] = []
    for _, _, block in blocks(model):
        experts = len(block.adaptmlp_list)
        frozen = block.frozen[:slot].any(dim=0).tolist() if freeze and slot else [False] * experts
        for e, expert in enumerate(block.adaptmlp_list):
            if not frozen[e]:
                params += list(expert.parameters())
        params += [block.router_list[slot], block.w_noise_list[slot]]
    for p in params:
        p.requires_grad_(True)
    return params


def reset_counts(model: nn.Module) -> None:
    for _, _, block in blocks(model):
        block.counts.zero_()


def freeze_most_used(model: nn.Module, slot: int, k: int, all_reduce=lambda t: t) -> None:
    """After task ``slot``: mark the ``k`` experts each block chose most often in its training forwards (counts summed
    over ranks by ``all_reduce``) as frozen by that task."""
    for _, _, block in blocks(model):
        counts = all_reduce(block.counts.clone())
        block.frozen[slot] = False
        block.frozen[slot, counts.topk(k).indices] = True
