"""What a run will cost: images to render, training steps, and the GPU-hours they take at least (counted FLOPs at the
GPU's datasheet peak, as the benchmark counts them: ``pipeline.bench.flops``); the GPUs torch sees; the disk it needs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.bench.flops import H100_PEAK, cache_flops, eval_flops, meta_clip, step_flops
from pipeline.bench.generate import PEAK_BF16_TFLOPS, SD15_TFLOP_PER_IMAGE, peak_tflops
from pipeline.datasets import catalog
from pipeline.training.config import TrainConfig

from .findings import NOTE, OK, Finding, human_bytes

REFERENCE_GPU = "H100"  # the peak the estimate is stated at when no GPU (or one of unknown peak) is visible


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: int  # bytes


def visible_gpus() -> list[Gpu]:
    if not torch.cuda.is_available():
        return []
    return [Gpu(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory)
            for i in range(torch.cuda.device_count())]


def check_gpus(gpus: list[Gpu], mini: bool) -> list[Finding]:
    if gpus:
        return [Finding("gpu", f"cuda:{i}", OK, f"{g.name}, {human_bytes(g.memory)}") for i, g in enumerate(gpus)]
    if mini:
        return [Finding("gpu", "GPU", NOTE, "none visible to torch: the mini orders run on CPU")]
    return [Finding("gpu", "GPU", "none", "no GPU visible to torch (torch.cuda.is_available() is False); a real order "
                    "on CPU takes days to weeks",
                    "run on a machine with a CUDA GPU: check `nvidia-smi`, that CUDA_VISIBLE_DEVICES is not empty, and "
                    "that torch is a CUDA build (python -c 'import torch; print(torch.version.cuda)')")]


@dataclass(frozen=True)
class Cost:
    images: int  # to render
    render_tflop: float
    steps: int  # training steps over the order
    train_tflop: float  # GIFT's step (the teacher cache included)
    eval_tflop: float  # image forwards of every test split after every task
    gpu: str  # whose peak
    peak: float  # TFLOP/s, dense bf16
    measured: bool  # the peak is the visible GPU's (else the reference GPU's)
    checkpoint_bytes: float  # a run keeps one fp32 checkpoint, and writes the next beside it


    @property
    def gpu_hours(self) -> float:
        return (self.render_tflop + self.train_tflop + self.eval_tflop) / self.peak / 3600


def task_steps(config: TrainConfig, train_counts: dict[str, int]) -> dict[str, int]:
    """Training steps per task (step) of ``config.order``: ``iterations``, or ``epochs`` over the task's training
    images (``train_counts``: per dataset, the found or official count; a CIL step's share of its classes)."""
    order = catalog.get_order(config.order)
    if config.iterations is not None:
        return {t: config.iterations for t in order}
    if catalog.is_cil(config.order):
        setting = catalog.get_setting(config.order, config.class_order)
        total = train_counts.get(setting.dataset, 0)
        classes = len(setting.classnames)
        return {t: config.steps_for(total * len(setting.steps[k]) // classes) for k, t in enumerate(order)}
    return {t: config.steps_for(train_counts.get(t, 0)) for t in order}


def estimate(config: TrainConfig, images: int, generator: str, render_steps: int, train_counts: dict[str, int],
             evaluated_images: int, gpus: list[Gpu]) -> tuple[Cost, dict[str, int]]:
    """The cost of one run of ``config`` after rendering ``images`` pool images: counted FLOPs (meta device, shapes
    only) of GIFT's step and of the evaluations' image forwards, SD v1.5's per image scaled by its denoising steps."""
    steps = task_steps(config, train_counts)
    # A step's FLOPs grow with the task's classes (CE over every class prompt): counting the step of the task with
    # the fewest for every step keeps the bound a lower one, at the price of one count (seconds) instead of one a task.
    fewest = min(steps, key=lambda t: catalog.get_task(t).num_classes)
    logging.disable(logging.WARNING)  # open_clip warns that shape-only models hold no pretrained weights
    try:
        model = meta_clip(config.clip_arch)
        image_f, _ = eval_flops(config.clip_arch)
        train = step_flops(fewest, config.batch_size, config.synthetic_batch, config.clip_arch,
                           model=model) * sum(steps.values())
        if config.method == "gift":
            train += len(steps) * cache_flops(config.clip_arch, config.synthetic_budget)
    finally:
        logging.disable(logging.NOTSET)
    render = images * SD15_TFLOP_PER_IMAGE * render_steps / 50 if generator == "sd15" else 0.0
    peak = peak_tflops(gpus[0].name) if gpus else None
    name = gpus[0].name if gpus and peak else REFERENCE_GPU
    cost = Cost(images, render, sum(steps.values()), train / 1e12, evaluated_images * image_f / 1e12, name,
                peak or H100_PEAK, peak is not None, 2.0 * 4 * sum(p.numel() for p in model.parameters()))
    return cost, steps


def cost_lines(cost: Cost, gpus: list[Gpu]) -> list[str]:
    """The cost as the doctor prints it, its reference GPU named when it is not the visible one."""
    where = (f"at the {cost.gpu}'s dense bf16 peak ({cost.peak:g} TFLOP/s)" if cost.measured else
             f"at the {REFERENCE_GPU}'s dense bf16 peak ({cost.peak:g} TFLOP/s), a reference: "
             + ("no GPU visible" if not gpus else f"the peak of {gpus[0].name} is not known "
                f"(known: {', '.join(PEAK_BF16_TFLOPS)})"))
    return [
        f"images to render: {cost.images:,} ({_amount(cost.render_tflop)} TFLOP)",
        f"training steps: {cost.steps:,} ({_amount(cost.train_tflop)} TFLOP, GIFT's step; other methods count fewer)",
        f"evaluation: {_amount(cost.eval_tflop)} TFLOP (every test image after every task)",
        f"at least {_amount(cost.gpu_hours)} GPU-hours {where}; a lower bound: real runs reach a fraction of peak "
        "(BENCHMARKS.md measures it)",
    ]


def _amount(x: float) -> str:
    """1,234 / 12.3 / 0.0042: whole numbers where large, two significant digits where small."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def check_disk(needs: dict[Path, float]) -> list[Finding]:
    """Free space on the filesystem of each folder (or of its nearest existing parent) against what will be
    written there; folders on one filesystem add up."""
    by_fs: dict[int, tuple[Path, float, list[str]]] = {}
    for folder, size in needs.items():
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        device = existing.stat().st_dev
        where, total, names = by_fs.get(device, (existing, 0.0, []))
        by_fs[device] = (where, total + size, [*names, str(folder)])
    findings = []
    for where, size, names in by_fs.values():
        free = shutil.disk_usage(where).free
        detail = f"{human_bytes(free)} free, about {human_bytes(size)} needed ({', '.join(names)})"
        if free < size:
            findings.append(Finding("disk", str(where), "too little", detail,
                                    f"free {human_bytes(size - free)} there, or put --shards / --runs on a larger disk"))
        else:
            findings.append(Finding("disk", str(where), OK, detail))
    return findings
