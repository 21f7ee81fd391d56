"""Counted FLOPs of MoE-Adapter (``FlopCounterMode`` on the meta device, as ``pipeline/bench/flops.py``): one training
step (CE on the current task through both towers with their mixtures; CLIP frozen, so only activation gradients flow
through it), one evaluation forward, and DDAS's overhead per evaluation batch (AlexNet + every autoencoder)."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from pipeline.datasets import catalog
from pipeline.models import ClipSpec, encode_images, encode_texts, image_size, load_clip
from pipeline.models import tokenizer as clip_tokenizer

from . import block as moe
from .ddas import AutoEncoder, ddas_input, feature_dim, feature_extractor

META = torch.device("meta")


def _count(fn, *args) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return counter.get_total_flops()


def meta_moe_model(spec: moe.MoeSpec, arch: str = "ViT-B-16", slot: int = 0) -> torch.nn.Module:
    """CLIP of ``arch`` with MoE blocks on the meta device, routed through ``slot`` (-1: plain CLIP)."""
    model = load_clip(ClipSpec(arch, "none"), META)
    with torch.device("meta"):
        moe.install(model, spec)
    moe.set_route(model, slot)
    return model


def moe_step_flops(task: str, spec: moe.MoeSpec, batch: int = 64, arch: str = "ViT-B-16") -> int:
    """FLOPs of one MoE-Adapter training step on ``task``: image batch + every class prompt (trimmed), CE, backward into
    the experts and router slot 0 (CLIP frozen)."""
    model = meta_moe_model(spec, arch).train()
    moe.trainable(model, 0, freeze=False)
    spec_task = catalog.get_task(task)
    tokens = clip_tokenizer()([spec_task.prompt(c) for c in range(spec_task.num_classes)]).to(META)
    size = image_size(model)
    images = torch.zeros(batch, 3, size, size, device=META)
    labels = torch.zeros(batch, dtype=torch.long, device=META)

    def step():
        logits = 100.0 * encode_images(model, images) @ encode_texts(model, tokens).T
        F.cross_entropy(logits, labels, label_smoothing=0.2).backward()

    return _count(step)


@torch.no_grad()
def image_forward_flops(spec: moe.MoeSpec, batch: int, arch: str = "ViT-B-16", slot: int = 0) -> int:
    """FLOPs of encoding ``batch`` test images through router ``slot`` (-1: zero-shot CLIP)."""
    model = meta_moe_model(spec, arch, slot).eval()
    size = image_size(model)
    return _count(encode_images, model, torch.zeros(batch, 3, size, size, device=META))


@torch.no_grad()
def ddas_flops(batch: int = 128, autoencoders: int = 12, image: int = 224) -> int:
    """DDAS's overhead per evaluation batch: AlexNet ``features[:-2]`` on ``batch`` images and every autoencoder's
    reconstruction of them."""
    with torch.device("meta"):
        extractor = feature_extractor("none").to(META)
        dim = feature_dim(extractor, image)
        aes = [AutoEncoder(dim) for _ in range(autoencoders)]

    def run():
        s = ddas_input(extractor, torch.zeros(batch, 3, image, image, device=META))
        for ae in aes:
            ae(s)

    return _count(run)
