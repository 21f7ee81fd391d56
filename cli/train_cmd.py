"""`gift train`: continual fine-tuning over an order, evaluation after every task, report (stage 2)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cli.common import clean_errors, out, parse_device, relaunch_with_torchrun, setup_logging
from cli.progress import TrainProgress


def _class_order(path: Path | None) -> str | None:
    """``--class-order FILE`` -> its labels as text ("87,0,52,..."), so the run records the order itself."""
    if path is None:
        return None
    from pipeline.datasets.catalog import CilSettingError, parse_class_order

    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist (a file listing the original labels in class order, e.g. "
                                 "the harness's class_order: [87, 0, 52, ...])")
    try:
        labels = parse_class_order(path.read_text(encoding="utf-8", errors="replace"))
    except CilSettingError as e:
        raise typer.BadParameter(f"{path}, {e}") from None
    if not labels:
        raise typer.BadParameter(f"{path} holds no labels (expected e.g. class_order: [87, 0, 52, ...])")
    return ",".join(map(str, labels))


def train(
    order: str = typer.Option("II", help="Task order: I, II (MTIL), mini (scikit-learn images, for demos/tests), or a "
                              "CIL setting: cifar100-10/20/50, tinyimagenet-5/10/20, seq-cifar10/100, seq-tinyimg, "
                              "mini-cil (see `gift settings`)."),
    method: str = typer.Option("gift", help="gift | finetune | l2 | wise-ft | lwf | lwf-vr | zscl | icarl | ewc | zeroshot | clts (CIL: task heads + a task router trained on caption renders) | moe-adapter (MoE adapters + DDAS; docs/moe-adapter.md)."),
    name: str = typer.Option(None, help="Run directory name under --runs (default: <method>-order<order>)."),
    runs: Path = typer.Option(Path("runs"), help="Where run directories go."),
    data_root: Path = typer.Option(None, help="Folder holding the MTIL datasets (see `gift data check`)."),
    shards: str = typer.Option("shards-out", help="Root of the rendered shard sets (stage 1's --out), or a store URL (https://, ssh://, ...) to fetch the pool from."),
    shard_cache: Path = typer.Option(None, help="Where sets from a store URL are cached and verified (default: ~/.cache/gift/shards)."),
    shard_family: str = typer.Option(None, help="Which generator spec's sets to use when several are present."),
    clip: str = typer.Option("ViT-B-16", help="open_clip architecture, or `tiny`."),
    clip_weights: str = typer.Option("openai", help="`openai` (from the HF cache), a checkpoint file, or `none`."),
    iterations: int = typer.Option(None, help="Steps per task (default: 1000 MTIL; CIL: --epochs over each step's images)."),
    epochs: float = typer.Option(None, help="Passes over each task's training images, ceil(epochs·N/batch) steps (default: CIL 1; mini-cil 10); excludes --iterations."),
    batch_size: int = typer.Option(None, help="Real images per step (default: 64; moe-adapter on cifar100-10/20: 128)."),
    synthetic_batch: int = typer.Option(64, help="Synthetic image-text pairs per step."),
    synthetic_budget: int = typer.Option(1000, help="Synthetic images drawn per task from the pool."),
    lr: float = typer.Option(None, help="Base learning rate (default: 5e-5 aircraft/mnist, 1e-5 other MTIL tasks, 1e-3 mini; CIL 7.1e-6, mini-cil 1e-3)."),
    warmup: int = typer.Option(None, help="Linear warm-up steps before the cosine schedule (default: 100 MTIL, 30 CIL)."),
    weight_decay: float = typer.Option(None, help="AdamW weight decay (default: 0; TinyImageNet CIL 0.1)."),
    label_smoothing: float = typer.Option(None, help="Label smoothing of CE on the real batch (default: 0.2; TinyImageNet CIL 0)."),
    class_order: Path = typer.Option(None, callback=_class_order, help="CIL: a file listing the dataset's original labels in the order they are learnt (JSON list, the harness's YAML class_order: [...], or one a line); default: the setting's."),
    seed: int = typer.Option(0, help="Seed of every task's RNGs and of the synthetic draw."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (autocast)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the student's training forward (numerics only; a minute or more of compilation first)."),
    workers: int = typer.Option(None, help="Data-loader workers per process for the real data and the one-time test-set decode (default: one per spare core, at most 8; results do not depend on it, and it may change when a run resumes)."),
    cd: bool = typer.Option(True, "--cd/--no-cd", help="GIFT: contrastive distillation."),
    ita: bool = typer.Option(True, "--ita/--no-ita", help="GIFT: image-text alignment."),
    awc: bool = typer.Option(True, "--awc/--no-awc", help="GIFT: adaptive weight consolidation."),
    beta: float = typer.Option(0.25, help="GIFT: ITA scale (on each direction)."),
    lam: float = typer.Option(1.0, help="GIFT: AWC weight λ."),
    teacher: str = typer.Option("last", help="GIFT: last | initial | wise:x."),
    distill: str = typer.Option("contrastive", help="GIFT: contrastive | feature | image-only | text-only."),
    ita_target: str = typer.Option("code", help="GIFT: code (smoothing 0.2, shared duplicate positives) | paper (identity)."),
    fisher_norm: bool = typer.Option(True, "--fisher-norm/--no-fisher-norm", help="GIFT: per-tensor normalised Fisher."),
    replay_generator: str = typer.Option(None, help="GIFT: replay the pool sets of this generator only (sd15 | tiny | reference = real images)."),
    wise_alpha: float = typer.Option(0.8, help="wise-ft: θ ← α·θ + (1−α)·θ(t−1) after each task."),
    random_texts: int = typer.Option(1000, help="lwf-vr: number of random 10-token sentences."),
    reference_images: Path = typer.Option(None, help="zscl: ImageFolder of real reference images (ImageNet train in the paper)."),
    reference_texts: Path = typer.Option(None, help="zscl: captions file, one per line."),
    ensemble_every: int = typer.Option(None, help="zscl: weight-ensemble snapshot every N steps (default: 100 MTIL, 10 CIL)."),
    memory_size: int = typer.Option(None, help="icarl: exemplars kept over all seen classes, herding (default: 10,000 MTIL, 5,000 CIL)."),
    ewc_samples: int = typer.Option(256, help="ewc: synthetic samples for the static Fisher before each task."),
    captions: Path = typer.Option(Path("captions-out"), help="clts and --replay-captions: root of caption sets (gift caption --out), or one caption set; the images rendered from each are found under --shards."),
    replay_captions: bool = typer.Option(False, "--replay-captions", help="gift: replay images rendered from the earlier tasks' caption sets (texts = their captions) instead of class-name prompts; the base set stays class prompts."),
    real_renders: bool = typer.Option(False, "--real-renders", help="clts and --replay-captions: accept images of the `reference` generator (real images) in place of renders of the captions: an ablation, recorded in config.json and named in the report and gift table (refused without it)."),
    routing: str = typer.Option("hard", help="clts: hard (the router's task, then its head) | soft (argmax over classes of p(t|x)·p(c|x,t))."),
    router_epochs: float = typer.Option(20.0, help="clts: passes of the router over the task-balanced renders, after every task."),
    router_lr: float = typer.Option(1e-3, help="clts: the router's AdamW learning rate (the heads use --lr, default 1e-3 for clts)."),
    router_hidden: int = typer.Option(512, help="clts: hidden width of the 2-layer MLP router."),
    moe_experts: int = typer.Option(None, help="moe-adapter: experts per block and tower (default: 22 MTIL, 2 CIL)."),
    moe_top_k: int = typer.Option(2, help="moe-adapter: experts per sample (noisy top-k gating)."),
    moe_freeze: bool = typer.Option(None, "--moe-freeze/--no-moe-freeze", help="moe-adapter: freeze each task's two most used experts per block and tower (default: on MTIL, off CIL)."),
    moe_parity_step: bool = typer.Option(True, "--moe-parity-step/--no-moe-parity-step", help="moe-adapter: one more step at lr 0 after the schedule, as the released loop runs (it still counts expert use)."),
    router_noise_at_eval: bool = typer.Option(None, "--router-noise-at-eval/--no-router-noise-at-eval", help="moe-adapter: keep the gating noise at evaluation (default: on CIL, as its code does; off MTIL)."),
    ddas: bool = typer.Option(None, "--ddas/--no-ddas", help="moe-adapter MTIL: autoencoders pick each test batch's router or zero-shot CLIP (default on; --no-ddas, a diagnostic: the last router for every batch)."),
    ddas_threshold: float = typer.Option(0.0655, help="moe-adapter: least autoencoder error above which a test batch goes to zero-shot CLIP."),
    ddas_steps: int = typer.Option(301, help="moe-adapter: autoencoder steps per task."),
    ddas_zero_shot_steps: int = typer.Option(1001, help="moe-adapter: steps of autoencoder 0 (TinyImageNet train; mini: mini-base)."),
    ddas_batch: int = typer.Option(64, help="moe-adapter: images per autoencoder step."),
    ddas_eval_batch: int = typer.Option(128, help="moe-adapter: test images per DDAS decision (the released evaluation batch)."),
    alexnet_weights: str = typer.Option(None, help="moe-adapter: DDAS's AlexNet: imagenet (torchvision's file in torch's cache, never downloaded), a file, or none (random; the default on mini)."),
    device: str = typer.Option(None, help="cuda | cpu (default: cuda when present)."),
    gpus: int = typer.Option(1, min=1, help="Processes to launch with torchrun (one per GPU; DistributedDataParallel)."),
    report_to: str = typer.Option("", "--report-to", help="Experiment trackers, comma-separated: tensorboard, wandb (off by default; pip install -e '.\\[tracking]'). Rank 0 logs losses, lr, steps/s, accuracy rows, the summary and the figures under the run directory; a resumed run continues the same log / W&B run."),
) -> None:
    """Continual fine-tuning over an order, evaluating every dataset after each task; resumable."""
    if gpus > 1 and "RANK" not in os.environ:
        relaunch_with_torchrun(gpus)
    setup_logging()
    from pipeline.tracking import parse_report_to
    from pipeline.training.config import TrainConfig

    kept = "finished tasks are kept (checkpoint, report); re-run the same command to resume after the last one."
    with clean_errors(kept):  # every value is checked here, before torch is even imported
        reporters = parse_report_to(report_to)  # an unknown or missing tracker fails before anything runs
        config = TrainConfig(
            order=order, method=method, name=name, runs=str(runs), data_root=str(data_root) if data_root else None,
            shards=str(shards), shard_cache=str(shard_cache) if shard_cache else None, shard_family=shard_family,
            clip_arch=clip, clip_weights=clip_weights, iterations=iterations, epochs=epochs, batch_size=batch_size,
            synthetic_batch=synthetic_batch, synthetic_budget=synthetic_budget, lr=lr, warmup=warmup,
            weight_decay=weight_decay, label_smoothing=label_smoothing, class_order=class_order, seed=seed,
            precision=precision, compile=compile_model, workers=workers,
            cd=cd, ita=ita, awc=awc, beta=beta, lam=lam, teacher=teacher, distill=distill, ita_target=ita_target,
            fisher_norm=fisher_norm, replay_generator=replay_generator, wise_alpha=wise_alpha, random_texts=random_texts,
            reference_images=str(reference_images) if reference_images else None,
            reference_texts=str(reference_texts) if reference_texts else None, ensemble_every=ensemble_every,
            memory_size=memory_size, ewc_samples=ewc_samples, captions=str(captions), replay_captions=replay_captions,
            real_renders=real_renders, routing=routing, router_epochs=router_epochs, router_lr=router_lr,
            router_hidden=router_hidden,
            moe_experts=moe_experts, moe_top_k=moe_top_k, moe_freeze=moe_freeze, moe_parity_step=moe_parity_step,
            router_noise_at_eval=router_noise_at_eval, ddas=ddas, ddas_threshold=ddas_threshold, ddas_steps=ddas_steps,
            ddas_zero_shot_steps=ddas_zero_shot_steps, ddas_batch=ddas_batch, ddas_eval_batch=ddas_eval_batch,
            alexnet_weights=alexnet_weights,
        )

    from pipeline.datasets.mtil import DatasetMissingError
    from pipeline.datasets.required import MissingDatasetsError
    from pipeline.models import ClipNotFoundError
    from pipeline.training.step import NonFiniteLossError
    from pipeline.training.tracking import TrainTracking
    from pipeline.training.train import train as run_train

    with clean_errors(kept):
        try:
            run_dir = run_train(config, TrainProgress(), parse_device(device),
                                tracker=TrainTracking(reporters) if reporters else None)
        except (ClipNotFoundError, DatasetMissingError, MissingDatasetsError, NonFiniteLossError) as e:
            raise ValueError(str(e)) from e
    if os.environ.get("RANK", "0") == "0":
        out.print(f"[green]done[/]: {run_dir}/results.md")
        out.print((run_dir / "results.md").read_text())
