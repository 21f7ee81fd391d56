"""Parameter counts of MoE-Adapter, from the modules (never typed in): what the mixture allocates, what DDAS adds,
and the same at real shapes (ViT-B/16) from a model built on the meta device (no memory allocated)."""

from __future__ import annotations

import open_clip
import torch
from torch import nn

from . import block as moe_block
from .block import MoeSpec

MOE_KEYS = ("adaptmlp_list", "router_list", "w_noise_list")


def moe_params(model: nn.Module) -> int:
    """Experts + router and noise slots of every block of both towers."""
    return sum(p.numel() for name, p in model.named_parameters() if any(k in name.split(".") for k in MOE_KEYS))


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_clip(arch: str = "ViT-B-16") -> nn.Module:
    """An open_clip CLIP of ``arch``'s real shapes on the meta device (counts and FLOP shapes, no weights)."""
    cfg = open_clip.get_model_config(arch)
    with torch.device("meta"):
        return open_clip.CLIP(**cfg)


def meta_moe_clip(spec: MoeSpec, arch: str = "ViT-B-16") -> nn.Module:
    model = meta_clip(arch)
    with torch.device("meta"):
        moe_block.install(model, spec)
    return model


def ddas_params(dim: int, autoencoders: int) -> int:
    """``autoencoders`` DDAS autoencoders on ``dim`` features: 2·100·dim + 100 + dim each (8,696,164 at 43,264)."""
    from .ddas import AutoEncoder

    with torch.device("meta"):
        return autoencoders * params(AutoEncoder(dim))


def alexnet_params() -> int:
    """AlexNet ``features[:-2]``: conv1..conv5 (2,469,696)."""
    from torchvision.models import alexnet

    with torch.device("meta"):
        return params(alexnet(weights=None).features[:-2])
