"""Zero-shot: no training, the original CLIP evaluated after every task (the accuracy matrix's reference row)."""

from .base import Method


class ZeroShot(Method):
    name = "zeroshot"
    trains = False
