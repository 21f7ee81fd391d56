"""Stage 2: continual fine-tuning over an order of tasks (MTIL) or a class-incremental setting's steps (CIL),
evaluating after each, with resumable run directories. What differs between the two is the protocol
(:mod:`pipeline.training.protocol`: each step's data and prompts, the replay pool, the evaluation, the report).

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
Several nodes (``torchrun --nnodes N``) work the same way, with --runs (and a local --shards) on a filesystem
every node shares: every rank reads the checkpoint on resume, the test-set cache and the pool sets, and a rank
that does not see them stops every rank before training (``Dist.check_shared`` / ``Dist.agree``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from pipeline.datasets.required import require_datasets
from pipeline.dist import Dist
from pipeline.evaluation.evaluate import TestSet
from pipeline.methods import TaskContext, get_method
from pipeline.methods.base import Method, student_features
from pipeline.models import ClipFeatures, ClipSpec, eval_resize, image_size, load_clip, train_transform
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.replay.captioned import CaptionRenders, caption_pool_sets, write_captions_record
from pipeline.replay.streams import ImageStream
from pipeline.replay.synthetic import find_pool_sets, write_replay_record
from shards.errors import ShardSetError

from .clts_run import run_clts
from .config import TrainConfig, loader_workers, lr_at
from .protocol import Protocol, protocol_for
from .rundir import FILE_ONLY, finish_task, prepare_run_dir, run_log
from .step import LossLog, run_step

if TYPE_CHECKING:
    from pipeline.replay.synthetic import SampleRef, SyntheticBatchSource

log = logging.getLogger("gift.train")
# The loops of methods that do not fine-tune CLIP (``Method.loop``), each reusing the run directory, resume, report,
# tracking and table machinery: CLTS trains task heads and a router on frozen features.
LOOPS = {"task-heads": run_clts}


class Progress:
    """Hooks for the CLI's display; the default does nothing."""

    def start_task(self, index: int, task: str, steps: int) -> None: ...
    def step(self, losses: dict[str, float] | None) -> None:
        """One step done; ``losses`` at the logged steps (every 10 and the last), None between them."""
    def end_task(self) -> None: ...
    def evaluated(self, index: int, task: str, row: list[float], extra: dict[str, float] | None = None) -> None:
        """The evaluation after task ``index``: its accuracy row, and the protocol's further values (CIL: ``seen``)."""
    def phase(self, label: str, total: int) -> None:
        """Work outside the steps begins (CLTS's feature passes): ``total`` items, counted by ``advance``."""
    def advance(self, n: int) -> None: ...
    def end_phase(self) -> None: ...


class Tracker:
    """Hooks for experiment trackers (``--report-to``, pipeline/training/tracking.py), called on rank 0 only; the
    default does nothing. ``step`` is the run's global step: the steps of the tasks before + the step in the task;
    ``offsets[i]`` is task i's first global step (``offsets[T]`` the run's total)."""

    def open(self, run_dir: Path, config: TrainConfig, protocol: Protocol, state: dict, offsets: list[int]) -> None: ...
    def metrics(self, record: dict, step: int) -> None: ...  # a row of metrics.jsonl, when it is written
    def evaluated(self, index: int, protocol: Protocol, state: dict) -> None: ...  # state.json after task index
    def close(self) -> None: ...


@dataclass
class Run:
    """A fine-tuning run's fixed parts in one place: ``train()`` builds it from what can fail on bad input (before
    the run directory exists), ``_run()`` completes it once the directory exists, and each task reads it."""

    config: TrainConfig
    dist: Dist
    device: torch.device
    amp: torch.dtype | None  # the autocast dtype (bf16); None: fp32
    protocol: Protocol
    method_cls: type[Method]
    datasets: dict[str, Dataset]  # the training split of every step of the order
    tests: list[TestSet]
    model: torch.nn.Module  # the CLIP being fine-tuned (bare: state_dict, checkpoints, evaluation)
    size: int  # its input resolution
    tokenize: Callable[[Sequence[str]], torch.Tensor]
    progress: Progress
    tracker: Tracker
    sets: dict[str, Path] | None = None  # the replay pool's sets by task (methods with a synthetic stream)
    schedule: list[list[SampleRef]] | None = None  # each step's draw from those sets
    renders: dict[str, CaptionRenders] = field(default_factory=dict)  # --replay-captions: the caption sets behind them
    # Set by _run() once the run directory exists:
    run_dir: Path = field(init=False)
    state: dict = field(init=False)  # state.json: the steps finished, the last checkpoint, the accuracy rows
    offsets: list[int] = field(init=False)  # step i's first step on the run's global step axis; [T]: the total
    initial_state: dict[str, torch.Tensor] = field(init=False)  # the model before any step, on CPU
    student: torch.nn.Module = field(init=False)  # the training forward: ClipFeatures, wrapped by DDP / compile
    method: Method = field(init=False)


def _seed(config: TrainConfig, index: int) -> torch.Generator:
    torch.manual_seed(config.seed * 1000 + index)
    np.random.seed(config.seed * 1000 + index)
    return torch.Generator().manual_seed(config.seed * 1000 + index)


def _shards_root(config: TrainConfig, pool: list[str]) -> Path:
    """The local root of the pool's sets: ``--shards`` itself, or the cache a store URL is fetched into once."""
    from pipeline.replay.synthetic import spec_filter
    from shards.pull import pool_from_store
    from shards.store import is_url

    if not is_url(config.shards):
        return Path(config.shards)
    cache = Path(config.shard_cache) if config.shard_cache else None
    return pool_from_store(config.shards, pool, cache, keep=spec_filter(config.shard_family, config.replay_generator))


def train(config: TrainConfig, progress: Progress | None = None, device: torch.device | None = None,
          tracker: Tracker | None = None) -> Path:
    """Run (or resume) the whole order; returns the run directory. Under torchrun, every rank calls this."""
    dist = Dist.from_env()
    progress = progress if progress is not None and dist.main else Progress()
    tracker = tracker if tracker is not None and dist.main else Tracker()
    if device is None:
        device = torch.device("cuda", dist.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    method_cls = get_method(config.method)
    method_cls.check(config)
    if method_cls.loop != "finetune":
        return LOOPS[method_cls.loop](config, progress, device, tracker)
    protocol = protocol_for(config)
    require_datasets(config.order, config.data_root)  # every missing dataset named at once, before anything loads
    for what, size in (("--batch-size", config.batch_size), ("--synthetic-batch", config.synthetic_batch)):
        if size % dist.world:
            raise ValueError(f"{what} {size} is not divisible by the {dist.world} processes; every rank takes an "
                             "equal share of the batch")
    amp = torch.bfloat16 if config.precision == "bf16" else None
    # Load everything that can fail on bad input before creating the run directory.
    datasets = protocol.train_sets()
    model = load_clip(ClipSpec(config.clip_arch, config.clip_weights, config.seed), device)
    size = image_size(model)
    run = Run(config=config, dist=dist, device=device, amp=amp, protocol=protocol, method_cls=method_cls,
              datasets=datasets, tests=protocol.test_sets(size), model=model, size=size, tokenize=clip_tokenizer(),
              progress=progress, tracker=tracker)
    own_group = dist.init(device)
    try:
        dist.check_shared(Path(config.runs), "--runs", "rank 0 writes the run directory, every rank reads it")
        if method_cls.uses_synthetic:
            from pipeline.replay.synthetic import class_images, draw_schedule, verify_pool

            pool = protocol.pool_sets
            # Rank 0 fetches (from a store) and verifies once; the others then read the same sets. A rank that
            # cannot (a missing or broken set; a node without the shared --shards) stops every rank with its reason.
            failure = None
            if dist.main:
                try:
                    run.sets, run.renders = _pool_sets(config, pool)
                    verify_pool(run.sets)
                except ShardSetError as e:
                    if dist.world == 1:
                        raise
                    failure = str(e)
            dist.agree(failure)
            if not dist.main:
                try:
                    run.sets, run.renders = _pool_sets(config, pool)
                except ShardSetError as e:
                    failure = str(e)
            dist.agree(failure, "--shards must be on a filesystem all nodes share, or a store URL")
            run.schedule = draw_schedule(protocol.pools(), class_images(run.sets), config.synthetic_budget,
                                         config.seed)
        return _run(run)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _pool_sets(config: TrainConfig, pool: list[str]) -> tuple[dict[str, Path], dict[str, CaptionRenders]]:
    """The pool's sets by task, and (``--replay-captions``) the caption renders the earlier tasks' sets are."""
    if not config.replay_captions:
        root = _shards_root(config, pool)
        try:
            return find_pool_sets(root, pool, config.shard_family, config.replay_generator), {}
        except ShardSetError as e:
            if not str(e).startswith("no shard set"):
                raise
            raise ShardSetError(f"{e}; or the order's whole pool at once: gift generate --order {config.order} --out "
                                f"{root} (`gift doctor --order {config.order}` lists every set)") from None
    from shards.store import is_url

    if is_url(config.shards):
        raise ShardSetError(f"--replay-captions reads a local --shards root, not {config.shards}: pull the sets first "
                            "(gift shards pull STORE/TASK/HASH DEST), the caption sets included")
    return caption_pool_sets(config.shards, config.captions, pool, config.shard_family, config.replay_generator,
                             config.real_renders)


def _run(run: Run) -> Path:
    config, dist, model = run.config, run.dist, run.model
    order = run.protocol.steps
    if dist.main:
        run.run_dir, run.state = prepare_run_dir(config)
        if run.renders:  # which caption sets the replay came from, and the memory they are (report, gift table)
            write_captions_record(run.run_dir, run.renders)
        if run.sets is not None:  # what the replay is: renders, or real images (report, gift table)
            write_replay_record(run.run_dir, run.sets)
    dist.barrier()
    if not dist.main:
        run.run_dir, run.state = prepare_run_dir(config)
    with run_log(run.run_dir if dist.main else None):
        try:
            run.method = run.method_cls(config)
            run.method.prepare_model(model, run.protocol)  # its own modules, before a checkpoint is loaded into them
            run.offsets = np.cumsum([0] + [run.method.schedule(config.steps_for(len(run.datasets[t])))[0]
                                           for t in order]).tolist()
            run.tracker.open(run.run_dir, config, run.protocol, run.state, run.offsets)
            run.initial_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if run.state["checkpoint"]:
                from safetensors.torch import load_file

                model.load_state_dict(load_file(run.run_dir / run.state["checkpoint"]))
                log.info("resuming %s after task %d of %d", run.run_dir, run.state["finished"], len(order))
            if dist.world > 1:  # rank 0 fills the shared cache files; the others then map them
                if dist.main:
                    for test in run.tests:
                        if test.cache is not None:
                            test.build()
                dist.barrier()
            # The student's training forward (trimmed text ids); DDP and torch.compile wrap it, not the bare CLIP.
            run.student = ClipFeatures(model)
            if dist.world > 1 and run.method_cls.trains:
                # find_unused_parameters: ablations may leave a tower out of the replay loss (image-only, ...).
                run.student = DistributedDataParallel(run.student, find_unused_parameters=True,
                                                      device_ids=[run.device.index] if run.device.type == "cuda" else None)
            if config.compile and run.method_cls.trains:  # compiled once for every task; text ids of a new width
                # (trimmed per task) recompile once, then dynamo treats the width as dynamic
                run.student = torch.compile(run.student)
            evaluate = (run.method.evaluator(run.protocol, run.tests, run.tokenize, run.device, run.amp, dist)
                        or run.protocol.evaluator(run.tests, run.tokenize, run.device, run.amp, dist,
                                                  frozen=not run.method.trains))
            for index, task in enumerate(order):
                if index < run.state["finished"]:
                    continue
                generator = _seed(config, index)
                if run.method.trains:
                    synth = None
                    if run.schedule is not None:
                        from pipeline.replay.synthetic import load_draw

                        synth = load_draw(run.sets, run.schedule[index], eval_resize(run.size), run.tokenize)
                    _train_task(run, index, task, synth, generator)
                result = evaluate(model, index)
                run.progress.evaluated(index, task, result.row, result.extra)
                # train.log's record of it; the terminal shows the progress line (FILE_ONLY), not both
                log.info("after %s: %s%s", task, "  ".join(f"{t} {a:.1f}" for t, a in zip(order, result.row, strict=True)
                                                         if a == a), "".join(f"  | {k} {v:.1f}" for k, v in result.extra.items()),
                         extra=FILE_ONLY)
                if dist.main:
                    finish_task(run.run_dir, run.state, model, index, result, run.protocol)
                    run.tracker.evaluated(index, run.protocol, run.state)
                else:
                    run.state.update(finished=index + 1)
                dist.barrier()
        finally:
            run.tracker.close()
    return run.run_dir


def _train_task(run: Run, index: int, task: str, synth: SyntheticBatchSource | None, generator: torch.Generator) -> None:
    """Train step ``index`` (``task``) of the run: its real data and, for a method with a synthetic stream, ``synth``
    (the step's draw, decoded); ``generator``: the step's seeded RNG."""
    config, method, device = run.config, run.method, run.device
    params = method.trained_parameters(run.model, index)
    forward = functools.partial(student_features, run.student)
    workers = 0 if run.protocol.in_memory else loader_workers(config)  # mini: a few hundred images
    real_seed, replay_seed = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    ctx = TaskContext(index, task, run.model, run.initial_state, config, device, params,
                      [p.detach().clone() for p in params] if method.uses_anchor else [], run.dist, forward,
                      synthetic=synth, datasets=run.datasets, replay_seed=replay_seed, image_size=run.size,
                      run_dir=run.run_dir, workers=workers, lookup=run.protocol.task)
    method.begin_task(ctx)
    replay = method.replay_stream(ctx)
    real = ImageStream(run.datasets[task], train_transform(run.size, uint8=True), config.batch_size, real_seed, run.dist,
                       device, workers=workers)
    spec = run.protocol.task(task)
    steps, span = method.schedule(config.steps_for(len(run.datasets[task])))  # span: the steps the lr schedule covers
    class_tokens = run.tokenize([spec.prompt(c) for c in range(spec.num_classes)]).to(device)  # trimmed, once per task
    base_lr = method.lr_for(task)
    optimizer = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=run.amp or torch.float32, enabled=run.amp is not None)
    run.progress.start_task(index, task, steps)
    run.model.train()
    metrics = open(run.run_dir / "metrics.jsonl", "a") if run.dist.main else None
    loss_log = LossLog(ctx)  # losses stay on the device between logged steps: no per-step synchronisation
    try:
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, base_lr, config.warmup, span)
            loss_log.add(step, run_step(ctx, method, replay.next() if replay is not None else None, real.next(),
                                        class_tokens, optimizer, autocast))
            method.after_step(ctx, step)
            losses = loss_log.read(step) if loss_log.due(step, steps) else None
            run.progress.step(losses)
            if metrics and losses is not None:
                record = {"task": task, "index": index, "step": step, "lr": optimizer.param_groups[0]["lr"], **losses}
                metrics.write(json.dumps(record) + "\n")
                run.tracker.metrics(record, run.offsets[index] + step)
    finally:
        if metrics:
            metrics.close()
    method.end_task(ctx)
    run.progress.end_task()
