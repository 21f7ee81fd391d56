"""The GIFT step the benchmarks time and count: the real training step (``run_step``) on a model with random weights,
with AWC on or off, the released code's AWC as the unoptimised path, and the step as it was before issue 11 (the
teacher forward every step, texts at 77 columns).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.datasets import catalog
from pipeline.losses import UNREACHED_FISHER
from pipeline.methods import SynthBatch, TaskContext
from pipeline.methods.frozen import prompt_index
from pipeline.methods.gift import Gift
from pipeline.models import encode_images, encode_texts, image_size, normalize_uint8
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.replay.synthetic import SyntheticBatchSource
from pipeline.training.config import TrainConfig
from pipeline.training.step import run_step


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


