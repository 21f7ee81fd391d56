"""`gift generate TASK`: render a task's prompts, or a caption set's captions, into a shard set (stage 1);
`gift generate --order O`: every set of O's replay pool, with an overview of what is done and what is left."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer

from cli.common import clean_errors, out, parse_device, relaunch_with_torchrun, setup_logging
from cli.progress import RichProgress


class Scheduler(str, Enum):
    pndm = "pndm"
    ddim = "ddim"
    dpm_solver = "dpm-solver"


class OnOff(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


def generate(
    task: str = typer.Argument(None, help="An MTIL dataset, `imagenet`, or a CIL replay set: cil-base, cil-cifar100, cil-tinyimagenet, cil-cifar10 (see `gift tasks`); or --order instead."),
    order: str = typer.Option(None, "--order", help="Render every set the replay pool of this order needs (I, II, mini, or a CIL setting such as cifar100-10, mini-cil: the base set and the order's tasks but the last; CIL: the base names and the dataset's set), skipping finished sets; instead of TASK."),
    model: str = typer.Option("sd15", help="`sd15` (stable-diffusion-v1-5), `tiny` (random, CPU), `reference:DIR` (real images DIR/<class>/*.jpg), a Hub id, or a local diffusers directory."),
    out_dir: Path = typer.Option(Path("shards-out"), "--out", help="Root of shard sets; the set goes to OUT/<task>/<spec-hash>/."),
    per_class: int = typer.Option(None, help="Images per class (default: enough for one MTIL order, or the CIL settings of at most 10 steps, to draw each image about once; see `gift tasks`)."),
    steps: int = typer.Option(50, help="Denoising steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    scheduler: Scheduler = typer.Option(Scheduler.pndm, help="Sampler (pndm is SD v1.5's own, as in the released code)."),
    size: int = typer.Option(None, help="Image side in pixels (default: 512; 64 for tiny; original size for reference)."),
    negative_prompt: str = typer.Option("", help="Negative prompt (empty: none)."),
    safety_checker: OnOff = typer.Option(OnOff.auto, help="SD safety checker; flagged images are recorded and left out (auto: on for sd15, off for tiny)."),
    dtype: str = typer.Option("auto", help="fp16 | bf16 | fp32 (auto: fp16 on GPU, fp32 on CPU)."),
    batch_size: int = typer.Option(16, help="Images per pipeline call (numerics only: recorded per shard, not in the hash)."),
    seed: int = typer.Option(0, help="Base seed; every image's seed derives from it and the image's key."),
    image_format: str = typer.Option("jpg", "--format", help="jpg | png."),
    jpeg_quality: int = typer.Option(95, help="JPEG quality."),
    shard_size: int = typer.Option(64, help="Samples per shard (the unit of resume and of multi-GPU splitting)."),
    revision: str = typer.Option(None, help="Model revision (Hub models)."),
    download: bool = typer.Option(False, "--download", help="Allow fetching weights from the Hub (default: local files only)."),
    device: str = typer.Option(None, help="cuda | cpu (default: cuda:LOCAL_RANK when a GPU is present, else cpu)."),
    gpus: int = typer.Option(1, min=1, help="Processes to launch with torchrun (one per GPU); rank r renders shards r, r+N, ..."),
    fuse_qkv: bool = typer.Option(False, "--fuse-qkv", help="Speed-up: fused query/key/value projections (numerics only: recorded per shard)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Speed-up: NHWC layout for UNet and VAE (numerics only: recorded per shard)."),
    compile_unet: bool = typer.Option(False, "--compile", help="Speed-up: torch.compile the UNet; minutes of compilation first (numerics only: recorded per shard)."),
    report_to: str = typer.Option("", "--report-to", help="Experiment trackers, comma-separated: tensorboard, wandb (off by default; pip install -e '.\\[tracking]'). Rank 0 logs images/s per shard, then the set's contact sheet, under OUT/.tracking/<task>/<hash>/."),
    captions: Path = typer.Option(None, "--captions", help="Render a caption set (`gift caption TASK`'s OUT/<task>/<hash>) instead of the class prompts; its hash goes into the spec."),
    per_caption: int = typer.Option(None, help="With --captions: images per caption, each with its own seed (default 10)."),
    prompt_template: str = typer.Option(None, help="With --captions: the prompt, from {caption} and {class} (default '{caption}'; e.g. '{caption}, a photo of a {class}')."),
) -> None:
    """Render TASK's class prompts (or a caption set's captions), or with --order every set of an order's replay pool,
    into resumable, verifiable shard sets."""
    if (task is None) == (order is None):
        raise typer.BadParameter("give a TASK or --order ORDER (one of them)", param_hint="TASK / --order")
    if order is not None and captions is not None:
        raise typer.BadParameter("--captions renders one caption set: give its TASK, not --order", param_hint="--order")
    if gpus > 1 and "RANK" not in os.environ:
        relaunch_with_torchrun(gpus)
    setup_logging()
    from pipeline.datasets import catalog

    with clean_errors():  # an unknown name fails at once, before torch and diffusers load
        if task is not None:
            catalog.get_task(task)
        elif catalog.is_cil(order):
            catalog.get_setting(order)
        else:
            catalog.get_order(order)

    from pipeline.generation.generate import default_device, generate, resolve_spec
    from pipeline.generation.generators import Speedups
    from pipeline.tracking import parse_report_to
    from shards.captions import load_caption_set

    with clean_errors():
        reporters = parse_report_to(report_to)  # an unknown or missing tracker fails before anything runs
        if captions is None and (per_caption is not None or prompt_template is not None):
            raise ValueError("--per-caption and --prompt-template apply only with --captions SET")
        caption_set = load_caption_set(captions) if captions is not None else None
        caption_args = {} if caption_set is None else dict(
            captions=caption_set, per_caption=10 if per_caption is None else per_caption,
            prompt_template=prompt_template or "{caption}")
        dev = parse_device(device) or default_device()
        if dev.type == "cuda" and dev.index is None:
            dev = default_device()
        options = dict(
            model=model, per_class=per_class, steps=steps, guidance=guidance, scheduler=scheduler.value,
            size=size, negative_prompt=negative_prompt,
            safety_checker=None if safety_checker is OnOff.auto else safety_checker is OnOff.on,
            dtype=dtype, seed=seed, image_format=image_format, jpeg_quality=jpeg_quality, shard_size=shard_size,
            revision=revision, device=dev,
        )
        main = os.environ.get("RANK", "0") == "0"
        if order is not None:
            _generate_order(order, out_dir, options, batch_size=batch_size, device=dev, allow_download=download,
                            speedups=Speedups(fuse_qkv, channels_last, compile_unet), main=main,
                            reporters=reporters)
            return
        spec = resolve_spec(task, **options, **caption_args)
        progress = RichProgress(f"{task} ({spec.generator})", enabled=main)
        if reporters and main:  # rank 0 only: one log per set
            from pipeline.generation.tracking import GenerateTracking

            progress = GenerateTracking(progress, reporters, out_dir, spec)
        try:
            result = generate(spec, out_dir, batch_size=batch_size, device=dev, progress=progress, allow_download=download,
                              speedups=Speedups(fuse_qkv, channels_last, compile_unet), captions=caption_set)
            if reporters and main:
                progress.finished(result)
        finally:
            progress.stop()
    if result.manifest is not None:
        m = result.manifest
        state = "[green]complete[/]" if m["complete"] else "[yellow]incomplete[/]"
        out.print(f"{result.set_path}: {m['samples']} images in {m['num_shards']} shards, {m['bytes'] / 1e6:.1f} MB, "
                  f"{m['flagged']} flagged, {state} (rendered {len(result.rendered_shards)}, kept {len(result.skipped_shards)})")


def _generate_order(order: str, out_dir: Path, options: dict, *, batch_size: int, device, allow_download: bool,
                    speedups, main: bool, reporters: list[str]) -> None:
    """``--order``: the overview of the pool's sets, then every set not done, then the overview again."""
    from pipeline.generation.order import pool_sets, render_pool
    from pipeline.generation.tracking import GenerateTracking

    def progress_for(pool_set):
        bar = RichProgress(f"{pool_set.task} ({pool_set.spec.generator})", enabled=main)
        return GenerateTracking(bar, reporters, out_dir, pool_set.spec) if reporters and main else bar

    def on_done(pool_set, result, progress):
        if isinstance(progress, GenerateTracking):  # the set's contact sheet and totals, as for one TASK
            progress.finished(result)

    sets = pool_sets(order, out_dir, **options)
    if main:
        _overview(order, sets)
    render_pool(sets, out_dir, batch_size=batch_size, device=device, allow_download=allow_download, speedups=speedups,
                progress_for=progress_for, on_done=on_done)
    if main and any(not s.complete for s in sets):
        _overview(order, pool_sets(order, out_dir, **options))


def _overview(order: str, sets) -> None:
    from rich.table import Table

    table = Table("set", "status", "images stored / planned", "path", title=f"replay pool of order {order}")
    style = {"done": "green", "partial": "yellow", "to do": "bold"}
    for s in sets:
        table.add_row(s.task, f"[{style[s.status]}]{s.status}[/]", f"{s.stored:,} / {s.planned:,}", str(s.path))
    out.print(table)
    todo = [s for s in sets if not s.complete]
    done = len(sets) - len(todo)
    out.print(f"{done} of {len(sets)} sets done; to render: {sum(s.planned - s.stored for s in todo):,} images"
              + (f" in {len(todo)} set{'s' if len(todo) > 1 else ''}" if todo else ""), soft_wrap=True)
