"""`gift demo`: the whole pipeline on CPU with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cli.common import clean_errors, out, setup_logging
from cli.progress import RichProgress, TrainProgress
from cli.shards_cmd import shards_ls


def demo(
    out_dir: Path = typer.Option(Path("demo-out"), "--out", help="Where the demo's shard sets, runs and previews go."),
    iterations: int = typer.Option(200, help="Training steps per mini task."),
) -> None:
    """The whole pipeline on CPU with tiny models: render, verify, train finetune and GIFT on `mini` (MTIL) and
    `mini-cil` (class-incremental), then CLTS on `mini-cil` (tiny-BLIP captions, images rendered from them) and GIFT
    replaying those renders; report."""
    setup_logging()
    import torch

    from pipeline.datasets import mini
    from pipeline.evaluation.metrics import summarize, summarize_cil
    from pipeline.generation.generate import generate, resolve_spec
    from pipeline.training.config import TrainConfig
    from pipeline.training.train import train as run_train
    from shards.preview import contact_sheet
    from shards.verify import verify_set

    cpu = torch.device("cpu")
    with clean_errors():
        # Stage 1: the tiny SD pipeline renders a real task; the mini pool sets come from held-out real images.
        reference = mini.export_reference(out_dir / "mini-reference")
        jobs = [("eurosat", "tiny", None)] + [(t, f"reference:{reference}", 32) for t in
                                              ("mini-base", "mini-a", "mini-b", "mini-cil-base", "mini-digits")]
        for task, model, size in jobs:
            spec = resolve_spec(task, model=model, per_class=4 if model == "tiny" else 16, steps=20, size=size,
                                device=cpu)
            progress = RichProgress(f"generate {task}", enabled=True)
            try:
                result = generate(spec, out_dir / "shards", device=cpu, progress=progress)
            finally:
                progress.stop()
            report = verify_set(result.set_path)
            if not report.ok:
                raise ValueError("; ".join(report.problems))
        sheet = out_dir / "preview-eurosat.png"
        contact_sheet(next((out_dir / "shards" / "eurosat").iterdir()), sheet, n=8, columns=4)
        shards_ls(out_dir / "shards")
        # Stage 2: a tiny CLIP "pre-trained" on mini-base, then continual fine-tuning over mini-a, -b, -c.
        weights = mini.pretrain_tiny_clip(out_dir / "tiny-clip-pretrained.safetensors")
        summaries = {}
        for method in ("finetune", "gift"):
            config = TrainConfig(order="mini", method=method, runs=str(out_dir / "runs"), shards=str(out_dir / "shards"),
                                 clip_arch="tiny", clip_weights=str(weights), iterations=iterations, batch_size=32,
                                 synthetic_batch=32, synthetic_budget=96, warmup=10, workers=0)
            run_dir = run_train(config, TrainProgress(), cpu)
            import numpy as np

            summaries[method] = (summarize(np.load(run_dir / "acc_matrix.npy"), ["mini-a", "mini-b", "mini-c"]), run_dir)
        # Class-incremental: the ten digits in 5 steps of 2, one head over every seen class after each step.
        cil = {}
        for method in ("finetune", "gift"):
            config = TrainConfig(order="mini-cil", method=method, runs=str(out_dir / "runs"),
                                 shards=str(out_dir / "shards"), clip_arch="tiny", clip_weights=str(weights),
                                 batch_size=32, synthetic_batch=32, synthetic_budget=96, workers=0)
            run_dir = run_train(config, TrainProgress(), cpu)
            state = json.loads((run_dir / "state.json").read_text())
            cil[method] = (summarize_cil(state["seen"]), run_dir)
        # CLTS: caption the digits (tiny BLIP, 10 k-means medoids per class), render 4 images per caption (real
        # held-out digits of the caption's class), then task heads + a router; GIFT replaying the same renders.
        from pipeline.captioning.caption import caption_task
        from pipeline.models import ClipSpec
        from shards.captions import load_caption_set

        captions = load_caption_set(caption_task("mini-digits", out_dir / "captions", captioner="tiny",
                                                 clip=ClipSpec("tiny", str(weights)), device=cpu).set_path)
        spec = resolve_spec("mini-digits", model=f"reference:{reference}", captions=captions, per_caption=4, size=32,
                            device=cpu)
        generate(spec, out_dir / "shards", device=cpu, captions=captions)
        # (the run names of `gift table`'s presets clts and gift-captions, so `make table ORDER=mini-cil METHODS=seq`
        # reuses these runs)
        for name, method, extra in (("clts", "clts", {}), ("gift-captions", "gift", {"replay_captions": True})):
            config = TrainConfig(order="mini-cil", method=method, name=None if name == method else f"{name}-ordermini-cil",
                                 runs=str(out_dir / "runs"), shards=str(out_dir / "shards"),
                                 captions=str(out_dir / "captions"), clip_arch="tiny", clip_weights=str(weights),
                                 batch_size=32, synthetic_batch=32, synthetic_budget=96, workers=0, **extra)
            run_dir = run_train(config, TrainProgress(), cpu)
            state = json.loads((run_dir / "state.json").read_text())
            cil[name] = (summarize_cil(state["seen"]), run_dir)
    table = Table("method", "Transfer", "Avg.", "Last", "run", title="MTIL: order mini (3 tasks)")
    for method, (s, run_dir) in summaries.items():
        table.add_row(method, f"{s.transfer:.1f}", f"{s.avg:.1f}", f"{s.last:.1f}", f"{run_dir}/results.md")
    out.print(table)
    from pipeline.methods import get_method
    from pipeline.tables.table import kept_text

    table = Table("method", "Avg.", "Last", "memory kept", "run", title="CIL: mini-cil (10 digits, 5 steps of 2)")
    for method, (s, run_dir) in cil.items():
        cfg, state = (json.loads((run_dir / f).read_text()) for f in ("config.json", "state.json"))
        table.add_row(method, f"{s.avg:.1f}", f"{s.last:.1f}", kept_text(get_method(cfg["method"]).kept(run_dir, cfg, state)),
                      f"{run_dir}/results.md")
    out.print(table)
    out.print(f"contact sheet of the tiny SD renders: {sheet}")
