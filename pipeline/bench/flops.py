"""Counted FLOPs (``FlopCounterMode`` on the meta device: shapes only, exact on any machine) of the GIFT step, the
teacher's cache, an evaluation row, and the floor they put on one MTIL order at a datasheet peak.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.datasets import catalog
from pipeline.methods import TaskContext
from pipeline.methods.gift import Gift
from pipeline.models import ClipSpec, encode_images, encode_texts, image_size, load_clip
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.replay.synthetic import SyntheticBatchSource
from pipeline.training.config import TrainConfig

from .generate import PEAK_BF16_TFLOPS, SD15_TFLOP_PER_IMAGE
from .step import GiftStep, pool_width

H100_PEAK = PEAK_BF16_TFLOPS["H100"]  # the reference GPU of the goals (dense bf16, TFLOP/s)


def count_flops(step, *args) -> int:
    """FLOPs of ``step(*args)`` as FlopCounterMode counts them (matmuls, convolutions, attention: elementwise
    ops, AWC's included, count zero)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(*args)
    return counter.get_total_flops()


def meta_clip(arch: str) -> torch.nn.Module:
    """The architecture on the meta device (shapes only): what the FLOP counts run on."""
    return load_clip(ClipSpec(arch, "none"), "meta")


def step_flops(task: str, real_batch: int = 64, synth_batch: int = 64, arch: str = "ViT-B-16",
               fast: bool = True, model: torch.nn.Module | None = None) -> int:
    """FLOPs of the full step on the meta device (shapes only, nothing computed), AWC off: it adds none.
    ``fast``: cached teacher features and trimmed ids (synthetic ids as wide as the widest pool prompt);
    otherwise the step before issue 11. ``model``: a ``meta_clip`` to reuse."""
    model = model if model is not None else meta_clip(arch)
    step = GiftStep(model, device=torch.device("meta"), real_batch=real_batch, synth_batch=synth_batch, task=task,
                    awc=False, fused=False, update=False, fast=fast, synth_width=pool_width() if fast else None)
    return count_flops(step)


def cache_flops(arch: str = "ViT-B-16", draw: int = 1000) -> int:
    """FLOPs of building one task's teacher cache (``Gift.begin_task``) on the meta device: ``draw`` images and,
    at worst, as many distinct prompts (ImageNet's 1,000 names), trimmed per batch of 256."""
    model = load_clip(ClipSpec(arch, "none"), "meta")
    base = catalog.get_task(catalog.IMAGENET)
    prompts = [base.prompt(i % base.num_classes) for i in range(draw)]
    size = image_size(model)
    params = [p for p in model.parameters() if p.requires_grad]
    ctx = TaskContext(0, "imagenet", model, {}, TrainConfig(), torch.device("meta"), params, [],
                      synthetic=SyntheticBatchSource(torch.zeros(draw, 3, size, size, dtype=torch.uint8, device="meta"),
                                                     clip_tokenizer()(prompts), prompts))
    return count_flops(Gift(TrainConfig()).begin_task, ctx)


def eval_flops(arch: str = "ViT-B-16") -> tuple[int, int]:
    """(FLOPs of one image forward, FLOPs of one prompt forward at 77 columns) on the meta device."""
    model = load_clip(ClipSpec(arch, "none"), "meta").eval()
    size = image_size(model)
    out = []
    for fn, x in ((encode_images, torch.zeros(1, 3, size, size, device="meta")),
                  (encode_texts, torch.zeros(1, 77, dtype=torch.long, device="meta"))):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            fn(model, x)
        out.append(counter.get_total_flops())
    return out[0], out[1]


def head_flops(tasks: list[str], arch: str = "ViT-B-16") -> tuple[int, int]:
    """Text FLOPs of the zero-shot heads of ``tasks`` (every template of every class), (before, after): at 77
    columns, and as ``zeroshot_head`` runs them, 512 prompts a batch, each batch trimmed (meta device)."""
    model = load_clip(ClipSpec(arch, "none"), "meta").eval()
    before = after = 0
    for t in tasks:
        task = catalog.get_task(t)
        prompts = [tpl.format(c) for c in task.classnames for tpl in task.templates]
        for i in range(0, len(prompts), 512):
            chunk = prompts[i : i + 512]
            for full, cols in ((True, clip_tokenizer(trim=False)(chunk)), (False, clip_tokenizer()(chunk))):
                counter = FlopCounterMode(display=False)
                with counter, torch.no_grad():
                    encode_texts(model, cols.to("meta"))
                if full:
                    before += counter.get_total_flops()
                else:
                    after += counter.get_total_flops()
    return before, after


def order_limits(order: str = "I", arch: str = "ViT-B-16", peak: float = H100_PEAK) -> dict:
    """Seconds one MTIL order needs at 100% of ``peak`` (TFLOP/s): rendering its pool, 1,000 steps per task
    (+ the teacher's cache per task), and 11 evaluations of every test split, each as FLOPs counted after issue 11
    and before it (teacher forward every step, texts at 77 columns). A floor computed from counted FLOPs, not a
    measurement."""
    from pipeline.datasets import mtil

    tasks = catalog.get_order(order)
    pool = [catalog.IMAGENET, *tasks[:-1]]
    images = sum(catalog.default_per_class(t) * catalog.get_task(t).num_classes for t in pool)
    model = meta_clip(arch)
    steps = {t: {"before": step_flops(t, arch=arch, fast=False, model=model), "after": step_flops(t, model=model)}
             for t in tasks}
    cache = cache_flops(arch)
    image_f, _ = eval_flops(arch)
    heads_before, heads_after = head_flops(tasks, arch)
    test_images = sum(mtil._source(t).official[1] for t in tasks)  # official test split sizes
    generate = images * SD15_TFLOP_PER_IMAGE * 1e12
    flops = {}
    for when in ("before", "after"):
        train = sum(1000 * f[when] for f in steps.values()) + (len(tasks) * cache if when == "after" else 0)
        heads = heads_after if when == "after" else heads_before
        flops[when] = {"generate": generate, "train": train,
                       "evaluate": len(tasks) * (test_images * image_f + heads)}
    return {"images": images, "test_images": test_images, "step_flops": steps, "cache_flops": cache,
            "heads": {"before": heads_before, "after": heads_after}, "image_flops": image_f,
            "flops": flops, "seconds": {k: v / (peak * 1e12) for k, v in flops["after"].items()},
            "seconds_before": {k: v / (peak * 1e12) for k, v in flops["before"].items()}}




def flop_table(limits: dict, tasks: tuple[str, ...], batch: str) -> tuple[list[str], dict]:
    """Issue 11's rows: FLOPs before/after of one GIFT step per task, the cache's share, one evaluation row."""
    steps, heads, image_f = limits["step_flops"], limits["heads"], limits["image_flops"]
    test_images = limits["test_images"]
    row_before = test_images * image_f + heads["before"]
    row_after = test_images * image_f + heads["after"]
    ratio = lambda b, a: f"**{b / a:.2f}x**" if a else "–"  # noqa: E731
    lines = [
        "| per | before (TFLOP) | after (TFLOP) | fewer FLOPs |",
        "|---|---:|---:|---:|",
        *[f"| GIFT step, {batch}, CE prompts of {t} ({catalog.get_task(t).num_classes} classes) | "
          f"{steps[t]['before'] / 1e12:.2f} | {steps[t]['after'] / 1e12:.2f} | {ratio(steps[t]['before'], steps[t]['after'])} |"
          for t in tasks],
        f"| …the teacher's cache, built once per task (1,000 images + at most 1,000 prompts), per step of 1,000 | "
        f"– | {limits['cache_flops'] / 1000 / 1e12:.3f} | |",
        f"| one evaluation row of the order: zero-shot heads (every template of every class), text only | "
        f"{heads['before'] / 1e12:.2f} | {heads['after'] / 1e12:.2f} | {ratio(heads['before'], heads['after'])} |",
        f"| one evaluation row: heads + {test_images:,} test images | {row_before / 1e12:.2f} | {row_after / 1e12:.2f} | "
        f"{ratio(row_before, row_after)} |",
    ]
    first = tasks[0]
    facts = {"step_ratio": steps[first]["before"] / steps[first]["after"], "step_ratio_task": first,
             "head_ratio": heads["before"] / heads["after"] if heads["after"] else 0.0}
    return lines, facts


