"""The tiny CLIP's stand-in for pre-training, on the ``mini`` benchmark (``make demo``, the tests)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.datasets import catalog
from pipeline.datasets.mini import load_split
from pipeline.losses import classification_loss
from pipeline.models import ClipSpec, encode_images, encode_texts, load_clip, tokenizer, train_transform


def pretrain_tiny_clip(path: Path, steps: int = 300, seed: int = 0, lr: float = 1e-3) -> Path:
    """Give the tiny CLIP some "pre-training" knowledge: CE over all ``mini-base`` classes on their train
    images (prompt "a photo of a {}."), so that continual learning has something to forget, as real CLIP has.

    Deterministic for a seed; written as safetensors (by rename) for ``--clip-weights``.
    """
    path = Path(path)
    if path.exists():
        return path
    torch.manual_seed(seed)
    model = load_clip(ClipSpec("tiny", "none", seed))
    task = catalog.get_task("mini-base")
    images, labels = load_split("mini-base", "train")
    transform = train_transform(32)
    tokens = tokenizer()([task.prompt(c) for c in range(task.num_classes)])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(labels), (64,), generator=generator).tolist()
        batch = torch.stack([transform(images[i]) for i in idx])
        loss = classification_loss(encode_images(model, batch), encode_texts(model, tokens),
                                    torch.tensor([labels[i] for i in idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path
