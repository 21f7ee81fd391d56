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

LR_BY_TASK = {"aircraft": 5e-5, "mnist": 5e-5}  # docs/protocol.md, "MTIL"; every other MTIL dataset: 1e-5
DEFAULT_LR, MINI_LR = 1e-5, 1e-3
# Per-setting defaults (docs/protocol.md). MTIL: 1,000 steps per task, 100 warm-up, smoothing 0.2, wd 0, lr per dataset.
MTIL_DEFAULTS: dict[str, object] = {"batch_size": 64, "iterations": 1000, "warmup": 100, "label_smoothing": 0.2,
                                    "weight_decay": 0.0, "alpha": 1.0, "l2_weight": 1.0, "ensemble_every": 100,
                                    "memory_size": 10000}
# CIL (the harness): one epoch over each step's images, lr 7.1e-6, 30 warm-up iterations; smoothing / wd per dataset;
# the baselines' distillation weight 5 (rows and columns), ZSCL's ensemble every 10 iterations, 5,000 exemplars.
CIL_DEFAULTS: dict[str, object] = {"batch_size": 64, "epochs": 1.0, "lr": 7.1e-6, "warmup": 30,
                                   "label_smoothing": 0.2, "weight_decay": 0.0, "alpha": 1.0, "l2_weight": 1.0,
                                   "ensemble_every": 10,
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
                                                     # CLTS's task heads (linear, on frozen features; ours, docs/clts.md,
                                                     # "Defaults the paper leaves open"): AdamW 1e-3 for 10 epochs, constant, no smoothing or decay
                                                     "clts": {"lr": 1e-3, "epochs": 10.0, "warmup": 0,
                                                              "label_smoothing": 0.0, "weight_decay": 0.0},
                                                     # MoE-Adapter's CIL configs: AdamW 1e-3, no smoothing or decay,
                                                     # 30 warm-up, one epoch; 2 experts, one router, noise at eval
                                                     "moe-adapter": {"lr": 1e-3, "label_smoothing": 0.0,
                                                                     "weight_decay": 0.0, "warmup": 30, "epochs": 1.0,
                                                                     "moe_experts": 2, "moe_freeze": False,
                                                                     "router_noise_at_eval": True, "ddas": False}}
# MoE-Adapter's per-setting batch (its configs: 128 on CIFAR100 10 and 20 steps, 64 elsewhere); mini-cil keeps its
# longer schedule (the tiny CLIP needs more passes)
CIL_SETTING_METHOD_DEFAULTS: dict[tuple[str, str], dict[str, object]] = {
    ("moe-adapter", "cifar100-10"): {"batch_size": 128}, ("moe-adapter", "cifar100-20"): {"batch_size": 128},
    ("moe-adapter", "mini-cil"): {"epochs": 10.0, "warmup": 5}}
# MoE-Adapter on MTIL: 22 experts, a router per task, activate-freeze, DDAS with AlexNet's ImageNet weights (the mini
# order: a random AlexNet), noise in training only; lrs per dataset in methods/moe_adapter.py
MTIL_METHOD_DEFAULTS: dict[str, dict[str, object]] = {
    "moe-adapter": {"moe_experts": 22, "moe_freeze": True, "router_noise_at_eval": False, "ddas": True}}


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
    batch_size: int | None = None  # None: 64 (MoE-Adapter on CIFAR100 10 / 20 steps: 128)
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
    # baselines (docs/protocol.md, "Baselines")
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
    # moe-adapter (docs/moe-adapter.md); the None fields are filled for it only (MTIL_/CIL_METHOD_DEFAULTS)
    moe_experts: int | None = None  # experts per block and tower (22 MTIL, 2 CIL)
    moe_top_k: int = 2
    moe_freeze: bool | None = None  # activate-freeze of each task's most used top-k experts (MTIL on, CIL off)
    moe_parity_step: bool = True  # one more step at the schedule's end (lr 0), as the released loop runs
    router_noise_at_eval: bool | None = None  # gating noise outside training (MTIL off; CIL on, as its code does)
    ddas: bool | None = None  # MTIL: autoencoders pick each test batch's router (off: the last task's router always)
    ddas_threshold: float = 0.0655  # least autoencoder error above it -> zero-shot CLIP
    ddas_steps: int = 301  # autoencoder steps per task (TinyImageNet's: ddas_zero_shot_steps)
    ddas_zero_shot_steps: int = 1001
    ddas_batch: int = 64
    ddas_eval_batch: int = 128  # test images per router decision
    alexnet_weights: str | None = None  # imagenet (torch's cache) | a file | none (random); None: none on mini orders

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
        check_values(self)

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


# The words a field accepts (the methods check them again where they are used; here they fail before any run
# directory or model exists, for `gift train` and `gift table` alike).
CHOICES: dict[str, tuple[str, ...]] = {"precision": ("fp32", "bf16"), "ita_target": ("code", "paper"),
                                       "distill": ("contrastive", "feature", "image-only", "text-only"),
                                       "routing": ("hard", "soft")}
# Numeric fields: (lowest, whether it is allowed itself, highest or None, whether it is allowed itself). None values
# (a setting's default, filled in before the check) are never checked.
RANGES: dict[str, tuple[float, bool, float | None, bool]] = {
    **dict.fromkeys(("batch_size", "synthetic_batch", "synthetic_budget", "iterations", "random_texts",
                     "ensemble_every", "ewc_samples", "router_hidden", "moe_experts", "moe_top_k", "ddas_steps",
                     "ddas_zero_shot_steps", "ddas_batch", "ddas_eval_batch"), (1, True, None, True)),
    **dict.fromkeys(("warmup", "weight_decay", "seed", "workers", "alpha", "beta", "lam", "l2_weight", "memory_size"),
                    (0, True, None, True)),
    **dict.fromkeys(("epochs", "lr", "temperature", "router_epochs", "router_lr", "ddas_threshold"), (0, False, None, True)),
    "label_smoothing": (0, True, 1, False), "wise_alpha": (0, True, 1, True),
}
OPTION_NAMES = {"clip_arch": "--clip"}  # a field's `gift train` option, where it is not --<field-with-dashes>


def option_name(field: str) -> str:
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def check_values(config: TrainConfig) -> None:
    """Every value a user can give is in its range or list: else one ValueError naming the option and what it
    accepts (``--batch-size must be 1 or more, got 0``)."""
    for field, (low, low_ok, high, high_ok) in RANGES.items():
        value = getattr(config, field)
        if value is None:
            continue
        # NaN fails every comparison, so it is refused too
        fits = (value >= low if low_ok else value > low) and (high is None or (value <= high if high_ok else value < high))
        if not fits:
            allowed = f"at least {low:g}" if low_ok else f"above {low:g}"
            if high is not None:
                allowed += f" and {'at most' if high_ok else 'below'} {high:g}"
            raise ValueError(f"{option_name(field)} must be {allowed}, got {value:g}")
    for field, allowed in CHOICES.items():
        if getattr(config, field) not in allowed:
            raise ValueError(f"{option_name(field)} {getattr(config, field)!r} is not one of {', '.join(allowed)}")
    teacher = config.teacher
    x = teacher.removeprefix("wise:")
    if teacher not in ("last", "initial") and not (teacher.startswith("wise:") and _fraction(x)):
        raise ValueError(f"--teacher {teacher!r} is not last, initial or wise:x with 0 <= x <= 1 (e.g. wise:0.2)")


def _fraction(text: str) -> bool:
    try:
        return 0 <= float(text) <= 1
    except ValueError:
        return False


def setting_defaults(order: str, method: str) -> dict[str, object]:
    """The values the ``None`` fields of a TrainConfig take on ``order`` for ``method`` (unknown order: an error
    listing the valid ones)."""
    catalog.get_order(order)
    if not catalog.is_cil(order):
        out = {**MTIL_DEFAULTS, **MTIL_METHOD_DEFAULTS.get(method, {})}
    else:
        dataset = catalog.get_setting(order).dataset
        out = {**CIL_DEFAULTS, **CIL_DATASET_DEFAULTS.get(dataset, {}), **CIL_METHOD_DEFAULTS.get(method, {}),
               **CIL_SETTING_METHOD_DEFAULTS.get((method, order), {})}
    if method == "moe-adapter" and out.get("ddas"):
        out["alexnet_weights"] = "none" if order in ("mini", "mini-cil") else "imagenet"
    return out


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to 0: base·(s+1)/w, else base·½(1+cos(π(s−w)/(total−w)))."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# How a run is fed, not what it computes (a run reproduces exactly whatever the worker count): these may change
# when a run is resumed, e.g. on a machine with fewer cores. The caption root too: what a run uses of it is a caption
# set and its render, by hash, recorded in captions.json and checked on resume (replay.captioned).
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
