"""Continual fine-tuning: CE on the current task only (the lower bound)."""

from .base import Method


class Finetune(Method):
    name = "finetune"
