"""CLTS's loop (``gift train --method clts``): task heads and a task router on frozen CLIP features, through the
training stage's run directory, resume, report, tracking and table machinery.

    before the run directory exists: the setting, its caption set (``--captions``) and the images rendered from it
        (``--shards``), the training split, CLIP, the test split -- every missing piece is an error naming its command
    features, once: the training split, the test split, the renders (cached, ``pipeline/clts/features.py``)
    per step k (seeded by (seed, k)):
        head k    <- AdamW on CE over the real training images of step k's classes (heads of earlier steps frozen)
        router    <- re-initialised, AdamW on CE over the renders of the captions of steps 0..k (label = step),
                     balanced per step (none after the first step: one head)
        evaluate  <- every seen class's test images, no task id: routed head's class -> the class-IL step-matrix row
                     and accuracy on all seen classes (``step_counts`` / ``step_result``), router and oracle accuracy
        checkpoint (heads + router) + state.json + report, by rename (``rundir.finish_task``)

Running the same command again continues after the last finished step with the same result as an uninterrupted run
(each step's RNG comes from (seed, step), the features are the cached ones).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from pipeline.captioning.caption import clip_label
from pipeline.clts import features as feats
from pipeline.clts.heads import CltsModel, balanced, cycled, fit, predict, predict_oracle
from pipeline.datasets import catalog
from pipeline.datasets.splits import dataset_split
from pipeline.evaluation.cil import StepResult, step_counts, step_result
from pipeline.models import ClipSpec, image_size, load_clip
from pipeline.replay.captioned import (
    CaptionRenders,
    check_rendered,
    find_caption_set,
    find_renders,
    write_captions_record,
)
from pipeline.replay.synthetic import write_replay_record

from .clts_report import CltsProtocol
from .config import TrainConfig, loader_workers
from .rundir import FILE_ONLY, finish_task, prepare_run_dir, run_log

log = logging.getLogger("gift.clts")
LOG_EVERY = 10  # metrics.jsonl rows: every 10 steps and each phase's last, as the fine-tuning loop


def _step_of(setting: catalog.CilSetting) -> torch.Tensor:
    """[C] long: the step of every original label."""
    out = torch.full((len(setting.classnames),), -1, dtype=torch.long)
    for j, labels in enumerate(setting.steps):
        out[list(labels)] = j
    return out


def _check_captions(renders: CaptionRenders, setting: catalog.CilSetting) -> None:
    """The caption set describes the training images (not another split) of every class of the setting."""
    spec = renders.captions.spec
    if spec.get("split", "train") != "train":
        raise ValueError(f"the caption set {renders.captions.path} captions the {spec['split']} split; CLTS keeps captions "
                         f"of training images only: make one with `gift caption {setting.caption_task}` (--split train)")
    missing = [setting.classnames[c] for c in setting.class_order if c not in renders.count_by_class()]
    if missing:
        raise ValueError(f"the caption set {renders.captions.path} has no captions of {len(missing)} classes of "
                         f"{setting.name} (e.g. {', '.join(missing[:5])}); caption the whole dataset with "
                         f"`gift caption {setting.caption_task}`")


def _features(config: TrainConfig, clip, size: int, train_split, test, renders: CaptionRenders,
              setting: catalog.CilSetting, device: torch.device, progress) -> dict[str, feats.Features]:
    """The three feature sets of a run, each from the cache or computed once (and cached)."""
    root = str(Path(config.data_root).resolve()) if config.data_root else None
    common = {"clip": clip_label(ClipSpec(config.clip_arch, config.clip_weights, config.seed)), "size": size}
    render_spec = json.loads((renders.renders / "manifest.json").read_text())
    native = catalog.native_shape(setting.dataset)
    jobs = {
        "train": (f"{setting.dataset}-train", {"images": setting.dataset, "split": "train", "root": root,
                                               "n": len(train_split), **common},
                  len(train_split), lambda: feats.split_batches(train_split, size, loader_workers(config))),
        "test": (f"{setting.dataset}-test", {"images": setting.dataset, "split": "test", "root": root,
                                             "n": len(test.dataset), **common},
                 len(test.dataset), lambda: feats.test_batches(test)),
        "renders": (f"{setting.caption_task}-renders", {"renders": render_spec["spec_hash"], "native": list(native),
                                                        **common},
                    render_spec["samples"], lambda: feats.render_batches(renders.renders, native, size)),
    }
    out = {}
    for what, (name, key, total, batches) in jobs.items():
        def compute(what=what, total=total, batches=batches):
            progress.phase(f"CLIP features: {what} ({total:,} images)", total)
            try:
                return feats.encode(clip, batches(), device, progress.advance)
            finally:
                progress.end_phase()
        out[what] = feats.cached(feats.cache_path(config.runs, name, key), compute)
    return out


def evaluate_step(model: CltsModel, test: feats.Features, setting: catalog.CilSetting, k: int, routing: str,
                  device: torch.device) -> StepResult:
    """After step k: the class-IL step-matrix row and ``seen`` (accuracy on every seen class, no task id), plus
    ``router`` (test images sent to their own step, %) and ``oracle`` (each image through its own step's head, %)."""
    step = _step_of(setting)[test.y]
    keep = (step >= 0) & (step <= k)
    x, y, tasks = test.x[keep].to(device), test.y[keep], step[keep]
    classes = setting.steps[: k + 1]
    predicted, routed = predict(model, x, classes, routing)
    oracle = predict_oracle(model, x, tasks.to(device), classes)
    result = step_result(step_counts(predicted.cpu(), y, setting, k), setting, k)
    n = max(1, len(y))
    result.extra["router"] = 100.0 * float((routed.cpu() == tasks).sum()) / n
    result.extra["oracle"] = 100.0 * float((oracle.cpu() == y).sum()) / n
    return result


class _Plan:
    """What step k trains on and for how many steps (known before training: the tracker's step axis)."""

    def __init__(self, config: TrainConfig, data: dict[str, feats.Features], setting: catalog.CilSetting, k: int):
        step = _step_of(setting)
        self.real = torch.nonzero(step[data["train"].y] == k).flatten()  # task k's training images
        self.groups = [torch.nonzero(step[data["renders"].y] == j).flatten() for j in range(k + 1)]
        n = len(self.real)
        self.head_samples = config.iterations * config.batch_size if config.iterations else math.ceil(config.epochs * n)
        self.head_steps = math.ceil(self.head_samples / config.batch_size)
        most = max(len(g) for g in self.groups)
        self.router_steps = 0 if k == 0 else math.ceil(math.ceil(config.router_epochs * (k + 1) * most) / config.batch_size)

    @property
    def steps(self) -> int:
        return self.head_steps + self.router_steps


def run_clts(config: TrainConfig, progress, device: torch.device, tracker) -> Path:
    """Run (or resume) CLTS over ``config.order`` on one process; returns the run directory. ``progress`` and
    ``tracker`` are the fine-tuning loop's hooks (``train.Progress``, with ``phase`` / ``advance`` / ``end_phase`` for
    the feature passes; ``train.Tracker``)."""
    protocol = CltsProtocol(config)
    setting = protocol.setting
    # Everything that can fail on bad input, before the run directory exists.
    renders = find_renders(config.shards, find_caption_set(config.captions, setting.caption_task), config.shard_family,
                           config.replay_generator)
    check_rendered(renders, config.real_renders, "--method clts")
    _check_captions(renders, setting)
    train_split = dataset_split(setting, "train", config.data_root)
    clip = load_clip(ClipSpec(config.clip_arch, config.clip_weights, config.seed), device).eval().requires_grad_(False)
    size = image_size(clip)
    (test,) = protocol.test_sets(size)
    run_dir, state = prepare_run_dir(config)
    with run_log(run_dir):
        write_captions_record(run_dir, {setting.caption_task: renders})
        write_replay_record(run_dir, {setting.caption_task: renders.renders})
        data = _features(config, clip, size, train_split, test, renders, setting, device, progress)
        del clip
        empty = [setting.step_names[j] for j in range(len(setting.steps)) if not (_step_of(setting)[data["renders"].y] == j).any()]
        if empty:
            raise ValueError(f"the render set {renders.renders} has no images of step {empty[0]}'s classes")
        plans = [_Plan(config, data, setting, k) for k in range(len(setting.steps))]
        offsets = np.cumsum([0] + [p.steps for p in plans]).tolist()
        dim = data["train"].x.shape[1]
        if state["checkpoint"]:
            from safetensors.torch import load_file

            model = CltsModel.from_state(load_file(run_dir / state["checkpoint"]), dim, config.router_hidden)
            log.info("resuming %s after step %d of %d", run_dir, state["finished"], len(plans))
        else:
            model = CltsModel(dim, config.router_hidden)
        model.to(device)
        tracker.open(run_dir, config, protocol, state, offsets)
        try:
            for k, name in enumerate(protocol.steps):
                if k < state["finished"]:
                    continue
                _train_step(config, model, data, setting, plans[k], k, name, device, run_dir, progress, tracker,
                            offsets[k])
                result = evaluate_step(model, data["test"], setting, k, config.routing, device)
                progress.evaluated(k, name, result.row, result.extra)
                log.info("after %s: seen %.1f  router %.1f  oracle %.1f", name, result.extra["seen"],
                         result.extra["router"], result.extra["oracle"], extra=FILE_ONLY)
                finish_task(run_dir, state, model, k, result, protocol)
                tracker.evaluated(k, protocol, state)
        finally:
            tracker.close()
    return run_dir


def _train_step(config: TrainConfig, model: CltsModel, data: dict[str, feats.Features], setting: catalog.CilSetting,
                plan: _Plan, k: int, name: str, device: torch.device, run_dir: Path, progress, tracker,
                first_step: int) -> None:
    """Head k on step k's real images, then a new router on the renders of steps 0..k; losses to metrics.jsonl."""
    torch.manual_seed(config.seed * 1000 + k)  # the new head's and router's initial weights
    generator = torch.Generator().manual_seed(config.seed * 1000 + k)
    head = model.add_head(len(setting.steps[k])).to(device)
    router = model.new_router(k + 1).to(device) if k else None
    progress.start_task(k, name, plan.steps)
    metrics = open(run_dir / "metrics.jsonl", "a")
    try:
        def logger(term: str, offset: int, lr: float):
            def on_step(step: int, steps: int, loss: torch.Tensor) -> None:
                logged = step % LOG_EVERY == LOG_EVERY - 1 or step == steps - 1
                value = float(loss) if logged else None
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"the {term} loss is not finite at step {step} of {name}")
                progress.step({term: value} if logged else None)
                if logged:
                    record = {"task": name, "index": k, "step": offset + step, "lr": lr, term: value}
                    metrics.write(json.dumps(record) + "\n")
                    tracker.metrics(record, first_step + offset + step)
            return on_step

        train = data["train"]
        x = train.x.to(device)
        local = torch.full((len(setting.classnames),), -1, dtype=torch.long)  # original label -> the head's class
        local[list(setting.steps[k])] = torch.arange(len(setting.steps[k]))
        y = local[train.y].to(device)
        order = plan.real[cycled(len(plan.real), plan.head_samples, generator)]
        fit(head, x, y, order, batch=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
            label_smoothing=config.label_smoothing, on_step=logger("head", 0, config.lr))
        if router is not None:
            r = data["renders"]
            steps = _step_of(setting).to(device)[r.y.to(device)]
            fit(router, r.x.to(device), steps, balanced(plan.groups, config.router_epochs, generator),
                batch=config.batch_size, lr=config.router_lr, on_step=logger("router", plan.head_steps, config.router_lr))
        model.requires_grad_(False)  # heads of earlier steps, and the router until the next step, never change
    finally:
        metrics.close()
        progress.end_task()
