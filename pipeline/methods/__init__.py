"""Continual-learning methods, one small file each, plugged into one loop (see ``base.py``)."""

from .base import Extra, Kept, Method, SynthBatch, TaskContext
from .clts import Clts
from .ewc import EWC
from .finetune import Finetune
from .gift import Gift
from .icarl import ICaRL
from .l2 import L2
from .lwf import LwF, LwFVR
from .wise_ft import WiseFT
from .zeroshot import ZeroShot
from .zscl import ZSCL

METHODS: dict[str, type[Method]] = {
    "zeroshot": ZeroShot,
    "finetune": Finetune,
    "l2": L2,
    "lwf": LwF,
    "lwf-vr": LwFVR,
    "wise-ft": WiseFT,
    "zscl": ZSCL,
    "icarl": ICaRL,
    "ewc": EWC,
    "gift": Gift,
    "clts": Clts,
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Extra", "Kept", "Method", "SynthBatch", "TaskContext", "get_method"]
