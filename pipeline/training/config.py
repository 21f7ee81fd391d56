"""The resolved configuration of a training run (``TrainConfig``), its learning-rate schedule, and how a run is fed.

A run directory keeps ``config.json`` = ``asdict(TrainConfig)``; fields added later hold their defaults there.

Some defaults depend on the order (MTIL or a CIL setting) and, for a few baselines, on the method: such a field is
``None`` in the class and is filled in at construction from :func:`setting_defaults`, so a ``TrainConfig`` (and its
``config.json``) always holds the values the run uses. ``dataclasses.replace`` keeps the filled values.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from pipeline.datasets import catalog

LR_BY_TASK = {"aircraft": 5e-5, "mnist": 5e-5}  # REFERENCE.md; every other MTIL dataset: 1e-5
DEFAULT_LR, MINI_LR = 1e-5, 1e-3
# Per-setting defaults (REFERENCE.md). MTIL: 1,000 steps per task, 100 warm-up, smoothing 0.2, wd 0, lr per dataset.
MTIL_DEFAULTS: dict[str, object] = {"iterations": 1000, "warmup": 100, "label_smoothing": 0.2, "weight_decay": 0.0,
                                    "alpha": 1.0, "l2_weight": 1.0, "ensemble_every": 100, "memory_size": 10000}
# CIL (the harness): one epoch over each step's images, lr 7.1e-6, 30 warm-up iterations; smoothing / wd per dataset;
# the baselines' distillation weight 5 (rows and columns), ZSCL's ensemble every 10 iterations, 5,000 exemplars.
CIL_DEFAULTS: dict[str, object] = {"epochs": 1.0, "lr": 7.1e-6, "warmup": 30, "label_smoothing": 0.2,
                                   "weight_decay": 0.0, "alpha": 1.0, "l2_weight": 1.0, "ensemble_every": 10,
                                   "memory_size": 5000}
CIL_DATASET_DEFAULTS: dict[str, dict[str, object]] = {
    "tinyimagenet": {"label_smoothing": 0.0, "weight_decay": 0.1},
    # mini-cil: scikit-learn's ~140 images per step; the tiny CLIP needs a larger lr and more passes
    "mini-digits": {"lr": MINI_LR, "epochs": 10.0, "warmup": 5},
}
# The harness (ZSCL's cil/continual_clip/models.py) adds every baseline's distillation as `5 * loss + 5 * loss_2`
# (rows, columns), iCaRL's included; its CIL configs set ZSCL's `l2: 0` or leave it out (l2 is added only when > 0).
CIL_METHOD_DEFAULTS: dict[str, dict[str, object]] = {"lwf": {"alpha": 5.0}, "lwf-vr": {"alpha": 5.0},
                                                     "icarl": {"alpha": 5.0}, "zscl": {"alpha": 5.0, "l2_weight": 0.0},
                                                     # CLTS's task heads (linear, on frozen features; ours, REFERENCE.md
                                                     # "CLTS"): AdamW 1e-3 for 10 epochs, constant, no smoothing or decay
                                                     "clts": {"lr": 1e-3, "epochs": 10.0, "warmup": 0,
                                                              "label_smoothing": 0.0, "weight_decay": 0.0}}


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
    iterations: int | None = None  # steps per task (None: the setting's: 1000 MTIL; CIL: `epochs` over each step)
    epochs: float | None = None  # CIL: passes over each step's training images, ceil(epochs·N/batch) steps (default 1)
    batch_size: int = 64
    synthetic_batch: int = 64
    synthetic_budget: int = 1000
    lr: float | None = None  # None: per dataset (5e-5 aircraft and mnist, 1e-5 others; 1e-3 for mini tasks); CIL 7.1e-6
    warmup: int | None = None  # linear warm-up steps (None: 100 MTIL, 30 CIL)
    weight_decay: float | None = None  # AdamW (None: 0; TinyImageNet CIL 0.1)
    label_smoothing: float | None = None  # of CE on the real batch (None: 0.2; TinyImageNet CIL 0)
    class_order: str | None = None  # CIL: another class order, its labels as text ("87,0,52,..."; None: the setting's)
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the student's training forward (numerics only)
    workers: int | None = None  # None: one per spare core, at most 8 (loader_workers)
    # GIFT and its ablations
    cd: bool = True
    ita: bool = True
    awc: bool = True
    alpha: float | None = None  # CD weight α (1); the distillation weight of lwf / lwf-vr / zscl / icarl (1 MTIL, 5 CIL)
    beta: float = 0.25
    lam: float = 1.0
    temperature: float = 2.0
    teacher: str = "last"
    distill: str = "contrastive"
    ita_target: str = "code"
    fisher_norm: bool = True
    l2_weight: float | None = None  # l2 / zscl / gift --l2-without-awc: Σ(θ−θ(t−1))² weight (1; zscl in CIL: 0)
    l2_without_awc: bool = False  # GIFT with --no-awc: the l2 penalty in AWC's place (the code's ablation rows)
    replay_generator: str | None = None  # use the pool sets of this generator (sd15 | tiny | reference: real images)
    # baselines (REFERENCE.md, "Baselines as the reference code runs them")
    wise_alpha: float = 0.8  # wise-ft: θ ← α·θ + (1−α)·θ(t−1) after each task
    random_texts: int = 1000  # lwf-vr: random 10-token sentences
    reference_images: str | None = None  # zscl: an ImageFolder of real images (ImageNet train in the paper)
    reference_texts: str | None = None  # zscl: a captions file, one per line
    ensemble_every: int | None = None  # zscl: weight-ensemble snapshot interval (steps; None: 100 MTIL, 10 CIL)
    memory_size: int | None = None  # icarl: exemplars kept over all seen classes (None: 10,000 MTIL, 5,000 CIL)
    ewc_samples: int = 256  # ewc: synthetic samples for the static Fisher before each task
    # caption sets (CLTS; GIFT with replay_captions): their root (`gift caption --out`) or one caption set
    captions: str = "captions-out"
    replay_captions: bool = False  # gift: the earlier tasks' pool sets are the renders of their caption sets
    # clts / replay_captions: accept caption "renders" of the `reference` generator (real images), an ablation
    real_renders: bool = False
    # clts: the task heads use lr / epochs / batch_size (the setting's clts defaults); the router its own
    routing: str = "hard"  # hard: head of argmax p(t|x); soft: argmax over classes of p(t|x)·p(c|x,t)
    router_epochs: float = 20.0  # passes over the task-balanced renders, re-trained from scratch after every task
    router_lr: float = 1e-3
    router_hidden: int = 512

    def __post_init__(self) -> None:
        if self.iterations is not None and self.epochs is not None:
            raise ValueError(f"--iterations {self.iterations} and --epochs {self.epochs:g} exclude each other; give one")
        given = {f.name for f in fields(self) if getattr(self, f.name) is not None}
        for key, value in setting_defaults(self.order, self.method).items():
            if key not in given and not (key in ("iterations", "epochs") and given & {"iterations", "epochs"}):
                object.__setattr__(self, key, value)  # frozen: filled once, here
        if self.real_renders and not (self.method == "clts" or self.replay_captions):
            raise ValueError("--real-renders applies to --method clts and --replay-captions (caption renders); GIFT's "
                             "class-name replay of real images is --replay-generator reference")
        if self.class_order is not None and not catalog.is_cil(self.order):
            raise ValueError(f"--class-order applies to CIL settings, not to order {self.order!r}")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.method}-order{self.order}"

    def lr_for(self, task: str) -> float:
        if self.lr is not None:
            return self.lr
        return MINI_LR if task in catalog.MINI_TASKS else LR_BY_TASK.get(task, DEFAULT_LR)

    def steps_for(self, images: int) -> int:
        """Training steps of a task with ``images`` training images: ``iterations``, or ``epochs`` passes."""
        if self.iterations is not None:
            return self.iterations
        return max(1, math.ceil(self.epochs * images / self.batch_size))


def setting_defaults(order: str, method: str) -> dict[str, object]:
    """The values the ``None`` fields of a TrainConfig take on ``order`` for ``method`` (unknown order: an error
    listing the valid ones)."""
    catalog.get_order(order)
    if not catalog.is_cil(order):
        return dict(MTIL_DEFAULTS)
    dataset = catalog.get_setting(order).dataset
    return {**CIL_DEFAULTS, **CIL_DATASET_DEFAULTS.get(dataset, {}), **CIL_METHOD_DEFAULTS.get(method, {})}


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to 0: base·(s+1)/w, else base·½(1+cos(π(s−w)/(total−w)))."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# How a run is fed, not what it computes (a run reproduces exactly whatever the worker count): these may change
# when a run is resumed, e.g. on a machine with fewer cores. The caption root too: what a run uses of it is a caption
# set and its render, by hash, recorded in captions.json and checked on resume (training.captioned).
FREE_ON_RESUME = {"workers", "shard_cache", "captions"}


def loader_workers(config: TrainConfig) -> int:
    """Data-loader processes for the real data of each training process: ``--workers``, or by default one per
    core this process can spare (the cores it may use, shared among the node's processes, minus its own), at
    most 8. `make bench` measures a few hundred decoded 224² crops/s per worker core; 15 steps/s need 960."""
    if config.workers is not None:
        return config.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, per_process - 1))
