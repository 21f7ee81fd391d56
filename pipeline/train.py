"""Stage 2: continual fine-tuning over an order of tasks, evaluating after each, with resumable run directories.

    runs/<name>/config.json        the resolved TrainConfig (a run directory is never reused for another config)
               train.log, metrics.jsonl
               acc_matrix.csv/.npy, results.md, acc_matrix.png, curves.png   (rewritten after every task)
               checkpoint-taskNN.safetensors + state.json                    (written by rename at task ends)

Running the same command again continues after the last finished task. Each task seeds its own RNGs from
(seed, task index), and every real image's crop is seeded per sample, so a resumed run reproduces an
uninterrupted one exactly, whatever the number of data-loader workers.

Several GPUs: ``torchrun --nproc_per_node N`` (or ``gift train --gpus N``). Every rank draws the same global
batches and takes its contiguous share; the model is wrapped in DistributedDataParallel; contrastive terms
gather the features of the whole batch first, so N processes compute the step of one process (up to
floating-point summation order). Evaluation splits every test set across ranks; rank 0 writes the run dir.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from shards.layout import atomic_write_bytes, spec_hash

from . import catalog, mini
from .dist import Dist
from .evaluate import TestSet, evaluate_order
from .losses import classification_loss
from .methods import TaskContext, get_method
from .methods.base import student_features
from .models import (
    ClipSpec,
    eval_resize,
    image_size,
    load_clip,
    train_transform,
)
from .models import tokenizer as clip_tokenizer
from .replay import ImageStream
from .report import write_report

log = logging.getLogger("gift.train")
LR_BY_TASK = {"aircraft": 5e-5, "mnist": 5e-5}  # REFERENCE.md; every other MTIL dataset: 1e-5
DEFAULT_LR, MINI_LR = 1e-5, 1e-3


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the run stops and keeps its last good checkpoint."""


class RunDirError(ValueError):
    """A run directory that holds another configuration."""


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


class _Images(Dataset):
    """In-memory (image, label) pairs (the mini tasks)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def task_dataset(task: str, split: str, data_root: str | None) -> Dataset:
    """(PIL image, label) pairs of a task's split: mini tasks from scikit-learn, MTIL from ``data_root``."""
    if task in catalog.MINI_TASKS:
        return _Images(*mini.load_split(task, split))
    if data_root is None:
        raise ValueError(f"task {task} needs --data-root (the folder holding the MTIL datasets; see `gift data check`)")
    from . import mtil_data

    return mtil_data.load_split(task, data_root, split)


class Progress:
    """Hooks for the CLI's display; the default does nothing."""

    def start_task(self, index: int, task: str, steps: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def end_task(self) -> None: ...
    def evaluated(self, index: int, task: str, row: list[float]) -> None: ...


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


def prepare_run_dir(config: TrainConfig) -> tuple[Path, dict]:
    """Create the run directory, or check it belongs to this very config; returns (dir, saved state)."""
    run_dir = Path(config.runs) / config.run_name
    cfg = asdict(config)
    if (run_dir / "config.json").exists():
        # fields added to TrainConfig after the run was made hold their defaults there
        saved = {**asdict(TrainConfig()), **json.loads((run_dir / "config.json").read_text())}
        differs = sorted(k for k in set(saved) | set(cfg) if saved.get(k) != cfg.get(k) and k not in FREE_ON_RESUME)
        if differs:
            raise RunDirError(f"{run_dir} holds a run with another configuration (differs in: {', '.join(differs)}); "
                              "pass --name to start a new run, or re-run with the same options to resume it")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.json", (json.dumps(cfg, indent=1) + "\n").encode())
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"finished": 0, "acc": [], "checkpoint": None}
    return run_dir, state


def _seed(config: TrainConfig, index: int) -> torch.Generator:
    torch.manual_seed(config.seed * 1000 + index)
    np.random.seed(config.seed * 1000 + index)
    return torch.Generator().manual_seed(config.seed * 1000 + index)


def _test_cache(config: TrainConfig, task: str, size: int, n: int) -> Path | None:
    """Where a task's decoded test split is cached: shared by the runs under --runs, keyed by what defines it."""
    if task in catalog.MINI_TASKS:
        return None  # small; decoded in memory
    key = {"task": task, "size": size, "n": n, "root": str(Path(config.data_root).resolve())}
    return Path(config.runs) / ".cache" / "test" / f"{task}-{size}-{spec_hash(key)[:12]}.npy"


def _shards_root(config: TrainConfig, pool: list[str]) -> Path:
    """The local root of the pool's sets: ``--shards`` itself, or the cache a store URL is fetched into once."""
    from shards.pull import pool_from_store
    from shards.store import is_url

    from .synthetic import spec_filter

    if not is_url(config.shards):
        return Path(config.shards)
    cache = Path(config.shard_cache) if config.shard_cache else None
    return pool_from_store(config.shards, pool, cache, keep=spec_filter(config.shard_family, config.replay_generator))


def train(config: TrainConfig, progress: Progress | None = None, device: torch.device | None = None) -> Path:
    """Run (or resume) the whole order; returns the run directory. Under torchrun, every rank calls this."""
    dist = Dist.from_env()
    progress = progress if progress is not None and dist.main else Progress()
    if device is None:
        device = torch.device("cuda", dist.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    method_cls = get_method(config.method)
    method_cls.check(config)
    order = catalog.get_order(config.order)
    tasks = [catalog.get_task(t) for t in order]
    if config.precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {config.precision!r}; choose fp32 or bf16")
    if config.workers is not None and config.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {config.workers}")
    for what, size in (("--batch-size", config.batch_size), ("--synthetic-batch", config.synthetic_batch)):
        if size % dist.world:
            raise ValueError(f"{what} {size} is not divisible by the {dist.world} processes; every rank takes an "
                             "equal share of the batch")
    amp = torch.bfloat16 if config.precision == "bf16" else None
    # Load everything that can fail on bad input before creating the run directory.
    datasets = {t: task_dataset(t, "train", config.data_root) for t in order}
    tests_data = {t: task_dataset(t, "test", config.data_root) for t in order}
    model = load_clip(ClipSpec(config.clip_arch, config.clip_weights, config.seed), device)
    size = image_size(model)
    tokenize = clip_tokenizer()
    schedule = sets = None
    own_group = dist.init(device)
    try:
        if method_cls.uses_synthetic:
            from .synthetic import class_images, draw_schedule, find_pool_sets, verify_pool

            base = catalog.BASE_POOL[config.order]
            pool = [base, *order[:-1]]
            if dist.main:  # rank 0 fetches (from a store) and verifies once; the others then read the same sets
                sets = find_pool_sets(_shards_root(config, pool), pool, config.shard_family, config.replay_generator)
                verify_pool(sets)
            dist.barrier()
            if not dist.main:
                sets = find_pool_sets(_shards_root(config, pool), pool, config.shard_family, config.replay_generator)
            schedule = draw_schedule(order, base, class_images(sets), config.synthetic_budget, config.seed)
        return _run(config, dist, progress, device, method_cls, order, tasks, datasets, tests_data, model, size,
                    tokenize, sets, schedule, amp)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _run(config, dist, progress, device, method_cls, order, tasks, datasets, tests_data, model, size, tokenize,
         sets, schedule, amp) -> Path:
    if dist.main:
        run_dir, state = prepare_run_dir(config)
    dist.barrier()
    if not dist.main:
        run_dir, state = prepare_run_dir(config)
    file_log = None
    if dist.main:
        file_log = logging.FileHandler(run_dir / "train.log")
        file_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("gift").addHandler(file_log)
    try:
        initial_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if state["checkpoint"]:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(run_dir / state["checkpoint"]))
            log.info("resuming %s after task %d of %d", run_dir, state["finished"], len(order))
        tests = [TestSet(tests_data[t], eval_resize(size), workers=loader_workers(config),
                         cache=_test_cache(config, t, size, len(tests_data[t]))) for t in order]
        if dist.world > 1:  # rank 0 fills the shared cache files; the others then map them
            if dist.main:
                for test in tests:
                    if test.cache is not None:
                        test.build()
            dist.barrier()
        replica = None
        if dist.world > 1 and method_cls.trains:
            # find_unused_parameters: ablations may leave a tower out of the replay loss (image-only, ...).
            replica = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)
        student = replica if replica is not None else model
        if config.compile and method_cls.trains:  # compiled once, reused by every task (same shapes)
            student = torch.compile(student)
        method = method_cls(config)
        for index, task in enumerate(order):
            if index < state["finished"]:
                continue
            generator = _seed(config, index)
            if method.trains:
                synth = None
                if schedule is not None:
                    from .synthetic import load_draw

                    synth = load_draw(sets, schedule[index], eval_resize(size), tokenize)
                _train_task(config, index, task, model, student, dist, initial_state, method, datasets, synth,
                            size, tokenize, generator, device, amp, run_dir, progress)
            row = evaluate_order(model, tasks, tests, tokenize, device, amp, dist)
            progress.evaluated(index, task, row)
            log.info("after %s: %s", task, "  ".join(f"{t} {a:.1f}" for t, a in zip(order, row, strict=True)))
            if dist.main:
                _finish_task(run_dir, state, model, index, row, config, order)
            else:
                state.update(finished=index + 1)
            dist.barrier()
    finally:
        if file_log is not None:
            logging.getLogger("gift").removeHandler(file_log)
            file_log.close()
    return run_dir


def _train_task(config, index, task, model, student, dist, initial_state, method, datasets, synth, size, tokenize,
                generator, device, amp, run_dir, progress) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    forward = functools.partial(student_features, student)
    workers = loader_workers(config) if task not in catalog.MINI_TASKS else 0  # mini: a few hundred images
    real_seed, replay_seed = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    ctx = TaskContext(index, task, model, initial_state, config, device, params,
                      [p.detach().clone() for p in params] if method.uses_anchor else [], dist, forward,
                      synthetic=synth, datasets=datasets, replay_seed=replay_seed, image_size=size, run_dir=run_dir,
                      workers=workers)
    method.begin_task(ctx)
    replay = method.replay_stream(ctx)
    real = ImageStream(datasets[task], train_transform(size, uint8=True), config.batch_size, real_seed, dist, device,
                       workers=workers)
    spec = catalog.get_task(task)
    class_tokens = tokenize([spec.prompt(c) for c in range(spec.num_classes)]).to(device)
    base_lr = config.lr_for(task)
    optimizer = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    progress.start_task(index, task, config.iterations)
    model.train()
    metrics = open(run_dir / "metrics.jsonl", "a") if dist.main else None
    try:
        for step in range(config.iterations):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, base_lr, config.warmup, config.iterations)
            losses = run_step(ctx, method, replay.next() if replay is not None else None, real.next(), class_tokens,
                              optimizer, autocast, step=step)
            method.after_step(ctx, step)
            progress.step(losses)
            if metrics and (step % 10 == 0 or step == config.iterations - 1):
                metrics.write(json.dumps({"task": task, "index": index, "step": step,
                                          "lr": optimizer.param_groups[0]["lr"], **losses}) + "\n")
    finally:
        if metrics:
            metrics.close()
    method.end_task(ctx)
    progress.end_task()


def run_step(ctx: TaskContext, method, replay_batch, real_batch, class_tokens: torch.Tensor, optimizer, autocast, *,
             step: int = 0, mark=None, update: bool = True) -> dict[str, float]:
    """One training step, the hook contract of ``methods/base.py``; returns the losses (mean over ranks).

    ``mark(phase)`` is called after each phase (replay, awc, ce, awc, optimizer) for the benchmark's timings;
    ``update=False`` skips the optimiser (FLOP counting).
    """
    mark = mark or (lambda phase: None)
    optimizer.zero_grad(set_to_none=True)
    terms: dict[str, torch.Tensor] = {}
    if replay_batch is not None:
        with autocast:
            terms = method.replay_terms(ctx, replay_batch)
        if terms:
            sum(terms.values()).backward()
    mark("replay")  # teacher forward + student forward/backward on the replayed batch
    method.after_replay_backward(ctx)
    mark("awc")
    with autocast:
        img, txt = ctx.local_features(real_batch.images, class_tokens)
        ce = classification_loss(img, txt, real_batch.labels)
    ce.backward()
    for p in ctx.params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    mark("ce")  # student forward/backward on the real batch and the task's class texts
    penalties = method.adjust_gradients(ctx)
    mark("awc")
    values = {"ce": ce, **terms, **penalties}
    losses = {}
    if update:
        # one small all-reduce: every rank sees the same (mean) losses, so all stop together when one is bad
        stacked = ctx.dist.all_reduce(torch.stack([v.detach().float() for v in values.values()]), op="mean")
        if not torch.isfinite(stacked).all():
            bad = [k for k, v in zip(values, stacked.tolist(), strict=True) if not math.isfinite(v)]
            raise NonFiniteLossError(f"{', '.join(bad)} became non-finite at task {ctx.index + 1} ({ctx.task}), "
                                     f"step {step}; the run stopped and keeps its last finished task's checkpoint")
        optimizer.step()
        losses = dict(zip(values, stacked.tolist(), strict=True))
    mark("optimizer")
    return losses


def _finish_task(run_dir: Path, state: dict, model, index: int, row: list[float], config: TrainConfig,
                 order: list[str]) -> None:
    """Checkpoint (new file, then state.json by rename, then drop the old file), then rewrite the report."""
    from safetensors.torch import save_file

    name = f"checkpoint-task{index + 1:02d}.safetensors"
    tmp = run_dir / f".{name}.tmp-{os.getpid()}"
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp,
              metadata={"task": order[index], "index": str(index), "config": json.dumps(asdict(config))})
    os.replace(tmp, run_dir / name)
    old = state["checkpoint"]
    state.update(finished=index + 1, acc=[*state["acc"], row], checkpoint=name, updated=time.time())
    atomic_write_bytes(run_dir / "state.json", (json.dumps(state, indent=1) + "\n").encode())
    if old and old != name:
        (run_dir / old).unlink(missing_ok=True)
    from .presets import comparable  # presets imports this module

    write_report(run_dir, names=order, acc=np.array(state["acc"]), method=config.method, order=config.order,
                 comparable=comparable(asdict(config)))
