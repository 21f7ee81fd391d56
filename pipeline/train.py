"""Stage 2: continual fine-tuning over an order of tasks, evaluating after each, with resumable run directories.

    runs/<name>/config.json        the resolved TrainConfig (a run directory is never reused for another config)
               train.log, metrics.jsonl
               acc_matrix.csv/.npy, results.md, acc_matrix.png, curves.png   (rewritten after every task)
               checkpoint-taskNN.safetensors + state.json                    (written by rename at task ends)

Running the same command again continues after the last finished task. Each task seeds its own RNGs from
(seed, task index), so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from shards.layout import atomic_write_bytes

from . import catalog, mini
from .evaluate import TestSet, Transformed, evaluate_order
from .losses import classification_loss
from .methods import SynthBatch, TaskContext, get_method
from .models import (
    ClipSpec,
    encode_images,
    encode_texts,
    eval_resize,
    image_size,
    load_clip,
    normalize_uint8,
    train_transform,
)
from .models import tokenizer as clip_tokenizer
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
    shards: str = "shards-out"
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
    workers: int = 4
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


def prepare_run_dir(config: TrainConfig) -> tuple[Path, dict]:
    """Create the run directory, or check it belongs to this very config; returns (dir, saved state)."""
    run_dir = Path(config.runs) / config.run_name
    cfg = asdict(config)
    if (run_dir / "config.json").exists():
        saved = json.loads((run_dir / "config.json").read_text())
        differs = sorted(k for k in set(saved) | set(cfg) if saved.get(k) != cfg.get(k))
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


def _cycle(loader: DataLoader):
    while True:
        yield from loader


def train(config: TrainConfig, progress: Progress | None = None, device: torch.device | None = None) -> Path:
    """Run (or resume) the whole order; returns the run directory."""
    progress = progress or Progress()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method_cls = get_method(config.method)
    order = catalog.get_order(config.order)
    tasks = [catalog.get_task(t) for t in order]
    if config.precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {config.precision!r}; choose fp32 or bf16")
    amp = torch.bfloat16 if config.precision == "bf16" else None
    # Load everything that can fail on bad input before creating the run directory.
    datasets = {t: task_dataset(t, "train", config.data_root) for t in order}
    tests_data = {t: task_dataset(t, "test", config.data_root) for t in order}
    model = load_clip(ClipSpec(config.clip_arch, config.clip_weights, config.seed), device)
    size = image_size(model)
    tokenize = clip_tokenizer()
    schedule = sets = None
    if method_cls.uses_synthetic:
        from .synthetic import class_images, draw_schedule, find_pool_sets, verify_pool

        base = catalog.BASE_POOL[config.order]
        sets = find_pool_sets(Path(config.shards), [base, *order[:-1]], config.shard_family)
        verify_pool(sets)
        schedule = draw_schedule(order, base, class_images(sets), config.synthetic_budget, config.seed)

    run_dir, state = prepare_run_dir(config)
    file_log = logging.FileHandler(run_dir / "train.log")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("gift").addHandler(file_log)
    try:
        initial_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if state["checkpoint"]:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(run_dir / state["checkpoint"]))
            log.info("resuming %s after task %d of %d", run_dir, state["finished"], len(order))
        tests = [TestSet(tests_data[t], eval_resize(size), workers=min(config.workers, 2)) for t in order]
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
                _train_task(config, index, task, model, initial_state, method, datasets[task], synth, size,
                            tokenize, generator, device, amp, run_dir, progress)
            row = evaluate_order(model, tasks, tests, tokenize, device, amp)
            progress.evaluated(index, task, row)
            log.info("after %s: %s", task, "  ".join(f"{t} {a:.1f}" for t, a in zip(order, row, strict=True)))
            _finish_task(run_dir, state, model, index, row, config, order)
    finally:
        logging.getLogger("gift").removeHandler(file_log)
        file_log.close()
    return run_dir


def _train_task(config, index, task, model, initial_state, method, dataset, synth, size, tokenize, generator,
                device, amp, run_dir, progress) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    ctx = TaskContext(index, task, model, initial_state, config, device, params,
                      [p.detach().clone() for p in params] if method.uses_anchor else [])
    method.begin_task(ctx)
    loader = DataLoader(Transformed(dataset, train_transform(size)), batch_size=config.batch_size, shuffle=True,
                        drop_last=len(dataset) >= config.batch_size, generator=generator,
                        num_workers=config.workers if task not in catalog.MINI_TASKS else 0)
    real = _cycle(loader)
    spec = catalog.get_task(task)
    class_tokens = tokenize([spec.prompt(c) for c in range(spec.num_classes)]).to(device)
    base_lr = config.lr_for(task)
    optimizer = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    synth_order = torch.empty(0, dtype=torch.long)
    progress.start_task(index, task, config.iterations)
    model.train()
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        for step in range(config.iterations):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, base_lr, config.warmup, config.iterations)
            optimizer.zero_grad(set_to_none=True)
            terms: dict[str, torch.Tensor] = {}
            if synth is not None:
                if len(synth_order) < config.synthetic_batch:  # a fresh seeded permutation per pass
                    synth_order = torch.cat([synth_order, torch.randperm(len(synth), generator=generator)])
                pick, synth_order = synth_order[: config.synthetic_batch], synth_order[config.synthetic_batch :]
                batch = SynthBatch(normalize_uint8(synth.images[pick].to(device)), synth.tokens[pick].to(device),
                                   [synth.prompts[i] for i in pick.tolist()])
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    terms = method.replay_terms(ctx, batch)
                if terms:
                    sum(terms.values()).backward()
            method.after_replay_backward(ctx)
            images, labels = next(real)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                ce = classification_loss(encode_images(model, images.to(device)), encode_texts(model, class_tokens),
                                         labels.to(device))
            ce.backward()
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            penalties = method.adjust_gradients(ctx)
            values = {"ce": ce, **terms, **penalties}
            stacked = torch.stack([v.detach().float() for v in values.values()])
            if not torch.isfinite(stacked).all():
                bad = [k for k, v in zip(values, stacked.tolist(), strict=True) if not math.isfinite(v)]
                raise NonFiniteLossError(f"{', '.join(bad)} became non-finite at task {index + 1} ({task}), step {step}; "
                                         "the run stopped and keeps its last finished task's checkpoint")
            optimizer.step()
            losses = dict(zip(values, stacked.tolist(), strict=True))
            progress.step(losses)
            if step % 10 == 0 or step == config.iterations - 1:
                metrics.write(json.dumps({"task": task, "index": index, "step": step,
                                          "lr": optimizer.param_groups[0]["lr"], **losses}) + "\n")
    method.end_task(ctx)
    progress.end_task()


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
    comparable = (config.clip_arch, config.clip_weights, config.iterations) == ("ViT-B-16", "openai", 1000)
    write_report(run_dir, names=order, acc=np.array(state["acc"]), method=config.method, order=config.order,
                 comparable=comparable and config.order in ("I", "II"))
