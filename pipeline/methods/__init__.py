"""Continual-learning methods, one small file each, plugged into one loop (see ``base.py``)."""

from .base import Method, SynthBatch, TaskContext
from .finetune import Finetune
from .gift import Gift
from .l2 import L2
from .zeroshot import ZeroShot

METHODS: dict[str, type[Method]] = {
    "zeroshot": ZeroShot,
    "finetune": Finetune,
    "l2": L2,
    "gift": Gift,
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "SynthBatch", "TaskContext", "get_method"]
