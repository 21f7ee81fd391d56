"""The resolved configuration of a training run (``TrainConfig``), its learning-rate schedule, and how a run is fed.

A run directory keeps ``config.json`` = ``asdict(TrainConfig)``; fields added later hold their defaults there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pipeline.datasets import catalog

LR_BY_TASK = {"aircraft": 5e-5, "mnist": 5e-5}  # REFERENCE.md; every other MTIL dataset: 1e-5
DEFAULT_LR, MINI_LR = 1e-5, 1e-3


@dataclass(frozen=True)
class TrainConfig:
    order: str = "II"
    method: str = "gift"
    name: str | None = None  # run directory name (default: <method>-order<order>)
    runs: str = "runs"
    data_root: str | None = None
    shards: str = "shards-out"  # a local root, or a store URL (https://, ssh://, ...): the pool is cached locally
    shard_cache: str | None = None  # where sets from a store URL are cached (None: ~/.cache/gift/shards)
    shard_family: str | None = None
    clip_arch: str = "ViT-B-16"
    clip_weights: str = "openai"
    iterations: int = 1000
    batch_size: int = 64
    synthetic_batch: int = 64
    synthetic_budget: int = 1000
    lr: float | None = None  # None: per dataset (5e-5 aircraft and mnist, 1e-5 others; 1e-3 for mini tasks)
    warmup: int = 100
    weight_decay: float = 0.0
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the student's training forward (numerics only)
    workers: int | None = None  # None: one per spare core, at most 8 (loader_workers)
    # GIFT and its ablations
    cd: bool = True
    ita: bool = True
    awc: bool = True
    alpha: float = 1.0
    beta: float = 0.25
    lam: float = 1.0
    temperature: float = 2.0
    teacher: str = "last"
    distill: str = "contrastive"
    ita_target: str = "code"
    fisher_norm: bool = True
    l2_weight: float = 1.0
    l2_without_awc: bool = False  # GIFT with --no-awc: the l2 penalty in AWC's place (the code's ablation rows)
    replay_generator: str | None = None  # use the pool sets of this generator (sd15 | tiny | reference: real images)
    # baselines (REFERENCE.md, "Baselines as the reference code runs them")
    wise_alpha: float = 0.8  # wise-ft: θ ← α·θ + (1−α)·θ(t−1) after each task
    random_texts: int = 1000  # lwf-vr: random 10-token sentences
    reference_images: str | None = None  # zscl: an ImageFolder of real images (ImageNet train in the paper)
    reference_texts: str | None = None  # zscl: a captions file, one per line
    ensemble_every: int = 100  # zscl: weight-ensemble snapshot interval (steps)
    memory_size: int = 10000  # icarl: exemplars kept over all seen classes
    ewc_samples: int = 256  # ewc: synthetic samples for the static Fisher before each task

    @property
    def run_name(self) -> str:
        return self.name or f"{self.method}-order{self.order}"

    def lr_for(self, task: str) -> float:
        if self.lr is not None:
            return self.lr
        return MINI_LR if task in catalog.MINI_TASKS else LR_BY_TASK.get(task, DEFAULT_LR)


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to 0: base·(s+1)/w, else base·½(1+cos(π(s−w)/(total−w)))."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# How a run is fed, not what it computes (a run reproduces exactly whatever the worker count): these may change
# when a run is resumed, e.g. on a machine with fewer cores.
FREE_ON_RESUME = {"workers", "shard_cache"}


def loader_workers(config: TrainConfig) -> int:
    """Data-loader processes for the real data of each training process: ``--workers``, or by default one per
    core this process can spare (the cores it may use, shared among the node's processes, minus its own), at
    most 8. `make bench` measures a few hundred decoded 224² crops/s per worker core; 15 steps/s need 960."""
    if config.workers is not None:
        return config.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, per_process - 1))
