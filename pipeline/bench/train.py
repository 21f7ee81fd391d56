"""`make bench`, training rows: the GIFT step on the real ViT-B/16 architecture with random weights.

CPU (always): the step (``step.GiftStep``) at a reduced batch with AWC on and off, the AWC hooks timed inside the
step, the released code's AWC (a Python loop over parameters for F, the penalty back-propagated through autograd) as
the unoptimised path, the step before issue 11, fp32 vs bf16 autocast on this CPU, and one ZSCL step against 16k
cached caption features. Counted FLOPs and the limits they put on a step and on one MTIL order come from
``flops.py``.

GPU (only with CUDA): steps/s at 64 + 64 for fp32, fused AdamW, TF32, bf16 autocast, `--compile`, AWC on
and off, each as a share of the limit; evaluation images/s. Without a GPU those rows say so.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

from pipeline.datasets import catalog
from pipeline.losses import contrastive_distillation
from pipeline.methods import SynthBatch, TaskContext
from pipeline.methods.base import student_features
from pipeline.models import ClipFeatures, ClipSpec, encode_images, image_size, load_clip, normalize_uint8
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.training.config import TrainConfig
from pipeline.training.step import run_step

from .common import NOT_ON_GPU, seconds, times
from .flops import H100_PEAK, cache_flops, count_flops, eval_flops, flop_table, head_flops, order_limits, step_flops
from .generate import peak_tflops
from .step import GiftStep, hook_times

GPU_STEP_GOAL = 15.0  # steps/s per H100-class GPU (issue 6)


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




def moe_lines(gift_step: int, arch: str, batch: int, eval_batch: int, image: int) -> list[str]:
    """MoE-Adapter against GIFT, counted: its training step (CE only; CLIP frozen) on aircraft, and what DDAS adds to
    each evaluation batch (AlexNet + 12 autoencoders) beside encoding that batch."""
    from pipeline.moe.block import MoeSpec
    from pipeline.moe.flops import ddas_flops, image_forward_flops, moe_step_flops

    spec = MoeSpec(22, 2, 11)
    step = moe_step_flops("aircraft", spec, batch, arch)
    forward = image_forward_flops(spec, eval_batch, arch)
    ddas = ddas_flops(eval_batch, 12, image)
    return [
        "",
        f"### MoE-Adapter (counted, {arch}, meta device): 22 experts, top-2, both towers",
        "",
        "| measurement | FLOPs | vs |",
        "|---|---:|---:|",
        f"| MoE-Adapter step, {batch} real images of aircraft (CE; CLIP frozen) | {step / 1e12:.2f} T | "
        f"{step / gift_step:.2f}× the GIFT step |",
        f"| encoding one evaluation batch of {eval_batch} images through a router | {forward / 1e12:.2f} T | |",
        f"| DDAS per evaluation batch (AlexNet features[:-2] + 12 autoencoders) | {ddas / 1e12:.3f} T | "
        f"+{100 * ddas / forward:.1f}% |",
    ]


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
        *(moe_lines(aircraft, "tiny", 2, 4, 32) if quick else moe_lines(aircraft, "ViT-B-16", 64, 128, 224)),
    ]
    facts = {"cpu_step_s": cpu["step_on"], "cpu_batch": cpu["batch"].replace(" real", "").replace(" synthetic", ""), "awc_share": awc_share,
             "awc_s": cpu["awc_on"], "goal_batch": cpu["goal_batch"], "goal_share": goal_share, "awc_extra_flops": extra,
             **flop_facts, "cpu_speedup": cpu["step_before"] / cpu["step_on"], **gpu_facts}
    if not quick:
        facts["order_limit_h"] = total_h
        facts["order_limit_before_h"] = before_h
    return "\n".join(md), facts

