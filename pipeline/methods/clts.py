"""CLTS (Caption, Create, Continue): no fine-tuning and no real image kept. A frozen CLIP image encoder, a linear head
per task trained on that task's real images, and a task router (2-layer MLP) re-trained after every task on images
rendered from the captions of all tasks so far; at test time the router picks the head (no task id).

Its loop is not the fine-tuning loop: ``loop = "task-heads"`` (``pipeline/training/clts_run.py``). Class-incremental settings
only, on one process. What it keeps of the tasks' data is their captions (``kept``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.clts.heads import ROUTINGS
from pipeline.clts.params import saved_parts
from pipeline.datasets import catalog
from pipeline.replay.captioned import caption_memory

from .base import Extra, Kept, Method


class Clts(Method):
    name = "clts"
    replays = "caption renders (not recorded)"  # runs record theirs in replay.json
    loop = "task-heads"

    @classmethod
    def check(cls, config) -> None:
        if not catalog.is_cil(config.order):
            raise ValueError(f"clts is a class-incremental method: --order must be a CIL setting (e.g. seq-cifar10, "
                             f"seq-cifar100, seq-tinyimg, mini-cil; `gift settings`), not {config.order!r}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("clts trains linear heads and a small router on cached features: run it on one process "
                             "(--gpus 1)")
        if config.routing not in ROUTINGS:
            raise ValueError(f"unknown --routing {config.routing!r}; choose {' or '.join(ROUTINGS)}")
        for what, value in (("--router-epochs", config.router_epochs), ("--router-lr", config.router_lr),
                            ("--router-hidden", config.router_hidden), ("--lr", config.lr),
                            ("--batch-size", config.batch_size)):
            if not value > 0:
                raise ValueError(f"{what} must be positive, got {value}")

    @classmethod
    def kept(cls, run_dir: Path, cfg: dict, state: dict) -> Kept:
        """The captions of every class seen by the last finished step."""
        return caption_kept(run_dir, cfg, state)

    @classmethod
    def extra(cls, run_dir: Path, cfg: dict, state: dict) -> Extra:
        """The task heads and the router of the last checkpoint, counted from its tensors."""
        if not state.get("checkpoint"):
            return Extra(0, 0, "none yet")
        parts = saved_parts(Path(run_dir) / state["checkpoint"])
        return Extra(parts.params, parts.bytes, parts.what)


def caption_kept(run_dir: Path, cfg: dict, state: dict) -> Kept:
    """Captions of every class seen after the finished steps (CIL), or of every task's set used (MTIL), from the
    run's ``captions.json``."""
    finished = state.get("finished", 0)
    order = str(cfg.get("order"))
    if catalog.is_cil(order):
        setting = catalog.get_setting(order, cfg.get("class_order"))
        wanted = {setting.caption_task: list(setting.seen(finished - 1)) if finished else []}
    else:
        wanted = {task: None for task in catalog.get_order(order)[:finished]}
    found = caption_memory(run_dir, wanted)
    if found is None:
        return Kept(None, "captions (not recorded: the run has not started)")
    return Kept(found[1], f"{found[0]:,} captions, UTF-8")
