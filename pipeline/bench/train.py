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
from pipeline.methods.gift import Gift
from pipeline.models import ClipSpec, encode_images, encode_texts, image_size, load_clip, normalize_uint8
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.training.config import TrainConfig
from pipeline.training.step import run_step

from .common import NOT_ON_GPU, seconds, times
from .generate import PEAK_BF16_TFLOPS, SD15_TFLOP_PER_IMAGE, peak_tflops

H100_PEAK = PEAK_BF16_TFLOPS["H100"]  # the reference GPU of the goals (dense bf16, TFLOP/s)
GPU_STEP_GOAL = 15.0  # steps/s per H100-class GPU (issue 6)


class ReleasedAwc(Gift):
    """AWC as the released code computes it (the unoptimised path): a Python loop over the parameters builds
    F = g²/mean(g²) one tensor at a time, and the penalty λ·Σ F·(θ−θ₀)² is an autograd graph whose backward
    adds its gradient (the released code back-propagates it together with CE). Same gradient as ``Gift``."""

    def after_replay_backward(self, ctx: TaskContext) -> None:
        self.fisher = []
        for p in ctx.params:
            f = p.grad.detach().clone() ** 2 if p.grad is not None else torch.zeros_like(p)
            if self.config.fisher_norm:
                f /= f.mean()
            self.fisher.append(f)

    def adjust_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        penalty = self.config.lam * sum((f * (p - a) ** 2).sum() for f, p, a in zip(self.fisher, ctx.params, ctx.anchors, strict=True))
        penalty.backward()
        self.fisher = []
        return {"awc": penalty.detach()}


class GiftStep:
    """One step of ``train._train_task`` on fixed in-memory batches (data loading is benchmarked apart).

    The very step train.py runs (``train.run_step``): replay terms (teacher forward + student CD/ITA) →
    backward → ``after_replay_backward`` → CE on the real batch (class texts re-encoded) → backward →
    ``adjust_gradients`` → finiteness check → AdamW step. ``method`` can be swapped between
    calls (AWC on/off, the released AWC) and ``amp`` set to ``torch.bfloat16``; both keep the same teacher,
    anchors and optimizer. Calling returns seconds per phase (each phase synchronised when ``sync_phases``).
    """

    def __init__(self, model: torch.nn.Module, *, device: torch.device, real_batch: int, synth_batch: int,
                 task: str, awc: bool = True, fused: bool | None = None, update: bool = True, seed: int = 0):
        self.model, self.device, self.task, self.update = model, torch.device(device), task, update
        self.config = TrainConfig(awc=awc, seed=seed)
        params = [p for p in model.parameters() if p.requires_grad]
        # initial_state is only read for the `initial` / `wise:x` teachers; the default teacher is θ(t−1).
        self.ctx = TaskContext(0, task, model, {}, self.config, self.device, params, [p.detach().clone() for p in params])
        self.method: Gift = Gift(self.config)
        self.method.begin_task(self.ctx)
        self.amp: torch.dtype | None = None
        self.sync_phases = self.device.type != "cuda"
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0,
                                           fused=self.device.type == "cuda" if fused is None else fused)
        self.resize(real_batch, synth_batch, seed)

    def resize(self, real_batch: int, synth_batch: int, seed: int = 0) -> None:
        """New inputs: uint8 synthetic images with distinct ImageNet prompts, normalised real images, labels."""
        g = torch.Generator().manual_seed(seed)
        size = image_size(self.model)
        tokenize = clip_tokenizer()
        spec, base = catalog.get_task(self.task), catalog.get_task(catalog.IMAGENET)
        self.batch = (real_batch, synth_batch)
        self.synth_u8 = torch.randint(0, 256, (synth_batch, 3, size, size), dtype=torch.uint8, generator=g).to(self.device)
        self.prompts = [base.prompt(i) for i in range(synth_batch)]
        self.synth_tokens = tokenize(self.prompts).to(self.device)
        self.real = torch.randn(real_batch, 3, size, size, generator=g).to(self.device)
        self.labels = torch.randint(0, spec.num_classes, (real_batch,), generator=g).to(self.device)
        self.class_tokens = tokenize([spec.prompt(c) for c in range(spec.num_classes)]).to(self.device)

    def set_awc(self, on: bool) -> None:
        self.method.config = dataclasses.replace(self.method.config, awc=on)

    def released(self) -> ReleasedAwc:
        """The released code's AWC, sharing this step's teacher (no second copy of the model)."""
        method = ReleasedAwc(dataclasses.replace(self.config, awc=True))
        method.teacher = self.method.teacher
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

        batch = SynthBatch(normalize_uint8(self.synth_u8), self.synth_tokens, self.prompts)
        real = SynthBatch(self.real, None, [], self.labels)
        run_step(ctx, method, batch, real, self.class_tokens, self.optimizer, self._autocast(), mark=mark,
                 update=self.update)
        phases["step"] = sum(phases.values())
        return phases


def count_flops(step: GiftStep, method: Gift | None = None) -> int:
    """FLOPs of one step as FlopCounterMode counts them (matmuls, convolutions, attention: elementwise ops,
    AWC's included, count zero)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(method)
    return counter.get_total_flops()


def step_flops(task: str, real_batch: int = 64, synth_batch: int = 64, arch: str = "ViT-B-16") -> int:
    """FLOPs of the full step on the meta device (shapes only, nothing computed), AWC off: it adds none."""
    model = load_clip(ClipSpec(arch, "none"), "meta")
    step = GiftStep(model, device=torch.device("meta"), real_batch=real_batch, synth_batch=synth_batch, task=task,
                    awc=False, fused=False, update=False)
    return count_flops(step)


def eval_flops(arch: str = "ViT-B-16") -> tuple[int, int]:
    """(FLOPs of one image forward, FLOPs of one prompt forward) on the meta device."""
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


def order_limits(order: str = "I", arch: str = "ViT-B-16", peak: float = H100_PEAK) -> dict:
    """Seconds one MTIL order needs at 100% of ``peak`` (TFLOP/s): rendering its pool, 1,000 steps per task,
    and 11 evaluations of every test split. Computed from counted FLOPs: a floor, not a measurement."""
    from pipeline.datasets import mtil

    tasks = catalog.get_order(order)
    pool = [catalog.IMAGENET, *tasks[:-1]]
    images = sum(catalog.default_per_class(t) * catalog.get_task(t).num_classes for t in pool)
    by_classes: dict[int, int] = {}
    for t in tasks:
        c = catalog.get_task(t).num_classes
        if c not in by_classes:
            by_classes[c] = step_flops(t)
    train = sum(1000 * by_classes[catalog.get_task(t).num_classes] for t in tasks)
    image_f, text_f = eval_flops(arch)
    test_images = sum(mtil._source(t).official[1] for t in tasks)  # official test split sizes
    prompts = sum(len(catalog.get_task(t).classnames) * len(catalog.get_task(t).templates) for t in tasks)
    evaluation = len(tasks) * (test_images * image_f + prompts * text_f)
    per = {"generate": images * SD15_TFLOP_PER_IMAGE * 1e12, "train": train, "evaluate": evaluation}
    return {"images": images, "test_images": test_images, "step_flops": by_classes,
            "seconds": {k: v / (peak * 1e12) for k, v in per.items()}, "flops": per}


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
    log(f"{arch}, {real_batch} + {synth_batch}: warm-up steps, AWC on and off (FLOPs counted)")
    # Counts compare only within one device and dtype (attention kernels, hence counts, differ across them).
    flops = {"on": count_flops(step)}
    step.set_awc(False)
    flops["off"] = count_flops(step)
    on, off = [], []
    for i in range(pairs):  # interleaved, so slow phases of a shared machine hit both
        log(f"AWC on/off steps, pair {i + 1} of {pairs}")
        step.set_awc(True)
        on.append(step())
        step.set_awc(False)
        off.append(step())
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
        "goal_batch": f"{goal_batch[0]} + {goal_batch[1]}", "goal_steps": goal_steps, "goal_step": best(goal, "step"),
    }


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
                step.ctx.forward = functools.partial(student_features, torch.compile(step.model))
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


def run(quick: bool = False) -> tuple[str, dict]:
    """The section's markdown and the facts the summary needs."""
    if quick:
        cpu = bench_cpu("tiny", 2, 2, "eurosat", pairs=1, goal_batch=(3, 3), goal_steps=1)
        limits = {"step_flops": {}, "seconds": {"generate": 0.0, "train": 0.0, "evaluate": 0.0}, "images": 0,
                  "test_images": 0, "flops": {}}
        full = {c: step_flops("eurosat", 2, 2, "tiny") for c in (10,)}
        image_f, _ = eval_flops("tiny")
    else:
        cpu = bench_cpu()
        limits = order_limits("I")
        full = limits["step_flops"]
        image_f, _ = eval_flops()
    gpu = bench_gpu() if torch.cuda.is_available() else None
    aircraft = full.get(100) or next(iter(full.values()))
    lines, gpu_facts = gpu_lines(gpu, aircraft, image_f)

    awc_share = cpu["awc_on"] / cpu["step_on"]
    goal_share = cpu["awc_on"] / cpu["goal_step"]
    diff = cpu["step_on"] / cpu["step_off"] - 1
    f = cpu["flops"]
    extra = f["on"] - f["off"]
    total_h = sum(limits["seconds"].values()) / 3600
    md = [
        "## Training step (`make bench`)",
        "",
        f"### GIFT step on CPU: {cpu['arch']} architecture, random weights, fp32",
        "",
        f"{cpu['batch']} images, class texts of {cpu['task']} ({cpu['classes']} classes) re-encoded every step as in "
        f"training, teacher forward, AdamW; {cpu['params'] / 1e6:.1f}M trained parameters in {cpu['tensors']} tensors; "
        f"{cpu['threads']} threads. This machine is shared, so every figure is the minimum of its samples (the least "
        f"disturbed): {cpu['pairs']} interleaved AWC-on/off step pair(s), and AWC timed alone on the real parameters "
        f"{cpu['hook_repeats']} times. Most rows use a batch cut from 64 + 64 to keep the CPU run short; the "
        f"step scales with the batch, AWC does not (a few passes over the parameters), so the last row measures "
        f"the step at {cpu['goal_batch']} ({cpu['goal_steps']} step(s), fp32, AWC on) for AWC's share there.",
        "",
        "| measurement | time | ratio |",
        "|---|---:|---:|",
        f"| step, AWC on (GIFT default) | {seconds(cpu['step_on'])} | 1.00 |",
        f"| step, AWC off (CE + CD + ITA) | {seconds(cpu['step_off'])} | {cpu['step_off'] / cpu['step_on']:.2f} |",
        f"| …teacher + synthetic forward/backward | {seconds(cpu['replay'])} | {cpu['replay'] / cpu['step_on']:.2f} |",
        f"| …real forward/backward + class texts | {seconds(cpu['ce'])} | {cpu['ce'] / cpu['step_on']:.2f} |",
        f"| …AdamW (foreach on CPU) | {seconds(cpu['optimizer'])} | {cpu['optimizer'] / cpu['step_on']:.2f} |",
        f"| **AWC** (copy of the replay gradients + Fisher scales + fused penalty gradient) | "
        f"{seconds(cpu['awc_on'])} | **{awc_share:.1%}** of the step (goal ≤ 3%) |",
        f"| AWC on minus off, whole step (noisier: two single steps) | {seconds(cpu['step_on'] - cpu['step_off'])} | "
        f"{diff:+.1%} |",
        f"| released code's AWC (per-parameter Python loop + autograd penalty backward) | "
        f"{seconds(cpu['released_awc'])} | {cpu['released_awc'] / cpu['awc_on']:.2f}x our time |",
        f"| step, bf16 autocast (this CPU: {torch.backends.cpu.get_cpu_capability()}) | {seconds(cpu['bf16_step'])} | "
        f"{cpu['bf16_step'] / cpu['step_on']:.2f} |",
        f"| step at {cpu['goal_batch']}, AWC on | {seconds(cpu['goal_step'])} | "
        f"{cpu['goal_step'] / cpu['step_on']:.2f}; **AWC {goal_share:.1%}** of it (goal ≤ 3%) |",
        "",
        f"FLOPs counted by `FlopCounterMode` (matmuls, convolutions, attention) per step: AWC off "
        f"{f['off'] / 1e9:.1f} GFLOP, AWC on {f['on'] / 1e9:.1f} GFLOP (**{extra:+d}**); AWC alone: ours "
        f"{f['ours_alone']}, the released code's {f['released_alone']}. AWC costs memory traffic over the "
        "parameters, no matmul.",
        "",
        "### Limits from counted FLOPs (64 real + 64 synthetic)",
        "",
        f"Computed, not measured: FLOPs of one step (`FlopCounterMode` on the meta device) ÷ the H100's dense bf16 "
        f"peak ({H100_PEAK} TFLOP/s). The goal of 15 steps/s is a share of this limit.",
        "",
        "| classes in the task | TFLOP per step | limit (steps/s) | goal as % of limit |",
        "|---:|---:|---:|---:|",
        *[f"| {c} | {v / 1e12:.2f} | {H100_PEAK * 1e12 / v:.1f} | {100 * GPU_STEP_GOAL * v / (H100_PEAK * 1e12):.0f}% |"
          for c, v in sorted(full.items())],
    ]
    if not quick:
        s = limits["seconds"]
        md += [
            "",
            f"One MTIL order (I) at 100% of that peak: render its pool ({limits['images']:,} SD v1.5 images) "
            f"{s['generate'] / 3600:.2f} h + 11 × 1,000 steps {s['train'] / 3600:.2f} h + 11 evaluations of "
            f"{limits['test_images']:,} test images {s['evaluate'] / 3600:.3f} h = **{total_h:.2f} GPU-hours** "
            f"(the goal, 1.5 GPU-hours, is {100 * total_h / 1.5:.0f}% of peak on average).",
        ]
    md += [
        "",
        "### GIFT step on a GPU: ViT-B/16, 64 + 64, class texts of aircraft (100 classes), random weights",
        "",
        *lines,
        "",
        "End to end, one MTIL order on a GPU (render + train + evaluate): " + NOT_ON_GPU + ".",
    ]
    facts = {"cpu_step_s": cpu["step_on"], "cpu_batch": cpu["batch"].replace(" real", "").replace(" synthetic", ""), "awc_share": awc_share,
             "awc_s": cpu["awc_on"], "goal_batch": cpu["goal_batch"], "goal_share": goal_share, "awc_extra_flops": extra, **gpu_facts}
    if not quick:
        facts["order_limit_h"] = total_h
    return "\n".join(md), facts
