"""What CLTS's learned parts weigh: its task heads and router, the parameters it keeps beyond the frozen CLIP.

Two counts of one thing: ``saved_parts`` reads a run's checkpoint (tensor shapes and dtypes, no tensor loaded), for the
report and ``gift table``; ``planned_parts`` builds the ``CltsModel`` a setting would grow at a CLIP architecture's
feature width, for the figures the documentation states (ViT-B/16: a 10-class head is 5,130 parameters, 20.5 kB in
fp32; the router after 10 steps 267,786, 1.07 MB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .heads import CltsModel

FP32 = 4


@dataclass(frozen=True)
class Parts:
    """``heads`` task heads of ``head_params`` parameters in all, a router of ``router_params`` (0: none yet), taking
    ``bytes`` as stored."""

    heads: int
    head_params: int
    router_params: int
    bytes: int

    @property
    def params(self) -> int:
        return self.head_params + self.router_params

    @property
    def what(self) -> str:
        """'10 task heads + router', '1 task head', 'none'."""
        if not self.heads:
            return "none"
        heads = f"{self.heads} task head{'s' if self.heads != 1 else ''}"
        return heads + (" + router" if self.router_params else "")


def saved_parts(checkpoint: Path) -> Parts:
    """The heads and router a CLTS checkpoint (safetensors: ``heads.<t>.*``, ``router.*``) holds, counted from its
    tensors' shapes, with their stored bytes."""
    from safetensors import safe_open

    heads: set[str] = set()
    head_params = router_params = size = 0
    with safe_open(str(checkpoint), "pt") as f:
        for name in f.keys():
            part = f.get_slice(name)
            numel = 1
            for n in part.get_shape():
                numel *= n
            size += numel * _itemsize(part.get_dtype())
            if name.startswith("heads."):
                heads.add(name.split(".")[1])
                head_params += numel
            else:
                router_params += numel
    return Parts(len(heads), head_params, router_params, size)


def _itemsize(dtype: str) -> int:
    """Bytes of one element of a safetensors dtype name (F32, F16, BF16, F64)."""
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}[dtype]


def planned_parts(dim: int, step_classes: Sequence[int], hidden: int = 512) -> Parts:
    """The heads and router CLTS holds after the steps of ``step_classes`` (classes per step) on features of width
    ``dim``, counted on the ``CltsModel`` itself (fp32): one ``Linear(dim, n)`` per step, the router over all of
    them (none with a single step)."""
    model = CltsModel(dim, hidden)
    for n in step_classes:
        model.add_head(n)
    if len(step_classes) > 1:
        model.new_router(len(step_classes))
    heads = sum(p.numel() for p in model.heads.parameters())
    router = sum(p.numel() for p in model.router.parameters()) if model.router is not None else 0
    return Parts(len(step_classes), heads, router, FP32 * (heads + router))


def clip_feature_dim(arch: str) -> int:
    """The width of a CLIP architecture's image features (open_clip's model config, nothing loaded): 512 for
    ViT-B/16."""
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(f"unknown CLIP architecture {arch!r}")
    return int(config["embed_dim"])
