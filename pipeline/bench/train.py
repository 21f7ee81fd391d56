"""`make bench`, training rows: the GIFT step on the real ViT-B/16 architecture with random weights.

CPU (always): the step at a reduced batch with AWC on and off, the AWC hooks timed inside the step, the
released code's AWC (a Python loop over parameters for F, the penalty back-propagated through autograd) as
the unoptimised path, matmul FLOPs counted with ``FlopCounterMode`` (AWC must add none), and fp32 vs bf16
autocast on this CPU. Limits: FLOPs of the full 64 + 64 step per task (counted on the meta device) against a
datasheet bf16 peak, and what one MTIL order costs at that peak.

GPU (only with CUDA): steps/s at 64 + 64 for fp32, fused AdamW, TF32, bf16 autocast, `--compile`, AWC on
and off, each as a share of the limit; evaluation images/s. Without a GPU those rows say so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.datasets import catalog
from pipeline.methods import SynthBatch, TaskContext
from pipeline.methods.base import student_features
from pipeline.methods.frozen import prompt_index
from pipeline.methods.gift import Gift
from pipeline.models import ClipFeatures, ClipSpec, encode_images, encode_texts, image_size, load_clip, normalize_uint8
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.training.config import TrainConfig
from pipeline.training.losses import UNREACHED_FISHER, contrastive_distillation
from pipeline.training.step import run_step
from pipeline.training.synthetic import SyntheticBatchSource

from .common import NOT_ON_GPU, seconds, times
from .generate import PEAK_BF16_TFLOPS, SD15_TFLOP_PER_IMAGE, peak_tflops

H100_PEAK = PEAK_BF16_TFLOPS["H100"]  # the reference GPU of the goals (dense bf16, TFLOP/s)
GPU_STEP_GOAL = 15.0  # steps/s per H100-class GPU (issue 6)


class ReleasedAwc(Gift):
    """AWC as the released code computes it (the unoptimised path): a Python loop over the parameters builds
    F = g²/mean(g²) one tensor at a time (F = 1e-6 where the distillation backward left no gradient), and the
    penalty λ·Σ F·(θ−θ₀)² is an autograd graph whose backward adds its gradient (the released code
    back-propagates it together with CE). Same gradient as ``Gift``."""

    def after_replay_backward(self, ctx: TaskContext) -> None:
        self.fisher = []
        for p in ctx.params:
            if p.grad is None:
                self.fisher.append(torch.full_like(p, UNREACHED_FISHER))
                continue
            f = p.grad.detach().clone() ** 2
            if self.config.fisher_norm:
                f /= f.mean()
            self.fisher.append(f)

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        penalty = self.config.lam * sum((f * (p - a) ** 2).sum() for f, p, a in zip(self.fisher, ctx.params, ctx.anchors, strict=True))
        penalty.backward()
        self.fisher = []
        return {"awc": penalty.detach()}


class OnTheFlyGift(Gift):
    """GIFT's step before the teacher-feature cache (issue 11): the teacher is kept and encodes every step's
    synthetic images and prompts (64 image and 64 text forwards a step, 64,000 of each a task). With token ids at
    open_clip's full 77 columns this is the step as it was; the benchmark's "before" and the cache's equality test
    compare against it."""

    def begin_task(self, ctx: TaskContext) -> None:
        self.teacher = self.make_teacher(ctx)
        self.prompt_ids = prompt_index(ctx.synthetic.prompts)[0].to(ctx.device)
        self.fisher_grads = None

    @torch.no_grad()
    def teacher_features(self, ctx: TaskContext, synth: SynthBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return ctx.gather(encode_images(self.teacher, synth.images)), ctx.gather(encode_texts(self.teacher, synth.tokens))

    def end_task(self, ctx: TaskContext) -> None:
        del self.teacher, self.prompt_ids


def pool_width() -> int:
    """Token columns of the widest first-template prompt of any task (ImageNet's included): a synthetic draw,
    trimmed after its longest prompt, is at most this wide (28, a Stanford Cars name)."""
    tokenize = clip_tokenizer()
    return max(tokenize([catalog.get_task(t).prompt(c) for c in range(catalog.get_task(t).num_classes)]).shape[1]
               for t in catalog.task_names())


class GiftStep:
    """One step of ``train._train_task`` on fixed in-memory batches (data loading is benchmarked apart).

    The very step train.py runs (``train.run_step``): replay terms (the teacher's cached features + student
    CD/ITA) → backward → ``after_replay_backward`` → CE on the real batch (class texts re-encoded) → backward →
    ``adjust_gradients`` → AdamW step. The synthetic draw is the batch itself, so ``begin_task`` (the teacher's
    cache) runs once per ``resize``. ``method`` can be swapped between calls (AWC on/off, the released AWC) and
    ``amp`` set to ``torch.bfloat16``; both keep the same cache, anchors and optimizer. ``fast=False`` is the
    step before issue 11: ``OnTheFlyGift`` and token ids at 77 columns. ``synth_width`` pads the synthetic ids to
    a draw's width (a batch is as wide as its draw's longest prompt). Calling returns seconds per phase (each
    phase synchronised when ``sync_phases``).
    """

    def __init__(self, model: torch.nn.Module, *, device: torch.device, real_batch: int, synth_batch: int,
                 task: str, awc: bool = True, fused: bool | None = None, update: bool = True, seed: int = 0,
                 fast: bool = True, synth_width: int | None = None):
        self.model, self.device, self.task, self.update = model, torch.device(device), task, update
        self.fast, self.synth_width = fast, synth_width
        self.config = TrainConfig(awc=awc, seed=seed)
        params = [p for p in model.parameters() if p.requires_grad]
        # initial_state is only read for the `initial` / `wise:x` teachers; the default teacher is θ(t−1).
        self.ctx = TaskContext(0, task, model, {}, self.config, self.device, params, [p.detach().clone() for p in params])
        self.method: Gift = (Gift if fast else OnTheFlyGift)(self.config)
        self.amp: torch.dtype | None = None
        self.sync_phases = self.device.type != "cuda"
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0,
                                           fused=self.device.type == "cuda" if fused is None else fused)
        self.resize(real_batch, synth_batch, seed)

    def tokens(self, prompts: list[str], width: int | None = None) -> torch.Tensor:
        """Host token ids: trimmed (and padded to ``width``) on the fast path, 77 columns otherwise."""
        if not self.fast:
            return clip_tokenizer(trim=False)(prompts)
        ids = clip_tokenizer()(prompts)
        return torch.nn.functional.pad(ids, (0, max(0, (width or 0) - ids.shape[1])))

    def resize(self, real_batch: int, synth_batch: int, seed: int = 0) -> None:
        """New inputs (uint8 synthetic images with distinct ImageNet prompts, normalised real images, labels),
        and ``begin_task`` on them as the task's draw."""
        g = torch.Generator().manual_seed(seed)
        size = image_size(self.model)
        spec, base = catalog.get_task(self.task), catalog.get_task(catalog.IMAGENET)
        self.batch = (real_batch, synth_batch)
        prompts = [base.prompt(i) for i in range(synth_batch)]
        synth_u8 = torch.randint(0, 256, (synth_batch, 3, size, size), dtype=torch.uint8, generator=g)
        tokens = self.tokens(prompts, self.synth_width)
        self.ctx.synthetic = SyntheticBatchSource(synth_u8, tokens, prompts)  # on the host, as train.py keeps it
        self.synth_u8, self.synth_tokens = synth_u8.to(self.device), tokens.to(self.device)
        self.prompts, self.index = prompts, torch.arange(synth_batch, device=self.device)
        self.real = torch.randn(real_batch, 3, size, size, generator=g).to(self.device)
        self.labels = torch.randint(0, spec.num_classes, (real_batch,), generator=g).to(self.device)
        self.class_tokens = self.tokens([spec.prompt(c) for c in range(spec.num_classes)]).to(self.device)
        self.method.begin_task(self.ctx)

    def set_awc(self, on: bool) -> None:
        self.method.config = dataclasses.replace(self.method.config, awc=on)

    def released(self) -> ReleasedAwc:
        """The released code's AWC, sharing this step's teacher features (no second teacher)."""
        method = ReleasedAwc(dataclasses.replace(self.config, awc=True))
        method.teacher_features = self.method.teacher_features
        method.prompt_ids = self.method.prompt_ids
        return method

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def __call__(self, method: Gift | None = None) -> dict[str, float]:
        method = method or self.method
        ctx, phases = self.ctx, {}
        clock = [time.perf_counter()]

        def mark(name: str) -> None:  # the step's end always waits for the GPU
            if self.device.type == "cuda" and (self.sync_phases or name == "optimizer"):
                torch.cuda.synchronize()
            now = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now - clock[0]
            clock[0] = now

        batch = SynthBatch(normalize_uint8(self.synth_u8), self.synth_tokens, self.prompts, index=self.index)
        real = SynthBatch(self.real, None, [], self.labels)
        run_step(ctx, method, batch, real, self.class_tokens, self.optimizer, self._autocast(), mark=mark,
                 update=self.update)
        phases["step"] = sum(phases.values())
        return phases


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


def hook_times(step: GiftStep, method: Gift, repeats: int) -> tuple[list[float], int]:
    """AWC alone, on the gradients the last step left: ``after_replay_backward`` + ``adjust_gradients``,
    ``repeats`` times (seconds each), and the FLOPs FlopCounterMode counts in one more call."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        method.after_replay_backward(step.ctx)
        method.adjust_gradients(step.ctx)
        out.append(time.perf_counter() - t0)
    counter = FlopCounterMode(display=False)
    with counter:
        method.after_replay_backward(step.ctx)
        method.adjust_gradients(step.ctx)
    return out, counter.get_total_flops()


def bench_cpu(arch: str = "ViT-B-16", real_batch: int = 8, synth_batch: int = 8, task: str = "eurosat",
              pairs: int = 1, hook_repeats: int = 4, bf16_steps: int = 1, goal_batch: tuple[int, int] = (64, 64),
              goal_steps: int = 2) -> dict:
    """AWC overhead, the released AWC and fp32 vs bf16 on this CPU; minima (the machine is shared).

    Whole steps are few (each is seconds to a minute on a CPU); AWC itself is also timed alone on the real
    parameters, ``hook_repeats`` times, since its cost does not depend on the batch. The untimed warm-up steps
    (optimizer state, allocator, kernels) are the ones whose FLOPs are counted.
    """
    cpu = torch.device("cpu")
    step = GiftStep(load_clip(ClipSpec(arch, "none"), cpu), device=cpu, real_batch=real_batch,
                    synth_batch=synth_batch, task=task)
    log = lambda what: print(f"[bench] train: {what}", flush=True)  # noqa: E731
    log(f"{arch}, {real_batch} + {synth_batch}: warm-up steps, AWC on and off, the step before issue 11 "
        "(FLOPs counted)")
    # The step before issue 11 (teacher forward every step, ids at 77 columns) on the same model.
    before = GiftStep(step.model, device=cpu, real_batch=real_batch, synth_batch=synth_batch, task=task, fast=False)
    # Counts compare only within one device and dtype (attention kernels, hence counts, differ across them).
    flops = {"on": count_flops(step), "before": count_flops(before)}
    step.set_awc(False)
    flops["off"] = count_flops(step)
    on, off, old = [], [], []
    for i in range(pairs):  # interleaved, so slow phases of a shared machine hit all three
        log(f"AWC on/off steps and the step before issue 11, round {i + 1} of {pairs}")
        step.set_awc(True)
        on.append(step())
        step.set_awc(False)
        off.append(step())
        old.append(before())
    del before
    log("AWC alone: ours, then the released code's")
    step.set_awc(True)
    ours, flops["ours_alone"] = hook_times(step, step.method, hook_repeats)
    released, flops["released_alone"] = hook_times(step, step.released(), hook_repeats)
    log("bf16 autocast: warm-up step, then timed")
    step.amp = torch.bfloat16
    step()
    bf16 = [step() for _ in range(bf16_steps)]
    log(f"fp32, AWC on, at the goal's batch {goal_batch[0]} + {goal_batch[1]}: {goal_steps} step(s)")
    step.amp = None
    step.resize(*goal_batch, seed=1)
    goal = [step() for _ in range(goal_steps)]
    best = lambda runs, key: min(r[key] for r in runs)  # noqa: E731
    awc = min([*ours, *(r["awc"] for r in on + goal)])
    return {
        "arch": arch, "batch": f"{real_batch} real + {synth_batch} synthetic", "task": task,
        "classes": catalog.get_task(task).num_classes, "params": sum(p.numel() for p in step.ctx.params),
        "tensors": len(step.ctx.params), "threads": torch.get_num_threads(), "pairs": pairs,
        "hook_repeats": hook_repeats, "step_on": best(on, "step"), "step_off": best(off, "step"), "awc_on": awc,
        "replay": best(on, "replay"), "ce": best(on, "ce"), "optimizer": best(on, "optimizer"),
        "released_awc": min(released), "bf16_step": best(bf16, "step"), "flops": flops,
        "step_before": best(old, "step"), "replay_before": best(old, "replay"), "ce_before": best(old, "ce"),
        "goal_batch": f"{goal_batch[0]} + {goal_batch[1]}", "goal_steps": goal_steps, "goal_step": best(goal, "step"),
    }


def bench_zscl(arch: str = "ViT-B-16", real_batch: int = 8, ref_batch: int = 8, captions: int = 16384,
               task: str = "eurosat", steps: int = 1) -> dict:
    """One ZSCL step on this CPU against ``captions`` cached caption features (random unit vectors: values do not
    change the time): teacher + student forward of the reference images, logits B × N on rows and columns, CE,
    l2, AdamW; then the loss alone at 64 × N; and the FLOPs the reference spends re-encoding all N captions at
    every step (at 77 columns, counted on the meta device), which here happens once per run."""
    from pipeline.methods.base import frozen_copy
    from pipeline.methods.zscl import ZSCL, Ensemble

    cpu = torch.device("cpu")
    model = load_clip(ClipSpec(arch, "none"), cpu)
    size = image_size(model)
    g = torch.Generator().manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    config = TrainConfig(method="zscl", synthetic_batch=ref_batch, batch_size=real_batch)
    ctx = TaskContext(0, task, model, {}, config, cpu, params, [p.detach().clone() for p in params])
    method = ZSCL(config)  # begin_task's parts without reference files: the teacher, the caption matrix, ensemble
    method.teacher = frozen_copy(model)
    method.texts = torch.nn.functional.normalize(torch.randn(captions, model.visual.output_dim, generator=g), dim=-1)
    method.ensemble = Ensemble(params)
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    spec = catalog.get_task(task)
    class_tokens = clip_tokenizer()([spec.prompt(c) for c in range(spec.num_classes)])
    ref = SynthBatch(torch.randn(ref_batch, 3, size, size, generator=g), None, [])
    real = SynthBatch(torch.randn(real_batch, 3, size, size, generator=g), None, [],
                      torch.randint(0, spec.num_classes, (real_batch,), generator=g))

    def one() -> dict[str, float]:
        phases, clock = {}, [time.perf_counter()]

        def mark(name: str) -> None:
            now = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now - clock[0]
            clock[0] = now

        run_step(ctx, method, ref, real, class_tokens, optimizer, contextlib.nullcontext(), mark=mark)
        phases["step"] = sum(phases.values())
        return phases

    one()  # warm-up: optimizer state, allocator
    runs = [one() for _ in range(steps)]
    s_img = torch.nn.functional.normalize(torch.randn(64, method.texts.shape[1], generator=g), dim=-1)
    t_img = torch.nn.functional.normalize(torch.randn(64, method.texts.shape[1], generator=g), dim=-1)
    def loss_alone() -> None:
        leaf = s_img.clone().requires_grad_()
        contrastive_distillation(leaf, method.texts, t_img, method.texts).backward()

    loss_alone()
    loss_s = min(times(loss_alone, 3, 0))
    _, text_f = eval_flops(arch)
    return {"arch": arch, "batch": f"{real_batch} + {ref_batch}", "captions": captions,
            "step": min(r["step"] for r in runs), "replay": min(r["replay"] for r in runs), "loss_64": loss_s,
            "reencode_flops": captions * text_f}


GPU_CONFIGS = (  # label, precision (fp32 | tf32 | bf16), fused AdamW, torch.compile, AWC
    ("fp32, foreach AdamW (unoptimised)", "fp32", False, False, True),
    ("fp32, fused AdamW (default)", "fp32", True, False, True),
    ("fp32, fused AdamW, AWC off", "fp32", True, False, False),
    ("fp32 + TF32 matmuls (opt-in: changes numerics)", "tf32", True, False, True),
    ("bf16 autocast, fused AdamW (`--precision bf16`)", "bf16", True, False, True),
    ("bf16 autocast, fused AdamW, AWC off", "bf16", True, False, False),
    ("bf16 autocast, fused AdamW, `--compile` (student forward)", "bf16", True, True, True),
)


def bench_gpu(device: str = "cuda", arch: str = "ViT-B-16", real_batch: int = 64, synth_batch: int = 64,
              task: str = "aircraft", steps: int = 20, warmup: int = 3, configs=GPU_CONFIGS,
              eval_batch: int = 256) -> dict:
    """Steps/s of every config (fresh random model each), then evaluation images/s (fp32 and bf16)."""
    dev = torch.device(device)
    rows = []
    for label, precision, fused, compiled, awc in configs:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        try:
            step = GiftStep(load_clip(ClipSpec(arch, "none"), dev), device=dev, real_batch=real_batch,
                            synth_batch=synth_batch, task=task, awc=awc, fused=fused)
            step.amp = torch.bfloat16 if precision == "bf16" else None
            if compiled:  # as `gift train --compile` does: the student's forward, not the teacher's
                step.ctx.forward = functools.partial(student_features, torch.compile(ClipFeatures(step.model)))
            rows.append({"config": label, "steps_s": steps / sum(times(step, steps, warmup))})
        except Exception as e:  # a config that fails (compile on an old stack) is a row, not a crash
            rows.append({"config": label, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"})
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
            step = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    model = load_clip(ClipSpec(arch, "none"), dev).eval()
    size = image_size(model)
    images = torch.randint(0, 256, (eval_batch, 3, size, size), dtype=torch.uint8, device=dev)
    evals = []
    for label, amp in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        def forward(amp=amp):
            with torch.no_grad(), torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                encode_images(model, normalize_uint8(images))
            if dev.type == "cuda":
                torch.cuda.synchronize()
        evals.append({"config": label, "images_s": eval_batch * steps / sum(times(forward, steps, warmup))})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    return {"device": name, "rows": rows, "eval": evals, "task": task, "batch": f"{real_batch} + {synth_batch}",
            "arch": arch, "eval_batch": eval_batch}


def gpu_lines(gpu: dict | None, limit_flops: int, image_flops: int) -> tuple[list[str], dict]:
    """The GPU table: measured rows, or one row saying no GPU was here."""
    head = ["| config | steps/s | % of limit | vs unoptimised |", "|---|---:|---:|---:|"]
    if gpu is None:
        return [*head, f"| fp32, fused AdamW, TF32, bf16 autocast, `--compile`, AWC on/off | {NOT_ON_GPU} (this run had no GPU) | | |"], {}
    peak = peak_tflops(gpu["device"])
    limit = peak * 1e12 / limit_flops if peak else None
    base = next((r["steps_s"] for r in gpu["rows"] if "steps_s" in r), None)
    lines = list(head)
    for r in gpu["rows"]:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error']} | | |")
            continue
        share = f"{100 * r['steps_s'] / limit:.1f}%" if limit else "unknown peak"
        lines.append(f"| {r['config']} | {r['steps_s']:.2f} | {share} | {r['steps_s'] / base:.2f}x |")
    lines += ["", f"Evaluation forward ({gpu['device']}, {gpu['arch']}, batch {gpu['eval_batch']}):", "",
              "| precision | images/s | % of limit |", "|---|---:|---:|"]
    for r in gpu["eval"]:
        share = f"{100 * r['images_s'] * image_flops / (peak * 1e12):.1f}%" if peak else "unknown peak"
        lines.append(f"| {r['config']} | {r['images_s']:.0f} | {share} |")
    ok = [r for r in gpu["rows"] if "steps_s" in r]
    facts = {}
    if ok:
        best = max(ok, key=lambda r: r["steps_s"])
        facts["gpu_best"] = f"{best['steps_s']:.1f} steps/s ({best['config']}, {gpu['device']})"
        by = {r["config"]: r["steps_s"] for r in ok}
        on, off = by.get("bf16 autocast, fused AdamW (`--precision bf16`)"), by.get("bf16 autocast, fused AdamW, AWC off")
        if on and off:
            facts["gpu_awc"] = f"{100 * (off / on - 1):.1f}% of the bf16 step (on vs off)"
    return lines, facts


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


def run(quick: bool = False) -> tuple[str, dict]:
    """The section's markdown and the facts the summary needs."""
    if quick:  # every code path at toy sizes
        cpu = bench_cpu("tiny", 2, 2, "eurosat", pairs=1, goal_batch=(3, 3), goal_steps=1)
        zscl = bench_zscl("tiny", 2, 2, captions=16)
        steps = {t: {"before": step_flops(t, 2, 2, "tiny", fast=False), "after": step_flops(t, 2, 2, "tiny")}
                 for t in ("cifar100", "sun397")}
        image_f, _ = eval_flops("tiny")
        before, after = head_flops(["eurosat"], "tiny")
        limits = {"step_flops": steps, "cache_flops": cache_flops("tiny", 8), "heads": {"before": before, "after": after},
                  "image_flops": image_f, "test_images": 2, "images": 0,
                  "seconds": {"generate": 0.0, "train": 0.0, "evaluate": 0.0},
                  "seconds_before": {"generate": 0.0, "train": 0.0, "evaluate": 0.0}}
        batch = "2 + 2"
    else:
        cpu = bench_cpu()
        zscl = bench_zscl()
        limits = order_limits("I")
        image_f = limits["image_flops"]
        batch = "64 + 64"
    steps = limits["step_flops"]
    gpu = bench_gpu() if torch.cuda.is_available() else None
    aircraft = steps.get("aircraft", steps.get("cifar100"))["after"]
    lines, gpu_facts = gpu_lines(gpu, aircraft, image_f)
    flop_lines, flop_facts = flop_table(limits, ("cifar100", "sun397"), batch)

    awc_share = cpu["awc_on"] / cpu["step_on"]
    goal_share = cpu["awc_on"] / cpu["goal_step"]
    diff = cpu["step_on"] / cpu["step_off"] - 1
    f = cpu["flops"]
    extra = f["on"] - f["off"]
    total_h = sum(limits["seconds"].values()) / 3600
    before_h = sum(limits["seconds_before"].values()) / 3600
    md = [
        "## Training step (`make bench`)",
        "",
        f"### GIFT step on CPU: {cpu['arch']} architecture, random weights, fp32",
        "",
        f"{cpu['batch']} images, class texts of {cpu['task']} ({cpu['classes']} classes) re-encoded every step as in "
        f"training, the teacher's features from the task's cache, AdamW; {cpu['params'] / 1e6:.1f}M trained "
        f"parameters in {cpu['tensors']} tensors; "
        f"{cpu['threads']} threads. This machine is shared, so every figure is the minimum of its samples (the least "
        f"disturbed): {cpu['pairs']} interleaved round(s) of AWC-on / AWC-off / pre-issue-11 steps, and AWC timed alone "
        f"on the real parameters {cpu['hook_repeats']} times. Most rows use a batch cut from 64 + 64 to keep the CPU "
        f"run short; the step scales with the batch, AWC does not (a few passes over the parameters), so the last row "
        f"measures the step at {cpu['goal_batch']} ({cpu['goal_steps']} step(s), fp32, AWC on) for AWC's share there.",
        "",
        "| measurement | time | ratio |",
        "|---|---:|---:|",
        f"| step, AWC on (GIFT default) | {seconds(cpu['step_on'])} | 1.00 |",
        f"| step, AWC off (CE + CD + ITA) | {seconds(cpu['step_off'])} | {cpu['step_off'] / cpu['step_on']:.2f} |",
        f"| …synthetic forward/backward (teacher features: cached rows) | {seconds(cpu['replay'])} | "
        f"{cpu['replay'] / cpu['step_on']:.2f} |",
        f"| …real forward/backward + class texts | {seconds(cpu['ce'])} | {cpu['ce'] / cpu['step_on']:.2f} |",
        f"| …AdamW (foreach on CPU) | {seconds(cpu['optimizer'])} | {cpu['optimizer'] / cpu['step_on']:.2f} |",
        f"| **AWC** (copy of the replay gradients + Fisher scales + fused penalty gradient) | "
        f"{seconds(cpu['awc_on'])} | **{awc_share:.1%}** of the step (goal ≤ 3%) |",
        f"| AWC on minus off, whole step (noisier: two single steps) | {seconds(cpu['step_on'] - cpu['step_off'])} | "
        f"{diff:+.1%} |",
        f"| released code's AWC (per-parameter Python loop + autograd penalty backward) | "
        f"{seconds(cpu['released_awc'])} | {cpu['released_awc'] / cpu['awc_on']:.2f}x our time |",
        f"| step before issue 11 (teacher forward every step, texts at 77 columns), AWC on | "
        f"{seconds(cpu['step_before'])} | {cpu['step_before'] / cpu['step_on']:.2f}x our time |",
        f"| …its teacher + synthetic forward/backward | {seconds(cpu['replay_before'])} | "
        f"{cpu['replay_before'] / cpu['replay']:.2f}x ours |",
        f"| …its real forward/backward + class texts at 77 columns | {seconds(cpu['ce_before'])} | "
        f"{cpu['ce_before'] / cpu['ce']:.2f}x ours |",
        f"| step, bf16 autocast (this CPU: {torch.backends.cpu.get_cpu_capability()}) | {seconds(cpu['bf16_step'])} | "
        f"{cpu['bf16_step'] / cpu['step_on']:.2f} |",
        f"| step at {cpu['goal_batch']}, AWC on | {seconds(cpu['goal_step'])} | "
        f"{cpu['goal_step'] / cpu['step_on']:.2f}; **AWC {goal_share:.1%}** of it (goal ≤ 3%) |",
        "",
        f"FLOPs counted by `FlopCounterMode` (matmuls, convolutions, attention) per step: AWC off "
        f"{f['off'] / 1e9:.1f} GFLOP, AWC on {f['on'] / 1e9:.1f} GFLOP (**{extra:+d}**); AWC alone: ours "
        f"{f['ours_alone']}, the released code's {f['released_alone']}. AWC costs memory traffic over the "
        f"parameters, no matmul. The step before issue 11 at this batch: {f['before'] / 1e9:.1f} GFLOP "
        f"({f['before'] / f['on']:.2f}x).",
        "",
        f"### FLOPs before and after issue 11 ({cpu['arch']}, counted on the meta device)",
        "",
        "Before: the teacher encodes every step's 64 synthetic images and prompts, and every text forward (CE class "
        "prompts, synthetic prompts, zero-shot heads) runs all 77 token columns. After (the default path): the "
        "teacher's features of the task's draw and of its distinct prompts are computed once per task and looked up, "
        "and every text batch is trimmed after its longest end-of-text token (the synthetic ids as wide as the widest "
        "prompt of any task, 28 columns; results unchanged: tested to 1e-5 / 1e-6).",
        "",
        *flop_lines,
        "",
        "### Limits from counted FLOPs (64 real + 64 synthetic)",
        "",
        f"Computed, not measured: FLOPs of one step (`FlopCounterMode` on the meta device) ÷ the H100's dense bf16 "
        f"peak ({H100_PEAK} TFLOP/s). The goal of 15 steps/s is a share of this limit.",
        "",
        "| task | classes | TFLOP per step before | TFLOP per step now | limit now (steps/s) | goal as % of limit |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {t} | {catalog.get_task(t).num_classes} | {v['before'] / 1e12:.2f} | {v['after'] / 1e12:.2f} | "
          f"{H100_PEAK * 1e12 / v['after']:.1f} | {100 * GPU_STEP_GOAL * v['after'] / (H100_PEAK * 1e12):.0f}% |"
          for t, v in steps.items()],
    ]
    if not quick:
        s, sb = limits["seconds"], limits["seconds_before"]
        md += [
            "",
            f"One MTIL order (I) at 100% of that peak: render its pool ({limits['images']:,} SD v1.5 images) "
            f"{s['generate'] / 3600:.2f} h + 11 × 1,000 steps {s['train'] / 3600:.3f} h (before issue 11: "
            f"{sb['train'] / 3600:.3f} h) + 11 evaluations of {limits['test_images']:,} test images "
            f"{s['evaluate'] / 3600:.4f} h (before: {sb['evaluate'] / 3600:.4f} h) = **{total_h:.2f} GPU-hours** "
            f"(before: {before_h:.2f}; the goal, 1.5 GPU-hours, is {100 * total_h / 1.5:.0f}% of peak on average).",
        ]
    md += [
        "",
        f"### ZSCL step against all reference captions (CPU, {zscl['arch']}, random weights, fp32)",
        "",
        f"{zscl['batch']} real + reference images; the initial CLIP's features of N = {zscl['captions']:,} captions "
        "are computed once per run (and kept in the run directory), so a step multiplies by a cached N × D matrix; "
        "logits B × N on rows and columns, T = 2.",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| ZSCL step, {zscl['batch']}, N = {zscl['captions']:,} | {seconds(zscl['step'])} |",
        f"| …teacher + student forward/backward of the reference images, logits B × N | {seconds(zscl['replay'])} |",
        f"| the loss alone at 64 × N (forward + backward) | {seconds(zscl['loss_64'])} |",
        f"| re-encoding all N captions at 77 columns, as the reference does at every step (counted; here once per run) "
        f"| {zscl['reencode_flops'] / 1e12:.1f} TFLOP per step |",
        "",
        "### GIFT step on a GPU: ViT-B/16, 64 + 64, class texts of aircraft (100 classes), random weights",
        "",
        *lines,
        "",
        "End to end, one MTIL order on a GPU (render + train + evaluate): " + NOT_ON_GPU + ".",
    ]
    facts = {"cpu_step_s": cpu["step_on"], "cpu_batch": cpu["batch"].replace(" real", "").replace(" synthetic", ""), "awc_share": awc_share,
             "awc_s": cpu["awc_on"], "goal_batch": cpu["goal_batch"], "goal_share": goal_share, "awc_extra_flops": extra,
             **flop_facts, "cpu_speedup": cpu["step_before"] / cpu["step_on"], **gpu_facts}
    if not quick:
        facts["order_limit_h"] = total_h
        facts["order_limit_before_h"] = before_h
    return "\n".join(md), facts
